"""Writes the golden snapshot files that every later dwasm must keep restoring.

    python tests/golden/make_golden.py          # writes the files of this format version
    python tests/golden/make_golden.py --force  # rewrites them (only while the format is young)

Each case is a program stopped somewhere interesting: mid-loop at a fuel stop, deep in a call
stack, at a host call whose results are pending or delivered, before it ran, after it finished.
The case's module is copied next to the snapshot so that rebuilding bench/ or examples/ cannot
break the files. ``expected.json`` records, per case, how to resume it (the host answers to
deliver) and the outcome of an uninterrupted run of the same program: results, memory hashes and
globals, all bit-exact. tests/test_snapshot.py restores each file with the current code, resumes
it to completion and compares.

Files are named ``v<format version>_<case>``: when the format changes, add new cases beside the old
ones; never rewrite or delete the old ones, since they are what an upgrade must still read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import vm  # noqa: E402
from vm import snapshot  # noqa: E402
from vm.structure import F32, F64, I32, I64, FuncType  # noqa: E402

TYPES = {"i32": I32, "i64": I64, "f32": F32, "f64": F64}

# A module exercising what C programs without imports do not: a host import that suspends,
# call_indirect through a table changed at run time, globals of every number type, a passive data
# segment that gets dropped, memory grown after instantiation and multi-value results.
HOST_WAT = """(module
  (type $t (func (param i32) (result i32)))
  (import "env" "ask" (func $ask (type $t)))
  (memory (export "memory") 1 4)
  (table $tab 4 funcref)
  (elem (i32.const 0) $ask $step)
  (data $msg "golden snapshot")
  (global $count (mut i32) (i32.const 0))
  (global $wide (mut i64) (i64.const 0x0123456789abcdef))
  (global $half (mut f32) (f32.const 0.5))
  (global $acc (mut f64) (f64.const 0))
  (func $step (type $t)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (global.set $acc (f64.add (global.get $acc) (f64.convert_i32_u (local.get 0))))
    (i32.store offset=65536 (i32.mul (global.get $count) (i32.const 4)) (local.get 0))
    (i32.add (i32.mul (local.get 0) (i32.const 3)) (i32.const 1)))
  (func $round (param $x i32) (result i32) (local $i i32)
    (loop $l
      (local.set $x (call_indirect (type $t) (local.get $x) (i32.const 3)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10))))
    (i32.xor (local.get $x) (call_indirect (type $t) (local.get $x) (i32.const 0))))
  (func (export "main") (param $n i32) (result i32 i64 f64) (local $r i32) (local $x i32)
    (memory.init $msg (i32.const 1024) (i32.const 0) (i32.const 15))
    (data.drop $msg)
    (drop (memory.grow (i32.const 1)))
    (table.set $tab (i32.const 3) (ref.func $step))
    (local.set $x (local.get $n))
    (loop $rounds
      (local.set $x (call $round (local.get $x)))
      (global.set $wide (i64.rotl (global.get $wide) (i64.extend_i32_u (local.get $x))))
      (global.set $half (f32.mul (global.get $half) (f32.const 1.5)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br_if $rounds (i32.lt_u (local.get $r) (i32.const 3))))
    (local.get $x) (global.get $wide) (global.get $acc)))
