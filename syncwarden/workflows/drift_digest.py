"""What the drift card shows, as plain values that travel in an outbox row.

Reconciliation (``sync``) writes the digest and the bot draws it; neither may import the other,
so the digest lives here, between them, and crosses the outbox as JSON. Reading it back is
strict: a row that does not hold a digest is reported as such rather than drawn half-empty.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

DIGEST_DETAIL = "drift"  # the Notification.details key that holds the digest


@dataclass(frozen=True)
class DriftItem:
    """One finding on the card: who, what differs, and the fixes IT may choose."""

    key: str
    fingerprint: str
    kind: str
    name: str
    meaning: str
    facts: tuple[tuple[str, str], ...]
    fixes: tuple[str, ...]


@dataclass(frozen=True)
class DriftDigest:
    """One run's news: the open differences by kind, the first few new ones with their fixes,
    and what the run did by itself (tickets opened, removals held back by the valve)."""

    open_count: int
    counts: tuple[tuple[str, int], ...]
    items: tuple[DriftItem, ...]
    more: int = 0
    opened: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    held_reason: str = ""
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DriftDigest:
        """The digest in ``text``; ``ValueError`` when it is not one."""
        try:
            data = json.loads(text)
            items = tuple(_item(entry) for entry in data["items"])
            return cls(
                open_count=_count(data["open_count"]),
                counts=tuple((str(kind), _count(count)) for kind, count in data["counts"]),
                items=items,
                more=_count(data.get("more", 0)),
                opened=tuple(str(ref) for ref in data.get("opened", ())),
                held=tuple(str(name) for name in data.get("held", ())),
                held_reason=str(data.get("held_reason", "")),
                notes=tuple(str(note) for note in data.get("notes", ())),
            )
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a drift digest: {error}") from None


def _count(value: Any) -> int:
    """A count as JSON writes one: an integer (not a float, not ``true``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a count: {value!r}")
    return value


def _item(entry: Any) -> DriftItem:
    return DriftItem(
        key=str(entry["key"]),
        fingerprint=str(entry["fingerprint"]),
        kind=str(entry["kind"]),
        name=str(entry["name"]),
        meaning=str(entry["meaning"]),
        facts=tuple((str(name), str(value)) for name, value in entry["facts"]),
        fixes=tuple(str(fix) for fix in entry["fixes"]),
    )
