"""Encoding of wasm values in snapshots: small JSON arrays ``[tag, payload]``.

The tags follow the engine's value representation (docs/vm.md), which is lossless:

* ``["i", n]`` — an integer value (i32, i64: the unsigned bit pattern; v128: a 128-bit int);
* ``["f", bits]`` — a float (f32 or f64) as the 64-bit pattern of the double that holds it, so
  NaN payloads survive exactly;
* ``["n", null]`` — a null reference;
* ``["r", index]`` — a function reference, by index in the instance's function index space;
* ``["x", value]`` — a non-null externref; its value must itself be JSON-serialisable.

Wasm types are not stored per value: they follow from the module (validation yields the type of
every local and operand-stack slot at every stop point).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..errors import WasmError

_D = struct.Struct("<d")
_Q = struct.Struct("<Q")


class SnapshotError(WasmError):
    """A snapshot cannot be taken or does not fit the module it is restored with."""


def encode_value(value: Any, func_index: dict[int, int]) -> list[Any]:
    """``func_index`` maps ``id(function)`` to its index in the instance."""
    t = type(value)
    if t is int or t is bool:
        return ["i", int(value)]
    if t is float:
        return ["f", _Q.unpack(_D.pack(value))[0]]
    if value is None:
        return ["n", None]
    idx = func_index.get(id(value))
    if idx is not None:
        return ["r", idx]
    from ..runtime.objects import Function

    if isinstance(value, Function):
        raise SnapshotError("a function reference to another instance cannot be snapshotted")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"externref value {value!r} is not JSON-serialisable") from exc
    return ["x", value]


def decode_value(enc: Any, funcs: list[Any]) -> Any:
    try:
        tag, payload = enc
        if tag == "i":
            if type(payload) is not int:
                raise TypeError
            return payload
        if tag == "f":
            return _D.unpack(_Q.pack(payload))[0]
        if tag == "n":
            return None
        if tag == "r":
            return funcs[payload]
        if tag == "x":
            return payload
    except (TypeError, ValueError, IndexError, struct.error) as exc:
        raise SnapshotError(f"malformed value {enc!r} in snapshot") from exc
    raise SnapshotError(f"unknown value tag in {enc!r}")