"""

HOST_IMPORTS = {"env": {"ask": {"params": ["i32"], "results": ["i32"]}}}
HOST_ANSWERS = [0x11111111, 0x2222, 0x333]


@dataclass
class Case:
    """One golden snapshot: run ``export(args)`` of ``module`` and stop it as ``stop`` says."""

    name: str
    module: str  # file name in tests/golden/
    source: str | None  # where the module comes from (a repo path), None for HOST_WAT
    export: str
    args: list[int]
    # "fuel:N" (stop after N units of fuel), "host:K" (the K-th host call pending),
    # "delivered:K" (its results delivered), "ready" (never run), "done".
    stop: str
    imports: dict[str, Any] | None = None
    answers: list[int] = field(default_factory=list)


CASES = [
    Case("sieve_fuel", "sieve.wasm", "bench/c/sieve.wasm", "sieve", [3000, 1], "fuel:2500"),
    Case("fib_deep", "fib.wasm", "examples/fib.wasm", "fib", [14], "fuel:40"),
    Case("nbody_fuel", "nbody.wasm", "bench/c/nbody.wasm", "nbody", [3], "fuel:30"),
    Case("host_ready", "host.wasm", None, "main", [7], "ready", HOST_IMPORTS, HOST_ANSWERS),
    Case("host_fuel", "host.wasm", None, "main", [7], "fuel:15", HOST_IMPORTS, HOST_ANSWERS),
    Case("host_pending", "host.wasm", None, "main", [7], "host:2", HOST_IMPORTS, HOST_ANSWERS),
    Case("host_delivered", "host.wasm", None, "main", [7], "delivered:2", HOST_IMPORTS,
         HOST_ANSWERS),
    Case("host_done", "host.wasm", None, "main", [7], "done", HOST_IMPORTS, HOST_ANSWERS),
]


def value_bits(values: list[Any]) -> list[list[Any]]:
    """Numbers as ``["i", n]`` / ``["f", bits of the double]``: exact, NaN payloads included."""
    out: list[list[Any]] = []
    for v in values:
        if isinstance(v, float):
            out.append(["f", struct.unpack("<Q", struct.pack("<d", v))[0]])
        elif isinstance(v, int):
            out.append(["i", v])
        else:
            raise TypeError(f"golden cases hold numbers only, not {v!r}")
    return out


def suspending_imports(spec: dict[str, Any] | None) -> dict | None:
    """Imports whose host functions suspend with ``{"args": [...]}`` (as the test's do)."""
    if not spec:
        return None

    def suspend(*args: Any) -> None:
        raise vm.Suspend({"args": list(args)})

    return {mod: {name: vm.HostFunction(FuncType(tuple(TYPES[t] for t in sig["params"]),
                                                 tuple(TYPES[t] for t in sig["results"])),
                                        suspend)
                  for name, sig in fields.items()}
            for mod, fields in spec.items()}


def reference(module: vm.Module, case: Case) -> dict[str, Any]:
    """The outcome of an uninterrupted run, the host answering from ``case.answers`` in order."""
    answers = iter(case.answers)
    imports = None
    if case.imports:
        imports = {"env": {"ask": vm.HostFunction(FuncType((I32,), (I32,)),
                                                  lambda x: next(answers))}}
    inst = vm.instantiate(vm.Store(), module, imports)
    results = inst.invoke(case.export, case.args)
    return {
        "results": value_bits(results),
        "memory_sha256": [hashlib.sha256(m.data).hexdigest() for m in inst.mems],
        "globals": value_bits([g.value for g in inst.globals]),
    }


def stop(module: vm.Module, case: Case) -> tuple[bytes, dict[str, Any]]:
    """Run ``case`` up to its stop; the snapshot file and how the test must resume it."""
    inst = vm.instantiate(vm.Store(), module, suspending_imports(case.imports))
    ex = inst.store.start(inst.exports[case.export], case.args)
    answers = list(case.answers)
    kind, _, count = case.stop.partition(":")
    host_calls = 0
    if kind == "fuel":
        assert ex.run(fuel=int(count)) == "suspended", case.name
    elif kind in ("host", "delivered", "done"):
        want = int(count) if count else len(answers) + 1
        while True:
            status = ex.run()
            if status == "done":
                break
            host_calls += 1
            if host_calls == want:
                break
            ex.complete_host(answers.pop(0))
        if kind == "delivered":
            ex.complete_host(answers.pop(0))
        assert ex.status == {"host": "host", "delivered": "ready", "done": "done"}[kind]
    manifest, chunks = snapshot.capture(inst, ex)
    blob = snapshot.dumps(manifest, chunks)
    return blob, {"status": ex.status, "host_answers": answers}


def resume(module: vm.Module, case: Case, blob: bytes, answers: list[int]) -> dict[str, Any]:
    """What the test does: restore, deliver answers, run to the end; the outcome."""
    manifest, chunks = snapshot.loads(blob)
    inst, ex = snapshot.restore(manifest, chunks, module, suspending_imports(case.imports),
                                vm.Store())
    assert ex is not None
    answers = list(answers)
    reasons = []
    while ex.status != "done":
        if ex.status == "host":
            assert ex.pending is not None
            reasons.append(ex.pending.reason)
            ex.complete_host(answers.pop(0))
        else:
            ex.run()
    assert not answers
    return {
        "host_reasons": reasons,
        "results": value_bits(ex.results or []),
        "memory_sha256": [hashlib.sha256(m.data).hexdigest() for m in inst.mems],
        "globals": value_bits([g.value for g in inst.globals]),
    }


def module_bytes(case: Case) -> bytes:
    if case.source is None:
        import wasmtime

        return wasmtime.wat2wasm(HOST_WAT)
    return (REPO / case.source).read_bytes()


def build(out: Path) -> list[dict[str, Any]]:
    """Write every case's module and snapshot into ``out``; the entries of expected.json."""
    entries = []
    for case in CASES:
        data = module_bytes(case)
        (out / case.module).write_bytes(data)
        module = vm.load(data)
        want = reference(module, case)
        blob, how = stop(module, case)
        got = resume(module, case, blob, how["host_answers"])
        for key in ("results", "memory_sha256", "globals"):
            if got[key] != want[key]:
                raise SystemExit(f"{case.name}: resumed {key} differ from an uninterrupted run")
        name = f"v{snapshot.VERSION}_{case.name}.snap"
        (out / name).write_bytes(blob)
        entries.append({
            "snapshot": name,
            "format_version": snapshot.VERSION,
            "module": case.module,
            "module_sha256": hashlib.sha256(data).hexdigest(),
            "program": f"{case.export}({', '.join(map(str, case.args))}) stopped at {case.stop}",
            "imports": case.imports,
            "status": how["status"],
            "host_answers": how["host_answers"],
            "host_reasons": got["host_reasons"],
            **want,
        })
        print(f"{name}: {len(blob):,} bytes, {how['status']}")
    return entries


def to_json(entries: list[dict[str, Any]]) -> str:
    """expected.json: one line per key of each case, values compact, for readable diffs."""
    cases = []
    for entry in entries:
        keys = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in entry.items())
        cases.append("  {\n" + keys + "\n  }")
    return '{\n "cases": [\n' + ",\n".join(cases) + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing golden files of this format version")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    expected = out / "expected.json"
    old: list[dict[str, Any]] = []
    if expected.exists():
        old = json.loads(expected.read_text())["cases"]
        mine = [e for e in old if e["format_version"] == snapshot.VERSION]
        if mine and not args.force:
            print(f"{expected} already has format version {snapshot.VERSION} cases; they are the "
                  "upgrade promise. Use --force only if this version was never released.",
                  file=sys.stderr)
            return 1
    entries = [e for e in old if e["format_version"] != snapshot.VERSION] + build(out)
    expected.write_text(to_json(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
