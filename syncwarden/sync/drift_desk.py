"""IT's answers to a drift finding: a fix (which becomes a ticket) or "ignore".

The card and the command line send only the finding's key, the fix chosen and the fingerprint
of the facts IT saw. Everything else is read here: the finding as it stands now, which fixes
its kind allows, and whether the person choosing is allowed to (the repairs check it is an IT
admin, by who clicked). A finding whose facts changed since the card was drawn is not ignored
on the strength of the old card.
"""

from __future__ import annotations

from sqlalchemy import select

from syncwarden.sync.drift import FIXES, DriftKind
from syncwarden.sync.reconcile import Reconciler, drift_digest
from syncwarden.sync.reconcile_records import DriftRecord
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.drift_digest import DriftDigest
from syncwarden.workflows.ports import Person
from syncwarden.workflows.repairs import FIX_LABELS, AccessRepairs, Fix
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.system_actors import is_system
from syncwarden.workflows.unit_of_work import UnitsOfWork


class DriftDesk:
    def __init__(
        self,
        units: UnitsOfWork,
        repairs: AccessRepairs,
        roster: Roster,
        *,
        reconciler: Reconciler | None = None,
        shown: int = 5,
    ) -> None:
        self._units = units
        self._repairs = repairs
        self._roster = roster
        self._reconciler = reconciler
        self._shown = shown

    async def run_now(self) -> DriftDigest:
        """Reconcile now (an IT admin asked in chat) and show every open difference IT has not
        ignored, not only the new ones."""
        assert self._reconciler is not None, "run_now needs the reconciler"
        report = await self._reconciler.run()
        showing = [f for f in report.findings if f.key not in report.ignored]
        return drift_digest(showing, report.findings, opened=report.opened, shown=self._shown)

    async def fix(self, key: str, fix: str, actor: Person) -> str:
        """Carry out ``fix`` on the finding ``key``, as ``actor``; what happened, in words."""
        record = await self._open_finding(key)
        if isinstance(record, str):
            return record
        try:
            chosen = Fix(fix)
        except ValueError:
            chosen = None
        kind = DriftKind(record.kind)
        if chosen is None or chosen not in FIXES[kind]:
            allowed = ", ".join(FIX_LABELS[option] for option in FIXES[kind])
            return f"That is not a fix for this difference; choose one of: {allowed}."
        result = await self._repairs.choose(chosen, record.subject_id, actor)
        who = record.name or record.subject_id
        if result.problems:
            return f"{FIX_LABELS[chosen]} for {who} was not done: {result.problems[0].message}."
        assert result.ticket is not None
        if not result.created:
            return f"{result.ticket.ref} is already open for {who}; it carries on."
        return f"{result.ticket.ref} opened: {FIX_LABELS[chosen]} for {who}."

    async def ignore(self, key: str, fingerprint: str, actor: Person) -> str:
        """Keep the finding off IT's cards until its facts change."""
        if not is_system(actor.id) and not await self._roster.is_it_admin(actor.id):
            return "Only IT admins can ignore access drift."
        async with self._units() as work:
            record = await work.session.scalar(
                select(DriftRecord).where(DriftRecord.key == key).with_for_update()
            )
            if record is None or record.resolved_at is not None:
                return "That difference is no longer there: nothing to ignore."
            who = record.name or record.subject_id
            if fingerprint and record.fingerprint != fingerprint:
                return (
                    f"What differs for {who} has changed since this card was posted; "
                    "see the newest drift report before ignoring it."
                )
            if record.ignored_fingerprint == record.fingerprint:
                return f"{who}'s difference is already ignored."
            record.ignored_fingerprint = record.fingerprint
            record_audit(
                work.session,
                actor=actor.upn or actor.id,
                action="drift.ignored",
                after={"finding": key, "kind": record.kind, "facts": record.facts},
            )
        return f"Ignored: {who} ({record.kind.replace('_', ' ')}) stays quiet until it changes."

    async def _open_finding(self, key: str) -> DriftRecord | str:
        async with self._units.sessions() as session:
            record = await session.scalar(select(DriftRecord).where(DriftRecord.key == key))
        if record is None or record.resolved_at is not None:
            return "That difference is no longer there: nothing to fix."
        return record
