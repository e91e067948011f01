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
from datetime import datetime, timedelta
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
from syncwarden.core.settings import ReconcileSettings
from syncwarden.sync.drift import (
    PASSING_WHILE_UNDER_WAY,
    AccountState,
    DirectoryPerson,
    DriftKind,
    EnrolledPerson,
    Finding,
    SchedulingMapping,
    exceeds_valve,
    find_drift,
)
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.reconcile_records import (
    DriftRecord,
    MirroredMember,
    MirroredPerson,
    ReconcileLink,
)
from syncwarden.workflows.drift_digest import DIGEST_DETAIL, DriftDigest, DriftItem
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from syncwarden.workflows.queries import IS_OPEN
from syncwarden.workflows.records import Enrollment, Ticket
from syncwarden.workflows.repairs import AccessRepairs, Fix
from syncwarden.workflows.system_actors import LEAVER_REMOVAL, RECONCILIATION
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
    # Tickets the run opened by itself (leavers past their grace period, movers), by number.
    opened: tuple[str, ...] = ()
    # Leavers whose removal the valve held back: too many at once to do without asking.
    held: tuple[str, ...] = ()
    # People left out for now because a ticket of theirs is under way (see find_drift).
    under_way: int = 0

    def __str__(self) -> str:
        kinds = ", ".join(f"{count} {kind.value}" for kind, count in sorted(self.counts.items()))
        done = f", {len(self.opened)} tickets opened" if self.opened else ""
        held = f", {len(self.held)} removals held by the valve" if self.held else ""
        busy = f", {self.under_way} people with a ticket under way" if self.under_way else ""
        return (
            f"{len(self.findings)} differences ({kinds or 'none'}), {len(self.news)} new, "
            f"{self.resolved} resolved{done}{held}{busy}, {self.graph_requests} Graph requests"
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
        repairs: AccessRepairs | None = None,
        settings: ReconcileSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._units = units
        self._repairs = repairs
        self._settings = settings or ReconcileSettings()
        self._sessions = units.sessions
        self._changes = changes
        self._people = people
        self._mappings = mappings
        self._group_id = group_id.lower()
        self._clock = clock

    async def run(self, *, full: bool = False, allow_mass_removal: bool = False) -> ReconcileReport:
        """Bring the mirror up to date, compare, record what differs, and carry out what policy
        does without asking: a leaver's removal once the grace period is over (unless the valve
        holds it: ``allow_mass_removal`` is IT saying to go ahead), and following a mover."""
        links = {} if full else await self._links()
        members = await self._members(links.get(self._group_key))
        enrolled = await self._enrolled()
        under_way = await self._under_way()
        interest = set(members.value) | {person.subject_id for person in enrolled}
        users = await self._user_changes(links.get(USERS_LINK))
        directory, lookups = await self._directory(users.value, interest, full=users.full)
        mappings = {m.profile_id: _mapping(m) for m in await self._mappings.list_mappings()}
        findings = find_drift(
            members=members.value,
            enrolled=enrolled,
            mappings=mappings,
            directory=directory,
            under_way=under_way,
        )
        # What IT ignored with these very facts is left alone by the automatic fixes too (a
        # leaver on long leave whose access IT keeps, a mover IT wants to look at first).
        standing = await self._standing(findings)
        waiting = [f for f in findings if standing.get(f.key, (None, None))[1] != f.fingerprint]
        due, held = self._leavers_due(waiting, standing, len(enrolled))
        if allow_mass_removal:
            due, held = due + held, []
        opened = await self._act(waiting, due)
        news, ignored, resolved = await self._record(
            findings,
            members=members.value,
            directory=directory,
            links={self._group_key: members.link, USERS_LINK: users.link},
            opened=opened,
            held=held,
            under_way=under_way,
        )
        report = ReconcileReport(
            tuple(findings),
            tuple(news),
            ignored,
            resolved,
            members.requests + users.requests + lookups,
            full=members.full or users.full,
            counts=Counter(finding.kind for finding in findings),
            opened=tuple(opened),
            held=tuple(finding.name or finding.subject_id for finding in held),
            under_way=len(under_way),
        )
        log.info("reconcile.done", result=str(report))
        return report

    async def _standing(
        self, findings: Sequence[Finding]
    ) -> dict[str, tuple[datetime, str | None]]:
        """For each open leaver or mover finding already recorded: when it was first seen (a
        leaver's grace period counts from then) and the fingerprint IT ignored, if any."""
        automatic = (DriftKind.LEAVER, DriftKind.MOVER)
        keys = [finding.key for finding in findings if finding.kind in automatic]
        if not keys:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    DriftRecord.key, DriftRecord.first_seen_at, DriftRecord.ignored_fingerprint
                ).where(DriftRecord.key.in_(keys), DriftRecord.resolved_at.is_(None))
            )
            return {key: (seen, ignored) for key, seen, ignored in rows.all()}

    def _leavers_due(
        self,
        findings: Sequence[Finding],
        standing: dict[str, tuple[datetime, str | None]],
        enrolled: int,
    ) -> tuple[list[Finding], list[Finding]]:
        """Leavers whose grace period is over, split into those to remove now and those the
        valve holds back (all of them, when there are too many at once)."""
        if self._repairs is None:
            return [], []
        now = self._clock()
        grace = timedelta(days=self._settings.leaver_grace_days)
        due = [
            finding
            for finding in findings
            if finding.kind is DriftKind.LEAVER
            and now - standing.get(finding.key, (now, None))[0] >= grace
        ]
        if exceeds_valve(len(due), enrolled, max_share=self._settings.max_removal_share):
            log.warning("reconcile.valve_held", removals=len(due), enrolled=enrolled)
            return [], due
        return due, []

    async def _act(self, findings: Sequence[Finding], leavers: Sequence[Finding]) -> list[str]:
        """Open the tickets policy opens without asking; their numbers. A person with a ticket
        already open gets no second one, so a repeated run (or one after a crash) adds none."""
        if self._repairs is None:
            return []
        grace = f"{self._settings.leaver_grace_days:g}"
        automatic = [
            (
                Fix.END_ENROLLMENT,
                finding,
                LEAVER_REMOVAL,
                f"account {finding.fact('account') or 'gone'} for more than {grace} days "
                "(the grace period)",
            )
            for finding in leavers
        ]
        if self._settings.follow_movers:
            automatic += [
                (
                    Fix.UPDATE_ADDRESS,
                    finding,
                    RECONCILIATION,
                    f"primary address changed from {finding.fact('old_address')} to "
                    f"{finding.fact('new_address')}; calendar sync follows it",
                )
                for finding in findings
                if finding.kind is DriftKind.MOVER
            ]
        opened: list[str] = []
        for fix, finding, actor, reason in automatic:
            result = await self._repairs.carry_out(fix, finding.subject_id, actor, reason=reason)
            if result.created and result.ticket is not None:
                opened.append(result.ticket.ref)
        return opened

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
        """The active enrollments, each with whether its address followed the primary when it
        was chosen (the ticket that last set it recorded both)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    Enrollment.subject_id,
                    Enrollment.subject_name,
                    Enrollment.profile_id,
                    Enrollment.mailbox,
                    Ticket.subject_mail,
                    Enrollment.last_error_kind,
                )
                .outerjoin(Ticket, Ticket.id == Enrollment.updated_by_ticket)
                .where(Enrollment.active.is_(True))
            )
            return [
                EnrolledPerson(
                    subject_id,
                    name,
                    profile_id,
                    mailbox,
                    follows_primary=primary_then is None or primary_then.lower() == mailbox.lower(),
                    mailbox_missing=error_kind == FailureKind.NO_MAILBOX.value,
                )
                for subject_id, name, profile_id, mailbox, primary_then, error_kind in rows.all()
            ]

    async def _under_way(self) -> frozenset[str]:
        """The people with a ticket open: the ticket is changing their access right now."""
        async with self._sessions() as session:
            rows = await session.scalars(select(Ticket.subject_id).where(IS_OPEN).distinct())
            return frozenset(subject.lower() for subject in rows.all())

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
        opened: Sequence[str],
        held: Sequence[Finding],
        under_way: frozenset[str],
    ) -> tuple[list[Finding], frozenset[str], int]:
        """Store the mirror, the links and the findings in one commit; the news, the findings
        ignored as they are, and the count of findings resolved. A finding recorded before its
        person's ticket opened stays as it is until the ticket ends: the ticket decides."""
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
            gone = [
                row
                for row in stored.values()
                if row.subject_id.lower() not in under_way
                or row.kind not in PASSING_WHILE_UNDER_WAY
            ]
            for row in gone:
                row.resolved_at = now
            if news or opened or held:
                digest = drift_digest(
                    [finding for finding in news if finding.key not in ignored],
                    findings,
                    opened=opened,
                    held=held,
                    shown=self._settings.card_findings,
                )
                work.to_channel(
                    Channel.IT,
                    drift_notification(digest),
                    key=_news_key(news, opened, held),
                )
        return news, frozenset(ignored), len(gone)


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
        addresses = " ".join(person.addresses)
        if row is None:
            session.add(
                MirroredPerson(
                    id=person.id,
                    state=person.state.value,
                    primary_address=person.primary_address,
                    addresses=addresses,
                    name=person.name,
                    updated_at=now,
                )
            )
        elif (row.state, row.primary_address, row.addresses, row.name) != (
            person.state.value,
            person.primary_address,
            addresses,
            person.name,
        ):
            row.state = person.state.value
            row.primary_address = person.primary_address
            row.addresses = addresses
            row.name = person.name
            row.updated_at = now
    if stored:  # people no longer of interest are not mirrored
        await session.execute(delete(MirroredPerson).where(MirroredPerson.id.in_(list(stored))))


