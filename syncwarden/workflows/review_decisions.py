"""Access reviews, the reviewer's side: the page of people they may decide for, Keep or Remove
for one person, and Keep for everyone undecided on the page.

Who may decide for a person is asked here on every click, from the clicker's id, never from
the card: the person's assigned reviewer (their manager), any approver for people the approvers
review, the fallback reviewers once the review escalated, and IT admins; nobody for themself.
One rule answers both questions, as a WHERE clause for the page (:func:`_visible`) and as a
refusal for the click (:func:`_refusal`), so a person shown is a person the clicker may decide
for. Every decision is on the audit trail (``audit export``); a Remove opens its removal ticket
through :mod:`workflows.review_removals`. Starting, reminding and closing reviews is
:mod:`workflows.review_lifecycle`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import canonical_object_id, ticket_ref
from syncwarden.workflows.review_records import (
    NOT_FOUND,
    AccessReview,
    ReviewItem,
    review_id_from_ref,
)
from syncwarden.workflows.review_removals import ReviewRemovals
from syncwarden.workflows.review_views import ReviewDecision, ReviewPage, ReviewRow
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.unit_of_work import UnitsOfWork

PAGE_SIZE = 10


@dataclass(frozen=True)
class ReviewAnswer:
    """What a click did: the reviewer's page to show now, and a sentence when it was refused
    or did something worth saying."""

    page: ReviewPage | None
    message: str | None = None
    ok: bool = True


@dataclass(frozen=True)
class _Deciders:
    """Who the roster says may decide, resolved once per click."""

    clicker: str
    approvers: frozenset[str]
    fallback: frozenset[str]
    it_admin: bool


class ReviewDecisions:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        roster: Roster,
        removals: ReviewRemovals,
        clock: Callable[[], datetime],
    ) -> None:
        self._units = units
        self._roster = roster
        self._removals = removals
        self._clock = clock

    async def page(self, clicker: Person, ref: object, after: int = 0) -> ReviewAnswer:
        review_id = review_id_from_ref(ref)
        deciders = await self._deciders(clicker)
        async with self._units.sessions() as session:
            review = await session.get(AccessReview, review_id) if review_id else None
            if review is None:
                return ReviewAnswer(None, NOT_FOUND, ok=False)
            return ReviewAnswer(await _page(session, review, deciders, after))

    async def decide(
        self,
        clicker: Person,
        ref: object,
        item_id: int,
        decision: ReviewDecision,
        *,
        after: int = 0,
    ) -> ReviewAnswer:
        return await self._decide_many(clicker, ref, [item_id], decision, after=after, one=True)

    async def keep_all(
        self, clicker: Person, ref: object, item_ids: Iterable[int], *, after: int = 0
    ) -> ReviewAnswer:
        """Keep every *undecided* person of ``item_ids`` the clicker may decide for."""
        return await self._decide_many(
            clicker, ref, list(item_ids)[:PAGE_SIZE], ReviewDecision.KEEP, after=after, one=False
        )

    async def _decide_many(
        self,
        clicker: Person,
        ref: object,
        item_ids: list[int],
        decision: ReviewDecision,
        *,
        after: int,
        one: bool,
    ) -> ReviewAnswer:
        review_id = review_id_from_ref(ref)
        deciders = await self._deciders(clicker)
        message: str | None = None
        ok = True
        removals: list[int] = []
        async with self._units() as work:
            review = (
                await work.session.get(AccessReview, review_id, with_for_update=True)
                if review_id
                else None
            )
            if review is None:
                return ReviewAnswer(None, NOT_FOUND, ok=False)
            if review.closed_at is not None:
                return ReviewAnswer(
                    await _page(work.session, review, deciders, after),
                    f"{review.ref} is closed; nothing more can be decided.",
                    ok=False,
                )
            items = (
                await work.session.scalars(
                    select(ReviewItem)
                    .where(ReviewItem.review_id == review.id, ReviewItem.id.in_(item_ids))
                    .order_by(ReviewItem.id)
                    .with_for_update()
                )
            ).all()
            decided = 0
            for item in items:
                refusal = _refusal(item, review, deciders)
                if refusal is not None:
                    if one:
                        message, ok = refusal, False
                    continue
                if not one and item.decision is not None:
                    continue  # Keep all never overrides a decision someone made
                if item.removal_ticket_id is not None:
                    if one:
                        message = (
                            f"{item.subject_name}'s removal is already under way "
                            f"({ticket_ref(item.removal_ticket_id)})."
                        )
                        ok = False
                    continue
                before = item.decision
                item.decision = decision.value
                item.decided_by = clicker.name or clicker.upn or clicker.id
                item.decided_at = self._clock()
                record_audit(
                    work.session,
                    actor=clicker.upn or clicker.id,
                    action="review.decided",
                    before={"decision": before} if before else None,
                    after={
                        "review": review.ref,
                        "subject": item.subject_upn,
                        "decision": decision.value,
                    },
                )
                if decision is ReviewDecision.REMOVE:
                    removals.append(item.id)
                decided += 1
            if one and not items:
                message, ok = "That person is not part of this review.", False
            elif not one:
                message = f"Kept {decided} {'person' if decided == 1 else 'people'}."
        opened = await self._removals.open(removals)
        page = await self.page(clicker, ref, after)
        if one and ok and removals:
            message = (
                "Removal requested."
                if opened
                else ("Remove recorded; the removal starts once their open request is finished.")
            )
        return ReviewAnswer(page.page, message, ok)

    async def _deciders(self, clicker: Person) -> _Deciders:
        return _Deciders(
            canonical_object_id(clicker.id),
            await self._roster.approvers(),
            await self._roster.fallback_approvers(),
            await self._roster.is_it_admin(clicker.id),
        )


def _visible(review: AccessReview, deciders: _Deciders) -> ColumnElement[bool]:
    """The items ``deciders.clicker`` may decide for, as a WHERE clause (see _refusal)."""
    if deciders.it_admin:
        mine: ColumnElement[bool] = ReviewItem.review_id == review.id
    else:
        ways = [ReviewItem.reviewer_id == deciders.clicker]
        if deciders.clicker in deciders.approvers:
            ways.append(ReviewItem.reviewer_id.is_(None))
        fallback = deciders.fallback or deciders.approvers
        if review.escalated_at is not None and deciders.clicker in fallback:
            ways = [ReviewItem.review_id == review.id]
        mine = or_(*ways) if ways else false()
    return and_(ReviewItem.review_id == review.id, mine, ReviewItem.subject_id != deciders.clicker)


def _refusal(item: ReviewItem, review: AccessReview, deciders: _Deciders) -> str | None:
    """Why the clicker may not decide for this person, or None when they may."""
    if item.subject_id == deciders.clicker:
        return "You cannot review your own access."
    if deciders.it_admin or item.reviewer_id == deciders.clicker:
        return None
    if item.reviewer_id is None and deciders.clicker in deciders.approvers:
        return None
    fallback = deciders.fallback or deciders.approvers
    if review.escalated_at is not None and deciders.clicker in fallback:
        return None
    return f"You are not a reviewer of {item.subject_name} in {review.ref}."


async def _page(
    session: AsyncSession, review: AccessReview, deciders: _Deciders, after: int
) -> ReviewPage:
    visible = _visible(review, deciders)
    rows = (
        await session.scalars(
            select(ReviewItem)
            .where(visible, ReviewItem.id > after)
            .order_by(ReviewItem.id)
            .limit(PAGE_SIZE + 1)
        )
    ).all()
    undecided = await session.scalar(
        select(func.count()).select_from(ReviewItem).where(visible, ReviewItem.decision.is_(None))
    )
    shown = rows[:PAGE_SIZE]
    return ReviewPage(
        ref=review.ref,
        closes_at=review.closes_at,
        default_decision=review.default_decision,
        rows=tuple(
            ReviewRow(
                item.id,
                item.subject_name,
                item.subject_upn,
                item.mailbox,
                ReviewDecision(item.decision) if item.decision else None,
                item.decided_by,
            )
            for item in shown
        ),
        start=after,
        after=shown[-1].id if len(rows) > PAGE_SIZE else None,
        undecided=int(undecided or 0),
        closed=review.closed_at is not None,
    )
