"""Access reviews over time: every so often, someone confirms that each enrolled person still
needs sync.

Modelled on Entra ID access reviews: reviewers are the approvers or each person's manager
(``REVIEWS__REVIEWERS``); undecided reviewers are reminded part-way and the fallback reviewers
asked as well; when the window closes, people nobody decided on follow the default decision
(``REVIEWS__DEFAULT_DECISION``, Entra's ``expirationBehavior``), and a Remove opens its removal
ticket through :mod:`workflows.review_removals`. The job calls :meth:`AccessReviews.run_due`,
which may run twice and on two replicas: one open review at a time is the database's rule
(:mod:`workflows.review_records`), and a reminder is stamped on the review it reminds of.
Every start, escalation, default and close is on the audit trail (``audit export``). What a
reviewer sees and decides is :mod:`workflows.review_decisions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.connectors.errors import ConnectorError
from syncwarden.connectors.ports import DirectoryChanges
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import ReviewerSource, ReviewSettings
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.ports import Channel, Notification, NotificationKind, Person
from syncwarden.workflows.records import Enrollment, canonical_object_id
from syncwarden.workflows.review_records import NOT_FOUND, AccessReview, ReviewItem, review_ref
from syncwarden.workflows.review_removals import ReviewRemovals
from syncwarden.workflows.review_views import ReviewDecision, ReviewSummary
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.system_actors import REVIEW
from syncwarden.workflows.unit_of_work import UnitOfWork, UnitsOfWork

log = get_logger(__name__)


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months (the day clamped to the month's last)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    for day in (moment.day, 30, 29, 28):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError(f"no day in {year}-{month}")  # unreachable: every month has a 28th


class AccessReviews:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        roster: Roster,
        removals: ReviewRemovals,
        settings: ReviewSettings,
        managers: DirectoryChanges | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._units = units
        self._roster = roster
        self._removals = removals
        self._settings = settings
        self._managers = managers
        self._clock = clock

    # ------------------------------------------------------------------------- the schedule

    async def run_due(self) -> str:
        """The scheduled pass: start a review when one is due, remind and escalate, close
        what has closed, and open removals still owed. Safe to run twice and on two replicas."""
        done: list[str] = []
        review = await self._open_review()
        now = self._clock()
        if review is None and self._settings.every_months > 0:
            last = await self._last_started()
            if last is None or now >= add_months(last, self._settings.every_months):
                started = await self.start(REVIEW)
                done.append(str(started) if isinstance(started, ReviewSummary) else started)
        elif review is not None:
            if now >= review.closes_at:
                done.append(str(await self.close(review.id)))
            elif review.escalated_at is None and now >= review.started_at + timedelta(
                days=self._settings.reminder_days
            ):
                done.append(f"{review.ref}: {await self._escalate(review.id)} reminded")
        removals = await self._removals.open_owed()
        if removals:
            done.append(f"{removals} removals opened")
        return "; ".join(done) or "nothing due"

    async def _open_review(self) -> AccessReview | None:
        async with self._units.sessions() as session:
            return await session.scalar(
                select(AccessReview).where(AccessReview.closed_at.is_(None)).limit(1)
            )

    async def _last_started(self) -> datetime | None:
        async with self._units.sessions() as session:
            last: datetime | None = await session.scalar(select(func.max(AccessReview.started_at)))
            return last

    # ------------------------------------------------------------------------- starting

    async def start(self, actor: Person) -> ReviewSummary | str:
        """Start a review of everyone enrolled now; a sentence when one is already open."""
        open_review = await self._open_review()
        if open_review is not None:
            return f"{open_review.ref} is still open until {open_review.closes_at:%d %b %Y} UTC"
        people = await self._enrolled()
        if not people:
            return "Nobody is enrolled, so there is nobody to review."
        reviewer_of = await self._reviewers_of(people)
        approvers = await self._roster.approvers()
        now = self._clock()
        try:
            async with self._units() as work:
                review = AccessReview(
                    started_at=now,
                    closes_at=now + timedelta(days=self._settings.window_days),
                    started_by=actor.upn or actor.id,
                    reviewers=self._settings.reviewers.value,
                    default_decision=self._settings.default_decision.value,
                    open_marker=1,
                )
                work.session.add(review)
                await work.session.flush()
                for enrollment in people:
                    work.session.add(
                        ReviewItem(
                            review_id=review.id,
                            enrollment_id=enrollment.id,
                            subject_id=enrollment.subject_id,
                            subject_name=enrollment.subject_name,
                            subject_upn=enrollment.subject_upn,
                            mailbox=enrollment.mailbox,
                            reviewer_id=reviewer_of.get(enrollment.id),
                        )
                    )
                record_audit(
                    work.session,
                    actor=actor.upn or actor.id,
                    action="review.started",
                    after={
                        "review": review.ref,
                        "people": len(people),
                        "reviewers": review.reviewers,
                        "closes_at": review.closes_at.isoformat(),
                        "default": review.default_decision,
                    },
                )
                counts = _count_by_reviewer(reviewer_of.get(p.id) for p in people)
                for reviewer, count in sorted(self._invited(counts, approvers).items()):
                    _invite(work, review, reviewer, count, NotificationKind.REVIEW_REQUESTED)
                summary = ReviewSummary(
                    review.ref, now, review.closes_at, None, len(people), 0, 0, len(people)
                )
        except IntegrityError:
            return "another access review was started at the same moment"
        log.info("review.started", review=summary.ref, people=summary.people)
        return summary

    async def _enrolled(self) -> list[Enrollment]:
        async with self._units.sessions() as session:
            rows = await session.scalars(
                select(Enrollment).where(Enrollment.active.is_(True)).order_by(Enrollment.id)
            )
            return list(rows.all())

    async def _reviewers_of(self, people: list[Enrollment]) -> dict[int, str | None]:
        """Each enrollment's reviewer: their manager (when managers review and they have one
        that is a person other than themself), else None (the approvers)."""
        if self._settings.reviewers is not ReviewerSource.MANAGER or self._managers is None:
            return {}
        found: dict[int, str | None] = {}
        for enrollment in people:
            try:
                manager = await self._managers.manager_of(enrollment.subject_id)
            except ConnectorError as error:
                log.warning(
                    "review.manager_unknown", subject=enrollment.subject_id, error=str(error)
                )
                manager = None
            if manager is not None and manager.is_user:
                manager_id = canonical_object_id(manager.id)
                if manager_id != enrollment.subject_id:
                    found[enrollment.id] = manager_id
        return found

    @staticmethod
    def _invited(counts: dict[str | None, int], approvers: frozenset[str]) -> dict[str, int]:
        """Who gets an invitation, with how many people are theirs to review."""
        invited = {reviewer: n for reviewer, n in counts.items() if reviewer is not None}
        pooled = counts.get(None, 0)
        if pooled:
            for approver in approvers:
                invited[approver] = invited.get(approver, 0) + pooled
        return invited

    # ------------------------------------------------------------------------- reminder

    async def _escalate(self, review_id: int) -> int:
        """Remind reviewers with people undecided, and ask the fallback reviewers too (once)."""
        approvers = await self._roster.approvers()
        fallback = await self._roster.fallback_approvers() or approvers
        async with self._units() as work:
            review = await work.session.get(AccessReview, review_id, with_for_update=True)
            if review is None or review.escalated_at is not None or review.closed_at is not None:
                return 0
            review.escalated_at = self._clock()
            rows = await work.session.scalars(
                select(ReviewItem.reviewer_id).where(
                    ReviewItem.review_id == review_id, ReviewItem.decision.is_(None)
                )
            )
            counts = _count_by_reviewer(rows.all())
            undecided = sum(counts.values())
            invited = self._invited(counts, approvers)
            for person in fallback:
                invited[person] = undecided
            for reviewer, count in sorted(invited.items()):
                _invite(work, review, reviewer, count, NotificationKind.REVIEW_REMINDER)
            record_audit(
                work.session,
                actor=REVIEW.upn,
                action="review.escalated",
                after={"review": review.ref, "undecided": undecided, "fallback": sorted(fallback)},
            )
            return len(invited)

    # ------------------------------------------------------------------------- closing

    async def close(self, review_id: int) -> ReviewSummary | str:
        """Close the review: undecided people follow its default decision; IT is told."""
        async with self._units() as work:
            review = await work.session.get(AccessReview, review_id, with_for_update=True)
            if review is None:
                return NOT_FOUND
            if review.closed_at is None:
                now = self._clock()
                review.closed_at = now
                review.open_marker = None
                undecided = (
                    await work.session.scalars(
                        select(ReviewItem)
                        .where(ReviewItem.review_id == review.id, ReviewItem.decision.is_(None))
                        .with_for_update()
                    )
                ).all()
                for item in undecided:
                    item.decision = review.default_decision
                    item.decided_by = "default (nobody decided)"
                    item.decided_at = now
                    record_audit(
                        work.session,
                        actor=REVIEW.upn,
                        action="review.defaulted",
                        after={
                            "review": review.ref,
                            "subject": item.subject_upn,
                            "decision": review.default_decision,
                        },
                    )
                summary = await _summary(work.session, review)
                record_audit(
                    work.session,
                    actor=REVIEW.upn,
                    action="review.closed",
                    after={
                        "review": review.ref,
                        "people": summary.people,
                        "kept": summary.kept,
                        "removed": summary.removed,
                        "defaulted": len(undecided),
                    },
                )
                work.to_channel(
                    Channel.IT,
                    Notification(
                        NotificationKind.REVIEW_CLOSED,
                        None,
                        f"Access review {review.ref} closed: {summary.people} people, "
                        f"{summary.kept} kept, {summary.removed} removed "
                        f"({len(undecided)} nobody decided on: {review.default_decision}).",
                    ),
                    key=f"{review.ref}:review_closed",
                )
            else:
                summary = await _summary(work.session, review)
        await self._removals.open_owed()
        return summary

    async def summaries(self) -> list[ReviewSummary]:
        async with self._units.sessions() as session:
            reviews = (
                await session.scalars(select(AccessReview).order_by(AccessReview.id.desc()))
            ).all()
            return [await _summary(session, review) for review in reviews]


def _count_by_reviewer(reviewers: Iterable[str | None]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for reviewer in reviewers:
        counts[reviewer] = counts.get(reviewer, 0) + 1
    return counts


def _invite(
    work: UnitOfWork, review: AccessReview, reviewer: str, count: int, kind: NotificationKind
) -> None:
    closes = f"{review.closes_at:%d %b %Y}"
    if kind is NotificationKind.REVIEW_REMINDER:
        text = (
            f"Reminder: access review {review.ref} closes on {closes} UTC and {count} "
            f"{'person is' if count == 1 else 'people are'} not decided yet."
        )
    else:
        text = (
            f"Access review {review.ref}: please confirm whether {count} "
            f"{'person' if count == 1 else 'people'} still need calendar sync, by {closes} UTC."
        )
    work.to_user(
        reviewer,
        Notification(kind, None, text, {"review": review.ref}),
        key=f"{review.ref}:{kind.value}:{reviewer}",
    )


async def _summary(session: AsyncSession, review: AccessReview) -> ReviewSummary:
    decisions = (
        await session.scalars(select(ReviewItem.decision).where(ReviewItem.review_id == review.id))
    ).all()
    return ReviewSummary(
        ref=review_ref(review.id),
        started_at=review.started_at,
        closes_at=review.closes_at,
        closed_at=review.closed_at,
        people=len(decisions),
        kept=decisions.count(ReviewDecision.KEEP.value),
        removed=decisions.count(ReviewDecision.REMOVE.value),
        undecided=decisions.count(None),
    )