WHAT_IT_MEANS = {
    DriftKind.UNENROLLED_MEMBER: "in the sync group but not enrolled (added by hand?)",
    DriftKind.MISSING_MEMBER: "enrolled but not in the sync group (removed by hand?)",
    DriftKind.MAPPING_MISSING: "enrolled, but the scheduling mapping is gone or points elsewhere",
    DriftKind.MAILBOX_GONE: "enrolled, but the sync finds no mailbox (unlicensed or removed?)",
    DriftKind.LEAVER: "account disabled or deleted",
    DriftKind.MOVER: "primary address changed",
}


def drift_digest(
    news: Sequence[Finding],
    findings: Sequence[Finding],
    *,
    opened: Sequence[str] = (),
    held: Sequence[Finding] = (),
    shown: int = 5,
) -> DriftDigest:
    """The card's content: all open differences counted by kind, the first ``shown`` new ones
    with their fixes, and what the run did or held back by itself."""
    counts = Counter(finding.kind.value for finding in findings)
    held_reason = (
        f"{len(held)} leavers are past their grace period: more than the valve lets one run "
        "remove. Check the directory; if they really left, run "
        "`syncwarden reconcile --allow-mass-removal`."
        if held
        else ""
    )
    return DriftDigest(
        open_count=len(findings),
        counts=tuple(sorted(counts.items())),
        items=tuple(_item(finding) for finding in news[:shown]),
        more=max(0, len(news) - shown),
        opened=tuple(opened),
        held=tuple(finding.name or finding.subject_id for finding in held),
        held_reason=held_reason,
    )


