"""Tables of access reviews: one row per review, one per person reviewed in it.

The database keeps the rules that two replicas could otherwise break: one open review at a time
(``open_marker`` is 1 while a review is open and NULL once closed, under a unique index, so a
second start fails on commit), and one item per enrollment in a review.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, utc_now


class AccessReview(Base):
    __tablename__ = "access_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    closes_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When undecided reviewers were reminded and the fallback reviewers asked (once).
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_by: Mapped[str] = mapped_column(String(320))
    reviewers: Mapped[str] = mapped_column(String(16))
    default_decision: Mapped[str] = mapped_column(String(16))
    open_marker: Mapped[int | None] = mapped_column(Integer, unique=True)

    @property
    def ref(self) -> str:
        return review_ref(self.id)


def review_ref(review_id: int) -> str:
    """The name people use for a review: ``AR-3``."""
    return f"AR-{review_id}"


def review_id_from_ref(ref: object) -> int | None:
    """The row id behind ``AR-3`` (case and spaces forgiven), or None when it is not one.

    ``ref`` comes from card data or the command line, so anything that is not a name is None."""
    if not isinstance(ref, str):
        return None
    cleaned = ref.strip().upper().replace(" ", "")
    number = cleaned[3:] if cleaned.startswith("AR-") else ""
    if not (number.isascii() and number.isdecimal() and len(number) <= 9):
        return None
    return int(number) or None


# What a reviewer or IT is told when a name leads to no review (one sentence for every door).
NOT_FOUND = "There is no access review with that name."


class ReviewItem(Base):
    """One person in one review: who must decide, and what was decided by whom."""

    __tablename__ = "access_review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(
        ForeignKey("access_reviews.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[int] = mapped_column(Integer)
    subject_id: Mapped[str] = mapped_column(String(64))
    subject_name: Mapped[str] = mapped_column(String(256))
    subject_upn: Mapped[str] = mapped_column(String(320))
    mailbox: Mapped[str] = mapped_column(String(320))
    # The person's manager when managers review; None: the approvers review this person.
    reviewer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    removal_ticket_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("review_id", "enrollment_id"),)
