"""Access reconciliation: find where the sync group, the enrollments, the scheduling mappings
and the directory disagree, cheaply enough to run every day at 10,000 people.

A run brings its mirror of the directory up to date from two delta rounds (the sync group's
membership and users), reads what it needs for people it has never mirrored, compares everything
with :func:`sync.drift.find_drift`, and records the findings: new ones are news, ones no longer
seen are resolved, ignored ones stay quiet until their facts change. With nothing changed a run
costs two Graph requests. A first run, a link Graph no longer knows, or ``full=True`` reads the
group's members in full (ground truth: group delta alone is not trusted to report leavers) and
the whole users round.

The news (new differences, or ones whose facts changed since IT last saw them) is queued for
the IT channel in the same commit as the findings, so a crash can neither lose it nor tell it
twice. This module finds, records and tells; it changes nothing outside. Fixes are tickets.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.connectors.errors import DeltaExpiredError, NotFoundError
from syncwarden.connectors.ports import (
    DirectoryChanges,
    DirectoryUser,
    UserChange,
)
from syncwarden.connectors.scheduling.ports import Mapping
from syncwarden.core.db import utc_now
from syncwarden.core.logging import get_logger
from syncwarden.sync.drift import (
    AccountState,
    DirectoryPerson,
    DriftKind,
    EnrolledPerson,
    Finding,
    SchedulingMapping,
    find_drift,
)
from syncwarden.sync.reconcile_records import (
    DriftRecord,
    MirroredMember,
    MirroredPerson,
    ReconcileLink,
)
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.unit_of_work import UnitsOfWork

log = get_logger(__name__)
USERS_LINK = "users"
T = TypeVar("T")


class PersonLookup(Protocol):
    async def get_user(self, id_or_upn: str) -> DirectoryUser: ...


class MappingSource(Protocol):
    async def list_mappings(self) -> Sequence[Mapping]: ...


@dataclass(frozen=True)
class ReconcileReport:
    """What a run found: every open finding, which of them are news (new, or changed since
    they were ignored or last told), and what the run cost."""

    findings: tuple[Finding, ...]
    news: tuple[Finding, ...]
    # Keys of open findings IT ignored with these very facts: left off what IT is shown.
    ignored: frozenset[str]
    resolved: int
    graph_requests: int
    full: bool
    counts: Counter[DriftKind] = field(default_factory=Counter)

    def __str__(self) -> str:
        kinds = ", ".join(f"{count} {kind.value}" for kind, count in sorted(self.counts.items()))
        return (
            f"{len(self.findings)} differences ({kinds or 'none'}), {len(self.news)} new, "
            f"{self.resolved} resolved, {self.graph_requests} Graph requests"
        )


@dataclass(frozen=True)
class _Round(Generic[T]):
    """What one of the two rounds gave: its result, the link to keep, what it cost, and whether
    it read everything (a first round, or one after the stored link had expired)."""

    value: T
    link: str
    requests: int
    full: bool


class Reconciler:
    def __init__(
        self,
        units: UnitsOfWork,
        changes: DirectoryChanges,
        people: PersonLookup,
        mappings: MappingSource,
        *,
        group_id: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._units = units
        self._sessions = units.sessions
        self._changes = changes
        self._people = people
        self._mappings = mappings
        self._group_id = group_id.lower()
        self._clock = clock

    async def run(self, *, full: bool = False) -> ReconcileReport:
        """Bring the mirror up to date, compare, and record what differs."""
        links = {} if full else await self._links()
        members = await self._members(links.get(self._group_key))
        enrolled = await self._enrolled()
        interest = set(members.value) | {person.subject_id for person in enrolled}
        users = await self._user_changes(links.get(USERS_LINK))
        directory, lookups = await self._directory(users.value, interest, full=users.full)
        mappings = {m.profile_id: _mapping(m) for m in await self._mappings.list_mappings()}
        findings = find_drift(
            members=members.value, enrolled=enrolled, mappings=mappings, directory=directory
        )
        news, ignored, resolved = await self._record(
            findings,
            members=members.value,
            directory=directory,
            links={self._group_key: members.link, USERS_LINK: users.link},
        )
        report = ReconcileReport(
            tuple(findings),
            tuple(news),
            ignored,
            resolved,
            members.requests + users.requests + lookups,
            full=members.full or users.full,
            counts=Counter(finding.kind for finding in findings),
        )
        log.info("reconcile.done", result=str(report))
        return report

    @property
    def _group_key(self) -> str:
        return f"group:{self._group_id}"

    async def _links(self) -> dict[str, str]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(ReconcileLink))).all()
            return {row.name: row.delta_link for row in rows}

    async def _members(self, link: str | None) -> _Round[frozenset[str]]:
        """The group's user members now, from the stored link or, without a usable one, a
        first round (for the next link) and the full listing (the truth)."""
        if link is not None:
            try:
                round_ = await self._changes.member_changes(self._group_id, link)
            except DeltaExpiredError:
                log.info("reconcile.group_link_expired", group=self._group_id)
            else:
                if round_.uncertain or round_.group_removed:
                    listed = await self._changes.member_ids(self._group_id)
                    return _Round(listed, round_.delta_link, round_.requests + 1, full=True)
                known = await self._mirrored_members()
                now = (known | round_.added) - round_.removed
                return _Round(now, round_.delta_link, round_.requests, full=False)
        first = await self._changes.member_changes(self._group_id, None)
        listed = await self._changes.member_ids(self._group_id)
        return _Round(listed, first.delta_link, first.requests + 1, full=True)

    async def _mirrored_members(self) -> frozenset[str]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(MirroredMember.member_id).where(MirroredMember.group_id == self._group_id)
            )
            return frozenset(rows.all())

    async def _user_changes(self, link: str | None) -> _Round[Sequence[UserChange]]:
        if link is not None:
            try:
                round_ = await self._changes.user_changes(link)
                return _Round(round_.changes, round_.delta_link, round_.requests, full=False)
            except DeltaExpiredError:
                log.info("reconcile.users_link_expired")
        round_ = await self._changes.user_changes(None)
        return _Round(round_.changes, round_.delta_link, round_.requests, full=True)

    async def _enrolled(self) -> list[EnrolledPerson]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    Enrollment.subject_id,
                    Enrollment.subject_name,
                    Enrollment.profile_id,
                    Enrollment.mailbox,
                ).where(Enrollment.active.is_(True))
            )
            return [EnrolledPerson(*row) for row in rows.all()]

    async def _directory(
        self, changes: Iterable[UserChange], interest: set[str], *, full: bool
    ) -> tuple[dict[str, DirectoryPerson], int]:
        """The directory as it is now for every person of interest.

        The mirror with this round's changes applied; people never mirrored are read one by
        one (a member added by hand, someone just enrolled). After a full round, anyone it did
        not mention is read too: a full round does not report who was deleted meanwhile.
        """
        async with self._sessions() as session:
            rows = (await session.scalars(select(MirroredPerson))).all()
        directory = {row.id: _person(row) for row in rows if row.id in interest}
        seen: set[str] = set()
        for change in changes:
            if change.id in interest:
                seen.add(change.id)
                directory[change.id] = _changed(directory.get(change.id), change)
        unknown = interest - set(directory) if not full else interest - seen
        requests = 0
        for person_id in sorted(unknown):
            requests += 1
            directory[person_id] = await self._look_up(person_id)
        return directory, requests

    async def _look_up(self, person_id: str) -> DirectoryPerson:
        try:
            user = await self._people.get_user(person_id)
        except NotFoundError:
            return DirectoryPerson(person_id, AccountState.UNKNOWN, None)
        state = AccountState.ENABLED if user.account_enabled else AccountState.DISABLED
        return DirectoryPerson(
            person_id,
            state,
            (user.primary_smtp or "").lower() or None,
            tuple(a.lower() for a in user.mailbox_addresses),
            user.display_name,
        )

    async def _record(
        self,
        findings: Sequence[Finding],
        *,
        members: frozenset[str],
        directory: dict[str, DirectoryPerson],
        links: dict[str, str],
    ) -> tuple[list[Finding], frozenset[str], int]:
        """Store the mirror, the links and the findings in one commit; the news, the findings
        ignored as they are, and the count of findings resolved."""
        now = self._clock()
        news: list[Finding] = []
        ignored: set[str] = set()
        async with self._units() as work:
            session = work.session
            await _store_members(session, self._group_id, members)
            await _store_people(session, directory, now)
            for name, link in links.items():
                await session.merge(ReconcileLink(name=name, delta_link=link, updated_at=now))
            keys = [finding.key for finding in findings]
            rows = await session.scalars(
                select(DriftRecord).where(
                    DriftRecord.resolved_at.is_(None) | DriftRecord.key.in_(keys)
                )
            )
            stored = {row.key: row for row in rows.all()}
            for finding in findings:
                row = stored.pop(finding.key, None)
                if row is None:
                    session.add(_drift_record(finding, now))
                    news.append(finding)
                    continue
                if row.resolved_at is not None:  # back after it had gone: news again
                    row.resolved_at = None
                    row.first_seen_at = now
                    row.fingerprint = finding.fingerprint
                    row.facts = dict(finding.facts)
                    row.ignored_fingerprint = None
                    row.last_seen_at = now
                    news.append(finding)
                    continue
                if row.fingerprint != finding.fingerprint:
                    row.fingerprint = finding.fingerprint
                    row.facts = dict(finding.facts)
                    if row.ignored_fingerprint != finding.fingerprint:
                        news.append(finding)
                if row.ignored_fingerprint == finding.fingerprint:
                    ignored.add(finding.key)
                row.last_seen_at = now
            for gone in stored.values():
                gone.resolved_at = now
            if news:
                work.to_channel(Channel.IT, drift_news(news, len(findings)), key=_news_key(news))
        return news, frozenset(ignored), len(stored)


async def _store_members(session: AsyncSession, group_id: str, members: frozenset[str]) -> None:
    current = set(
        (
            await session.scalars(
                select(MirroredMember.member_id).where(MirroredMember.group_id == group_id)
            )
        ).all()
    )
    if current - members:
        await session.execute(
            delete(MirroredMember).where(
                MirroredMember.group_id == group_id,
                MirroredMember.member_id.in_(sorted(current - members)),
            )
        )
    session.add_all(
        MirroredMember(group_id=group_id, member_id=member) for member in sorted(members - current)
    )


async def _store_people(
    session: AsyncSession, directory: dict[str, DirectoryPerson], now: datetime
) -> None:
    stored = {row.id: row for row in (await session.scalars(select(MirroredPerson))).all()}
    for person in directory.values():
        row = stored.pop(person.id, None)
        if row is None:
            session.add(
                MirroredPerson(
                    id=person.id,
                    state=person.state.value,
                    primary_address=person.primary_address,
                    name=person.name,
                    updated_at=now,
                )
            )
        elif (row.state, row.primary_address, row.name) != (
            person.state.value,
            person.primary_address,
            person.name,
        ):
            row.state = person.state.value
            row.primary_address = person.primary_address
            row.name = person.name
            row.updated_at = now
    if stored:  # people no longer of interest are not mirrored
        await session.execute(delete(MirroredPerson).where(MirroredPerson.id.in_(list(stored))))


WHAT_IT_MEANS = {
    DriftKind.UNENROLLED_MEMBER: "in the sync group but not enrolled (added by hand?)",
    DriftKind.MISSING_MEMBER: "enrolled but not in the sync group (removed by hand?)",
    DriftKind.MAPPING_MISSING: "enrolled, but the scheduling mapping is gone or points elsewhere",
    DriftKind.LEAVER: "account disabled or deleted",
    DriftKind.MOVER: "primary address changed",
}
NEWS_LINES = 10


def drift_news(news: Sequence[Finding], open_count: int) -> Notification:
    """What IT reads: the new differences by kind, the first few by name."""
    counts = Counter(finding.kind for finding in news)
    lines = [
        f"**Access drift: {len(news)} new difference{'s' if len(news) != 1 else ''}** "
        f"({open_count} open in all)",
        "",
    ]
    for finding in news[:NEWS_LINES]:
        who = finding.name or finding.subject_id
        lines.append(f"- {who}: {WHAT_IT_MEANS[finding.kind]}")
    if len(news) > NEWS_LINES:
        lines.append(f"- and {len(news) - NEWS_LINES} more")
    lines += ["", "See them all with `syncwarden reconcile`."]
    kinds = ",".join(f"{kind.value}={count}" for kind, count in sorted(counts.items()))
    return Notification(NotificationKind.DRIFT_REPORT, None, "\n".join(lines), {"kinds": kinds})


def _news_key(news: Sequence[Finding]) -> str:
    """One message per set of news: the same news recorded again (it cannot be, but a retried
    commit could try) is the same message."""
    digest = hashlib.sha256(
        "\n".join(sorted(f"{f.key}:{f.fingerprint}" for f in news)).encode()
    ).hexdigest()
    return f"drift:{digest[:32]}"


def _mapping(mapping: Mapping) -> SchedulingMapping:
    return SchedulingMapping(mapping.profile_id, mapping.mailbox, mapping.active)


def _person(row: MirroredPerson) -> DirectoryPerson:
    address = row.primary_address
    return DirectoryPerson(
        row.id, AccountState(row.state), address, (address,) if address else (), row.name
    )


def _changed(before: DirectoryPerson | None, change: UserChange) -> DirectoryPerson:
    """``before`` with a delta round's news about the person applied (absent fields unchanged)."""
    if change.removed is not None:
        name = before.name if before else ""
        state = AccountState.DELETED
        return DirectoryPerson(
            change.id, state, before.primary_address if before else None, (), name
        )
    if change.account_enabled is not None:
        state = AccountState.ENABLED if change.account_enabled else AccountState.DISABLED
    elif before is not None and before.state is not AccountState.DELETED:
        state = before.state
    else:  # news of someone deleted before is news of their return
        state = AccountState.ENABLED
    primary = (change.primary_smtp or "").lower() or (before.primary_address if before else None)
    name = change.display_name or (before.name if before else "")
    return DirectoryPerson(change.id, state, primary, (primary,) if primary else (), name)


def _drift_record(finding: Finding, now: datetime) -> DriftRecord:
    return DriftRecord(
        key=finding.key,
        kind=finding.kind.value,
        subject_id=finding.subject_id,
        name=finding.name[:256],
        facts=dict(finding.facts),
        fingerprint=finding.fingerprint,
        first_seen_at=now,
        last_seen_at=now,
    )
