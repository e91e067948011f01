"""Telling IT about sync failures without flooding the channel.

A person's first failure is posted at once (with what it means and what to do), ongoing failures
are gathered into one digest at most every ``failure_digest_minutes``, and a recovery is posted
when a failing person syncs again. Every message has a key stable for its episode, so the outbox
sends it once even if the run that caused it is repeated.

The failure alert is queued after every failing run, not only the first: the outbox drops the
repeats by key, and a process that died between a failing run's commit and its alert has the
alert queued by the next failing run instead of never. (A recovery line can still be lost that
way: the next run no longer knows it recovered. It is the one message this module may lose.)

A failure of Syncwarden's own app (a missing permission, a refused credential) stops everyone's
sync at once; it is said once a day for the app, naming the first person it hit, and so is its
recovery, instead of once for each of thousands of people.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from syncwarden.core.db import utc_now
from syncwarden.sync.engine import SyncReport
from syncwarden.sync.errors import ADVICE, FailureKind
from syncwarden.sync.records import SyncState
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.unit_of_work import UnitsOfWork

# Failures of the app itself, not of one person's mailbox: everyone fails the same way at once.
APP_WIDE = frozenset({FailureKind.PERMISSION, FailureKind.CREDENTIAL})


class SyncAlerts:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        digest_minutes: float = 60.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._units = units
        self._sessions = units.sessions
        self._digest_minutes = digest_minutes
        self._clock = clock

    async def after_run(self, report: SyncReport) -> None:
        if report.skipped or (report.ok and not report.recovered):
            return  # nothing to say: no database read for a run that went well as the last one
        async with self._sessions() as session:
            enrollment = await session.get(Enrollment, report.enrollment_id)
            state = await session.get(SyncState, report.enrollment_id)
        if enrollment is None or state is None:
            return
        episode = enrollment.last_success_at.isoformat() if enrollment.last_success_at else "never"
        day = f"{self._clock():%Y-%m-%d}"
        if not report.ok and state.consecutive_failures >= 1:
            kind = report.error_kind or FailureKind.OTHER
            key = (
                f"sync-app-failed:{kind.value}:{day}"
                if kind in APP_WIDE
                else f"sync-failed:{enrollment.id}:{episode}"
            )
            text = (
                f"Calendar sync failed for **{enrollment.subject_name}** ({enrollment.mailbox}): "
                f"{ADVICE[kind]}.\n\nDetail: {report.error}"
            )
            if kind is FailureKind.PERMISSION:
                text += (
                    "\n\nThe permission belongs to Syncwarden's app, so everyone's sync stops "
                    "until it is granted, not only this person's."
                )
            if kind is FailureKind.SAFETY_VALVE:
                text += (
                    f"\n\nIf the scheduling system really dropped these appointments, run "
                    f"`syncwarden sync --person {enrollment.subject_upn} --allow-deletions`."
                )
            await self._tell_it(
                Notification(NotificationKind.SYNC_ALERT, None, text, {"kind": kind.value}), key
            )
        elif report.ok and report.recovered:
            if report.recovered_from in APP_WIDE:
                text = (
                    f"Calendar sync works again: Syncwarden's app is no longer refused "
                    f"({report.recovered_from}); first back: **{enrollment.subject_name}**."
                )
                key = f"sync-app-recovered:{report.recovered_from}:{day}"
            else:
                text = (
                    f"Calendar sync works again for **{enrollment.subject_name}** "
                    f"({enrollment.mailbox})."
                )
                key = f"sync-recovered:{enrollment.id}:{episode}"
            await self._tell_it(Notification(NotificationKind.SYNC_RECOVERED, None, text), key)

    async def digest(self) -> int:
        """One message listing everyone still failing after their first alert; 0 when none."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Enrollment, SyncState)
                    .join(SyncState, SyncState.enrollment_id == Enrollment.id)
                    .where(SyncState.consecutive_failures > 1, Enrollment.active.is_(True))
                    .order_by(Enrollment.subject_name)
                )
            ).all()
        if not rows:
            return 0
        lines = [f"**Calendar sync: {len(rows)} people still failing**", ""]
        for enrollment, state in rows:
            lines.append(
                f"- {enrollment.subject_name} ({enrollment.mailbox}): "
                f"{enrollment.last_error_kind or 'other'}, {state.consecutive_failures} runs"
            )
        now = self._clock()
        bucket = int(now.timestamp() // (self._digest_minutes * 60))
        digest = Notification(NotificationKind.SYNC_ALERT, None, "\n".join(lines))
        await self._tell_it(digest, f"sync-digest:{bucket}")
        return len(rows)

    async def _tell_it(self, notification: Notification, key: str) -> None:
        async with self._units() as work:
            work.to_channel(Channel.IT, notification, key=key)
