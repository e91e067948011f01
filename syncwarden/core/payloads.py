"""Cheap checks on request bodies before any parser sees them.

Python's ``json`` parser recurses once per nesting level, so a body of a hundred thousand ``[``
raises ``RecursionError`` deep inside whatever parses it first (the Agents SDK, pydantic, our own
routes), which surfaces as a 500. No activity or Graph notification nests deeper than a few
levels; the depth is measured on the raw bytes, outside strings, and stops at the limit.
"""

from __future__ import annotations

MAX_JSON_DEPTH = 64
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` opens more than ``limit`` arrays or objects inside each other.

    Brackets inside strings do not count; malformed JSON is left for the parser to refuse.
    A body with no more opening brackets than ``limit`` in all (every Teams activity) cannot be
    nested deeper, so it is let through after two counts in C, not a loop in Python per byte.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSE:
            depth = max(0, depth - 1)
    return False
