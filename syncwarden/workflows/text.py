"""Free text people give a use case (a justification, a comment, a reason), made storable.

The bot cleans what comes from Teams, but the CLI and any future caller reach the use cases too;
a NUL (PostgreSQL refuses it) or a lone surrogate (neither database encodes it) would otherwise
fail the whole transaction with the change it was part of.
"""

from __future__ import annotations

from typing import Any

FREE_TEXT_LIMIT = 2000


def storable_text(value: Any, longest: int = FREE_TEXT_LIMIT) -> str:
    """At most ``longest`` characters, trimmed, without NUL and lone surrogates."""
    text = str(value or "")[:longest]
    return "".join(c for c in text if c != "\x00" and not "\ud800" <= c <= "\udfff").strip()
