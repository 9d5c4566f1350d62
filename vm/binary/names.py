"""The "name" custom section (spec appendix 7.4): function names for backtraces and debugging.

Names are a debugging aid, so a broken name section must never make a module unusable: any
defect found here yields an empty mapping instead of an error.
"""

from __future__ import annotations

from vm.binary.reader import Reader
from vm.errors import MalformedError

SUBSECTION_MODULE = 0
SUBSECTION_FUNCTION = 1


def parse_function_names(content: bytes) -> dict[int, str]:
    """Function index -> name from the content of a "name" section (after its name).

    Returns ``{}`` unless the section is well-formed: subsections in increasing id order, each
    exactly as long as declared, and a function subsection whose names are valid UTF-8.
    """
    try:
        return _parse(content)
    except (MalformedError, IndexError):
        return {}


def _parse(content: bytes) -> dict[int, str]:
    r = Reader(content)
    names: dict[int, str] = {}
    last_id = -1
    while not r.at_end():
        sub_id = r.byte()
        if sub_id <= last_id:
            return {}
        last_id = sub_id
        size = r.length()
        end = r.pos + size
        if end > len(content):
            return {}
        if sub_id == SUBSECTION_FUNCTION:
            for _ in range(r.length()):
                index = r.u32()
                names[index] = r.name()
            if r.pos != end:
                return {}
        r.pos = end
    return names