def drift_notification(digest: DriftDigest) -> Notification:
    """The digest for the IT channel, with a plain-text version for logs and fallbacks."""
    lines = [f"Access drift: {len(digest.items) + digest.more} new ({digest.open_count} open)"]
    lines += [f"- {item.name}: {item.meaning}" for item in digest.items]
    if digest.more:
        lines.append(f"- and {digest.more} more (syncwarden reconcile lists them all)")
    if digest.opened:
        lines.append("Opened by reconciliation: " + ", ".join(digest.opened))
    if digest.held_reason:
        lines.append(digest.held_reason)
    return Notification(
        NotificationKind.DRIFT_REPORT, None, "\n".join(lines), {DIGEST_DETAIL: digest.to_json()}
    )


def _item(finding: Finding) -> DriftItem:
    return DriftItem(
        key=finding.key,
        fingerprint=finding.fingerprint,
        kind=finding.kind.value,
        name=finding.name or finding.subject_id,
        meaning=WHAT_IT_MEANS[finding.kind],
        facts=finding.facts,
        fixes=tuple(fix.value for fix in finding.fixes),
    )


def _news_key(news: Sequence[Finding], opened: Sequence[str], held: Sequence[Finding]) -> str:
    """One message per set of news: the same news recorded again (it cannot be, but a retried
    commit could try) is the same message. Removals held back are news of their own: the
    leavers were told as such before, and now the valve asks about them."""
    parts = [f"{f.key}:{f.fingerprint}" for f in news]
    parts += [f"held:{f.key}:{f.fingerprint}" for f in held]
    digest = hashlib.sha256("\n".join(sorted(parts) + sorted(opened)).encode()).hexdigest()
    return f"drift:{digest[:32]}"


def _mapping(mapping: Mapping) -> SchedulingMapping:
    return SchedulingMapping(mapping.profile_id, mapping.mailbox, mapping.active)


def _person(row: MirroredPerson) -> DirectoryPerson:
    address = row.primary_address
    addresses = tuple(row.addresses.split()) or ((address,) if address else ())
    return DirectoryPerson(row.id, AccountState(row.state), address, addresses, row.name)


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
    if change.proxy_addresses is not None:
        addresses = _smtp_addresses(change.proxy_addresses)
    else:
        addresses = before.addresses if before else ()
    if primary and primary not in addresses:
        addresses = (primary, *addresses)
    return DirectoryPerson(change.id, state, primary, addresses, name)


def _smtp_addresses(proxy_addresses: Iterable[str]) -> tuple[str, ...]:
    """The SMTP addresses among ``proxyAddresses`` (``SMTP:`` the primary, ``smtp:`` the rest;
    X500, SIP and the like reach no mailbox), lowercase, each once."""
    found: dict[str, None] = {}
    for entry in proxy_addresses:
        kind, _, address = entry.partition(":")
        if kind.lower() == "smtp" and address:
            found[address.strip().lower()] = None
    return tuple(found)


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
