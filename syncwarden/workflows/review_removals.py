"""The removal tickets that access reviews open, from a reviewer's Remove or a closed review's
default.

A removal opens through :class:`workflows.requests.RequestIntake` as the system actor
``syncwarden:review``, and the ticket is stamped on its review item in the ticket's own commit,
so a removal opens once however often it is asked for (two clicks, two replicas, a job run
again). A person whose other ticket is still open gets no removal yet: the item stays owed and
the access-reviews job opens it on a later pass, while the person is still enrolled.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.requests import Mark, RequestIntake
from syncwarden.workflows.review_records import ReviewItem
from syncwarden.workflows.review_views import ReviewDecision
from syncwarden.workflows.system_actors import REVIEW
from syncwarden.workflows.unit_of_work import UnitsOfWork


class ReviewRemovals:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        intake: RequestIntake,
        on_steps_queued: Callable[[], None],
    ) -> None:
        self._units = units
        self._intake = intake
        self._on_steps_queued = on_steps_queued

    async def open(self, item_ids: list[int]) -> int:
        """Open the removal of each item not stamped yet; how many opened now."""
        opened = 0
        for item_id in item_ids:
            async with self._units.sessions() as session:
                item = await session.get(ReviewItem, item_id)
                if item is None or item.removal_ticket_id is not None:
                    continue
                enrollment_id = item.enrollment_id

            result = await self._intake.open_system_removal(
                REVIEW, enrollment_id, reason="access review: remove", mark=_marker(item_id)
            )
            if result.created:
                opened += 1
        if opened:
            self._on_steps_queued()
        return opened

    async def open_owed(self) -> int:
        """Removals decided (or defaulted) but not opened yet, because the person had another
        ticket open at the time; the person must still be enrolled."""
        async with self._units.sessions() as session:
            rows = await session.scalars(
                select(ReviewItem.id)
                .join(Enrollment, Enrollment.id == ReviewItem.enrollment_id)
                .where(
                    ReviewItem.decision == ReviewDecision.REMOVE.value,
                    ReviewItem.removal_ticket_id.is_(None),
                    Enrollment.active.is_(True),
                )
                .order_by(ReviewItem.id)
            )
            owed = list(rows.all())
        return await self.open(owed) if owed else 0


def _marker(item_id: int) -> Mark:
    """Stamps the removal ticket on the review item, in the ticket's commit."""

    async def mark(session: AsyncSession, _enrollment: Enrollment, ticket_id: int) -> None:
        row = await session.get(ReviewItem, item_id, with_for_update=True)
        if row is not None:
            row.removal_ticket_id = ticket_id

    return mark
