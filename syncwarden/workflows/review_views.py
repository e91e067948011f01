"""What an access review shows a reviewer: read-only snapshots, safe to hand to the bot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ReviewDecision(StrEnum):
    KEEP = "keep"
    REMOVE = "remove"


@dataclass(frozen=True)
class ReviewRow:
    """One person on a reviewer's page, and what was decided for them so far."""

    item_id: int
    name: str
    upn: str
    mailbox: str
    decision: ReviewDecision | None = None
    decided_by: str | None = None


@dataclass(frozen=True)
class ReviewPage:
    """A page of the people one reviewer may decide for, in a stable order (item id).

    ``after`` is the last item id of this page when there are more; ``undecided`` counts the
    reviewer's undecided people in the whole review, not only on this page.
    """

    ref: str
    closes_at: datetime
    default_decision: str
    rows: tuple[ReviewRow, ...]
    start: int
    after: int | None
    undecided: int
    closed: bool = False


@dataclass(frozen=True)
class ReviewSummary:
    """A review's counts, for the CLI, IT's channel and the audit trail."""

    ref: str
    started_at: datetime
    closes_at: datetime
    closed_at: datetime | None
    people: int
    kept: int
    removed: int
    undecided: int

    def __str__(self) -> str:
        state = "closed" if self.closed_at else f"open until {self.closes_at:%d %b %Y %H:%M} UTC"
        return (
            f"{self.ref} ({state}): {self.people} people, {self.kept} kept, "
            f"{self.removed} removed, {self.undecided} undecided"
        )
