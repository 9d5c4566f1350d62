"""Field types whose validation means what the OpenAPI document says.

Request models are strict (``ConfigDict(strict=True)``): a JSON ``false`` is not a number and
``0`` is not a boolean, as in JSON Schema. Where strict pydantic and JSON Schema differ, or the
document says more than a type:

* :data:`JSON_INTEGER`: JSON Schema counts ``3.0`` as an integer; strict pydantic would refuse
  it. Put it after the constraints: ``Annotated[int, Field(ge=1), JSON_INTEGER]`` (before them,
  pydantic cannot put ``minimum``/``maximum`` into the document).
* :data:`Base64`: bytes carried as base64 in JSON. The handlers decode them and answer their
  own problem (``invalid-result``, ``invalid-stdin``); the document states the alphabet and
  padding (``pattern``) so that clients know what is accepted.

And text that ends up in PostgreSQL must be text PostgreSQL can store: no NUL character, no
unpaired surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot encode it). Strict pydantic passes
both through, and the database then fails the request with a 500. :data:`Text` refuses them
(422); :data:`Unicode` refuses only unpaired surrogates, for fields whose operation answers NUL
with a problem of its own (``invalid-args``, ``invalid-env``). :data:`NO_NUL_PATTERN` is the
same rule for path and query parameters (which cannot carry surrogates).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

#: Standard base64 with padding, as ``base64.b64decode(..., validate=True)`` accepts it.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _integral(value: Any) -> Any:
    """``3.0`` → ``3``; everything else unchanged (the int schema then decides)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JSON_INTEGER = BeforeValidator(_integral)

NO_NUL_PATTERN = r"^[^\u0000]*$"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(value: str) -> bool:
    """Whether PostgreSQL can store ``value`` as text: no NUL, no unpaired surrogate."""
    return "\x00" not in value and _encodable(value)


def _unicode(value: str) -> str:
    if not _encodable(value):
        raise ValueError("must be Unicode text (it has an unpaired surrogate)")
    return value


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    return _unicode(value)


Unicode = Annotated[str, AfterValidator(_unicode)]
Text = Annotated[str, AfterValidator(_text), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]

Base64 = Annotated[str, Field(json_schema_extra={"pattern": BASE64_PATTERN,
                                                 "contentEncoding": "base64"})]
