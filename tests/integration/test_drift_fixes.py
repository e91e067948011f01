"""Fixing access drift, end to end against the sandbox tenant and through Teams: IT's Fix and
Ignore on the drift card (and only IT's), each fix a ticket carried out once, a leaver removed
after the grace period, a mover followed to the new address, and the valve holding back a mass
removal until IT says to go ahead."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.bot.cards import Verb
from syncwarden.connectors.scheduling.ports import Appointment, Mapping
from syncwarden.core.db import session_factory, write_transaction
from syncwarden.sandbox import directory_admin as admin
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.drift import DriftKind
from syncwarden.sync.engine import SyncReport
from syncwarden.sync.reconcile import ReconcileReport
from syncwarden.sync.reconcile_records import DriftRecord
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Enrollment, Step, Ticket
from syncwarden.workflows.repairs import Fix
from tests.support.enrollments import enroll
from tests.support.teams_surface import IT_CHANNEL, Post, TeamsSurface, teams_surface
from tests.support.workflow import PEOPLE, SYNC_GROUP


@dataclasses.dataclass
class World:
    teams: TeamsSurface
    sessions: async_sessionmaker[AsyncSession]

    @property
    def tenant(self) -> SandboxTenant:
        return self.teams.tenant

    def id_of(self, key: str) -> str:
        return self.tenant.seed.user_ids[PEOPLE[key]]

    def in_group(self, key: str) -> bool:
        group = self.tenant.seed.group_ids[SYNC_GROUP]
        return self.id_of(key) in self.tenant.group_member_ids(group)

    def take_out_by_hand(self, key: str) -> None:
        group = self.tenant.seed.group_ids[SYNC_GROUP]
        assert admin.remove_member_by_hand(self.tenant.state, group, self.id_of(key))

    def key_of(self, kind: DriftKind, key: str) -> str:
        return f"{kind.value}:{self.id_of(key)}"

    async def reconcile(self, **options: bool) -> tuple[ReconcileReport, list[Post]]:
        """A run, then the background work it queued (tickets, messages) carried out."""
        report = await self.teams.workflows.reconciler.run(**options)
        return report, await self.teams.settle()

    async def enroll(self, *keys: str) -> None:
        """Enrolled and mapped to their primary address, as a finished request leaves them
        (all are in the group already)."""
        for key in keys:
            user = await self.teams.m365.directory.get_user(self.id_of(key))
            mailbox = user.primary_smtp or PEOPLE[key]
            [row] = await enroll(self.sessions, self.tenant, PEOPLE[key], f"prof-{key}")
            async with write_transaction(self.sessions) as session:
                await session.execute(
                    update(Enrollment).where(Enrollment.id == row).values(mailbox=mailbox)
                )
            await self.teams.workflows.scheduling.upsert_mapping(f"prof-{key}", mailbox)

    async def mailbox_of(self, key: str) -> str | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(Enrollment.mailbox).where(
                    Enrollment.subject_id == self.id_of(key), Enrollment.active.is_(True)
                )
            )

    async def tickets_of(self, key: str) -> list[Ticket]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Ticket).where(Ticket.subject_id == self.id_of(key)).order_by(Ticket.id)
            )
            return list(rows.all())

    async def age_findings(self, days: float) -> None:
        """Time passes for the open findings (the grace period counts from first seen)."""
        async with write_transaction(self.sessions) as session:
            rows = (await session.scalars(select(DriftRecord))).all()
            for row in rows:
                row.first_seen_at = row.first_seen_at - dt.timedelta(days=days)

    async def sync(self, key: str) -> SyncReport:
        """One sync run for ``key`` (the worker's own path: request, then run the requested)."""
        worker = self.teams.workflows.sync.worker
        assert await worker.request_person(PEOPLE[key]) or await worker.request_person(
            (await self.mailbox_of(key)) or ""
        )
        [report] = await worker.run_requested()
        return report

    async def mapping(self, key: str) -> Mapping | None:
        mappings = await self.teams.workflows.scheduling.list_mappings()
        return next((m for m in mappings if m.profile_id == f"prof-{key}"), None)


@pytest.fixture
async def world(migrated_engine: AsyncEngine, tenant: SandboxTenant) -> AsyncIterator[World]:
    async with teams_surface(
        migrated_engine, tenant, provisioning={"remove_synced_events": True}
    ) as teams:
        yield World(teams, session_factory(migrated_engine))


def buttons(card: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every Action.Execute on the card, those in each finding's action set included."""
    stack: list[Any] = [card]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def drift_card(posts: list[Post]) -> dict[str, Any]:
    [card] = [
        post.card
        for post in posts
        if post.conversation == IT_CHANNEL and post.headline.startswith("Access drift")
    ]
    assert card is not None
    return card


def button(card: dict[str, Any], verb: str, finding: str, fix: str = "") -> dict[str, Any]:
    """What a click on the button sends (its data, without the verb)."""
    for action in buttons(card):
        data: dict[str, Any] = action["data"]
        if action["verb"] == verb and data["finding"] == finding and data.get("fix", "") == fix:
            return {name: value for name, value in data.items() if name != "verb"}
    raise AssertionError(f"no {verb} {fix} button for {finding}")


async def click(world: World, key: str, verb: str, data: dict[str, Any]) -> str:
    answer = await world.teams.click(key, verb, data, channel=IT_CHANNEL)
    return (
        str(answer["value"])
        if answer["type"] == "application/vnd.microsoft.activity.message"
        else str(answer)
    )


async def test_it_fixes_and_ignores_from_the_drift_card_and_nobody_else_may(world: World) -> None:
    """Avery, Rowan and Harper were put in the group by hand (nobody is enrolled yet)."""
    report, posts = await world.reconcile()
    assert {f.kind for f in report.findings} == {DriftKind.UNENROLLED_MEMBER}
    card = drift_card(posts)
    avery = world.key_of(DriftKind.UNENROLLED_MEMBER, "avery")
    rowan = world.key_of(DriftKind.UNENROLLED_MEMBER, "rowan")
    harper = world.key_of(DriftKind.UNENROLLED_MEMBER, "harper")
    adopt_avery = button(card, Verb.DRIFT_FIX, avery, "adopt")

    refused = await click(world, "sasha", Verb.DRIFT_FIX, adopt_avery)
    assert "only IT admins can fix access drift" in refused
    assert await world.tickets_of("avery") == []

    adopted = await click(world, "dana", Verb.DRIFT_FIX, adopt_avery)
    assert "opened: Adopt for Avery Quinlan" in adopted
    await world.teams.settle()
    assert await world.mailbox_of("avery") == PEOPLE["avery"]
    [ticket] = await world.tickets_of("avery")
    assert (ticket.kind, ticket.status) == ("enroll", "completed")
    assert ticket.requester_id == world.id_of("dana")

    again = await click(world, "dana", Verb.DRIFT_FIX, adopt_avery)
    assert "already enrolled" in again
    assert len(await world.tickets_of("avery")) == 1, "a second click has no second effect"

    ungrouped = await click(
        world, "emerson", Verb.DRIFT_FIX, button(card, Verb.DRIFT_FIX, rowan, "remove_from_group")
    )
    assert "opened: Remove from group for Rowan Ibarra" in ungrouped
    await world.teams.settle()
    assert not world.in_group("rowan")

    forged = {**button(card, Verb.DRIFT_FIX, harper, "adopt"), "fix": "end_enrollment"}
    assert "not a fix for this difference" in await click(world, "dana", Verb.DRIFT_FIX, forged)
    ignored = await click(world, "dana", Verb.DRIFT_IGNORE, button(card, Verb.DRIFT_IGNORE, harper))
    assert "stays quiet until it changes" in ignored

    report, posts = await world.reconcile()
    assert [f.key for f in report.findings] == [harper]
    assert report.ignored == {harper}
    assert report.resolved == 2
    assert not drift_card_posted(posts)
    gone = await click(world, "dana", Verb.DRIFT_FIX, button(card, Verb.DRIFT_FIX, rowan, "adopt"))
    assert "no longer there" in gone


def drift_card_posted(posts: list[Post]) -> bool:
    return any(p.headline.startswith("Access drift") for p in posts if p.conversation == IT_CHANNEL)


async def test_each_repair_of_an_enrolled_person_is_one_ticket_carried_out_once(
    world: World,
) -> None:
    await world.enroll("avery", "rowan")
    admin.remove_member_by_hand(
        world.tenant.state, world.tenant.seed.group_ids[SYNC_GROUP], world.id_of("avery")
    )
    await world.teams.workflows.scheduling.deactivate_mapping("prof-rowan")
    report, _ = await world.reconcile()
    assert {(f.kind, f.subject_id) for f in report.findings} >= {
        (DriftKind.MISSING_MEMBER, world.id_of("avery")),
        (DriftKind.MAPPING_MISSING, world.id_of("rowan")),
    }
    desk = world.teams.workflows.drift
    it = Person(world.id_of("dana"), "Dana Whitfield", PEOPLE["dana"])
    readd = await desk.fix(world.key_of(DriftKind.MISSING_MEMBER, "avery"), "readd", it)
    remap = await desk.fix(world.key_of(DriftKind.MAPPING_MISSING, "rowan"), "remap", it)
    assert "opened: Re-add for Avery Quinlan" in readd
    assert "opened: Re-map for Rowan Ibarra" in remap
    await world.teams.settle()
    assert world.in_group("avery")
    mapping = await world.mapping("rowan")
    assert mapping is not None and mapping.active
    report, _ = await world.reconcile()
    assert report.findings == () or all(
        f.subject_id not in (world.id_of("avery"), world.id_of("rowan")) for f in report.findings
    )
    assert [t.kind for t in await world.tickets_of("avery")] == ["readd"]

    admin.remove_member_by_hand(
        world.tenant.state, world.tenant.seed.group_ids[SYNC_GROUP], world.id_of("rowan")
    )
    await world.reconcile()
    ended = await desk.fix(world.key_of(DriftKind.MISSING_MEMBER, "rowan"), "end_enrollment", it)
    assert "opened: End enrollment for Rowan Ibarra" in ended
    await world.teams.settle()
    assert await world.mailbox_of("rowan") is None


async def test_a_leaver_keeps_access_through_the_grace_period_then_is_removed_and_it_told(
    world: World,
) -> None:
    await world.enroll("avery", "rowan")
    await world.reconcile()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    await world.teams.workflows.sync.appointments.upsert(
        "prof-avery", [Appointment("A-1", "Client", start, start + dt.timedelta(hours=1))]
    )
    assert (await world.sync("avery")).created == 1
    admin.set_enabled(world.tenant.state, world.id_of("avery"), False)
    report, _ = await world.reconcile()
    assert [f.kind for f in report.findings if f.subject_id == world.id_of("avery")] == [
        DriftKind.LEAVER
    ]
    assert report.opened == () and await world.tickets_of("avery") == []

    await world.age_findings(days=7)
    mark = world.teams.mark()
    report, _ = await world.reconcile()
    [ref] = report.opened
    [ticket] = await world.tickets_of("avery")
    assert (ticket.ref, ticket.kind, ticket.status) == (ref, "remove", "completed")
    assert ticket.requester_id == "syncwarden:leaver"
    async with world.sessions() as session:
        rows = await session.execute(
            select(Step.name, Step.result).where(Step.ticket_id == ticket.id)
        )
        steps: dict[str, Any] = {name: result for name, result in rows.all()}
    assert steps["remove_synced_events"] == {"removed": 1}, "the pushed event goes, as configured"
    assert not world.in_group("avery")
    assert await world.mailbox_of("avery") is None
    told = world.teams.posts(since=mark)
    assert any(ref in str(p.body) for p in told if p.conversation == IT_CHANNEL), "IT is told"
    assert not [p for p in told if p.conversation == "a:avery"], "a leaver is not messaged"

    report, _ = await world.reconcile()
    assert report.opened == () and len(await world.tickets_of("avery")) == 1
    assert all(f.subject_id != world.id_of("avery") for f in report.findings)


async def test_a_leaver_back_within_the_grace_period_keeps_access(world: World) -> None:
    await world.enroll("avery", "rowan")
    await world.reconcile()
    admin.set_enabled(world.tenant.state, world.id_of("avery"), False)
    await world.reconcile()
    admin.set_enabled(world.tenant.state, world.id_of("avery"), True)
    await world.age_findings(days=30)
    report, _ = await world.reconcile()
    assert report.opened == () and await world.mailbox_of("avery") == PEOPLE["avery"]


async def test_a_mover_is_followed_to_the_new_address_and_their_sync_with_them(
    world: World,
) -> None:
    await world.enroll("avery", "rowan")
    await world.teams.answer("avery", "help")  # Avery has a chat with the bot
    await world.reconcile()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)
    await world.teams.workflows.sync.appointments.upsert(
        "prof-avery", [Appointment("A-1", "Client", start, start + dt.timedelta(hours=1))]
    )
    before = await world.sync("avery")
    assert (before.ok, before.created) == (True, 1)

    admin.change_primary_address(world.tenant.state, world.id_of("avery"), "avery.q@example.edu")
    report, posts = await world.reconcile()
    [ref] = report.opened
    [ticket] = await world.tickets_of("avery")
    assert (ticket.ref, ticket.kind, ticket.status) == (ref, "change", "completed")
    assert ticket.requester_id == "syncwarden:reconcile"
    assert await world.mailbox_of("avery") == "avery.q@example.edu"
    mapping = await world.mapping("avery")
    assert mapping is not None and mapping.mailbox == "avery.q@example.edu"
    to_avery = [p.text for p in posts if p.conversation == "a:avery"]
    assert any("now goes to avery.q@example.edu" in text for text in to_avery), to_avery

    await world.teams.workflows.sync.appointments.upsert(
        "prof-avery",
        [
            Appointment("A-1", "Client", start, start + dt.timedelta(hours=1)),
            Appointment(
                "A-2", "Client", start + dt.timedelta(hours=2), start + dt.timedelta(hours=3)
            ),
        ],
    )
    after = await world.sync("avery")
    assert (after.ok, after.created, after.recreated) == (True, 1, 0), after
    pushed = await world.teams.m365.calendar.tagged_events(
        world.id_of("avery"), start - dt.timedelta(days=1), start + dt.timedelta(days=2)
    )
    assert len(pushed) == 2, "the same mailbox has both, nothing pushed twice"
    report, _ = await world.reconcile()
    assert all(f.subject_id != world.id_of("avery") for f in report.findings)


async def test_the_valve_holds_a_mass_removal_until_it_says_go_ahead(world: World) -> None:
    await world.enroll("avery", "rowan")
    await world.reconcile()
    for key in ("avery", "rowan"):
        admin.set_enabled(world.tenant.state, world.id_of(key), False)
    await world.reconcile()
    await world.age_findings(days=8)
    report, posts = await world.reconcile()
    assert report.opened == () and sorted(report.held) == ["Avery Quinlan", "Rowan Ibarra"]
    card = drift_card(posts)
    assert "--allow-mass-removal" in str(card)
    assert await world.tickets_of("avery") == [] and world.in_group("avery")

    report, _ = await world.reconcile(allow_mass_removal=True)
    assert len(report.opened) == 2 and report.held == ()
    assert not world.in_group("avery") and not world.in_group("rowan")


async def test_it_asks_for_reconciliation_in_chat_and_gets_the_open_differences(
    world: World,
) -> None:
    refused = await world.teams.answer("sasha", "reconcile")
    assert "IT admins" in refused.text
    answer = await world.teams.answer("dana", "reconcile now")
    assert answer.headline == "Access drift: open differences"
    shown = {data["finding"] for data in (b["data"] for b in buttons(answer.card or {}))}
    assert shown == {
        world.key_of(DriftKind.UNENROLLED_MEMBER, key) for key in ("avery", "rowan", "harper")
    }


async def test_someone_enrolled_on_an_alias_is_not_moved_when_their_primary_changes(
    world: World,
) -> None:
    """Avery asked for sync into her alias; her primary address changing later is not a move
    while the alias still reaches her mailbox."""
    service = world.teams.workflows.service
    avery = Person(world.id_of("avery"), "Avery Quinlan", PEOPLE["avery"])
    casey = Person(world.id_of("casey"), "Casey Lindqvist", PEOPLE["casey"])
    asked = await service.request_enrollment(avery, mailbox="aquinlan@example.edu")
    assert asked.ticket is not None, asked
    decided = await service.decide(asked.ticket.ref, casey, approve=True)
    assert decided.ok, decided
    await world.teams.settle()
    assert await world.mailbox_of("avery") == "aquinlan@example.edu"
    report, _ = await world.reconcile()
    assert all(f.subject_id != world.id_of("avery") for f in report.findings), report.findings

    admin.change_primary_address(world.tenant.state, world.id_of("avery"), "avery.q@example.edu")
    report, _ = await world.reconcile()
    assert all(f.subject_id != world.id_of("avery") for f in report.findings), report.findings
    assert report.opened == () and await world.mailbox_of("avery") == "aquinlan@example.edu"


async def test_a_mailbox_the_sync_cannot_find_is_drift_that_it_may_end(world: World) -> None:
    """Harper's account is fine but she has no mailbox: the directory delta does not say so,
    the sync's mailbox calls do, and reconciliation turns that into a finding."""
    await world.enroll("avery", "harper")
    report = await world.sync("harper")
    assert not report.ok
    result, _ = await world.reconcile()
    [gone] = [f for f in result.findings if f.kind is DriftKind.MAILBOX_GONE]
    assert gone.subject_id == world.id_of("harper") and gone.fixes == (Fix.END_ENROLLMENT,)
    dana = Person(world.id_of("dana"), "Dana Whitfield", PEOPLE["dana"])
    ended = await world.teams.workflows.drift.fix(gone.key, "end_enrollment", dana)
    assert "opened: End enrollment for" in ended
    await world.teams.settle()
    assert await world.mailbox_of("harper") is None
    ref = ended.split(" ", 1)[0]
    ended_ticket = await world.teams.workflows.service.get_ticket(ref)
    assert ended_ticket is not None and ended_ticket.status == "completed", (
        "a mailbox that cannot be reached has no events to remove: the removal completes"
    )


async def test_a_leaver_it_ignored_keeps_access_until_their_facts_change(world: World) -> None:
    """On long leave, say: IT ignores the finding and the grace period ends without a removal.
    Deleted instead of disabled is new facts: the removal follows at once (the grace period
    counts from when they first left)."""
    await world.enroll("avery", "rowan")
    await world.reconcile()
    admin.set_enabled(world.tenant.state, world.id_of("avery"), False)
    await world.reconcile()
    dana = Person(world.id_of("dana"), "Dana Whitfield", PEOPLE["dana"])
    leaver = world.key_of(DriftKind.LEAVER, "avery")
    assert "stays quiet" in await world.teams.workflows.drift.ignore(leaver, "", dana)
    await world.age_findings(days=30)
    report, _ = await world.reconcile()
    assert report.opened == () and await world.mailbox_of("avery") is not None

    admin.soft_delete(world.tenant.state, world.id_of("avery"))
    report, _ = await world.reconcile()
    assert len(report.opened) == 1 and await world.mailbox_of("avery") is None


async def test_a_click_signed_with_one_of_the_service_s_own_names_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service files its own tickets under ``syncwarden:…`` names, which skip the checks
    made of people: no sender may carry one."""
    await world.reconcile()
    monkeypatch.setitem(PEOPLE, "forger", "forger@example.edu")
    monkeypatch.setitem(world.tenant.seed.user_ids, "forger@example.edu", "syncwarden:cli:x")
    finding = world.key_of(DriftKind.UNENROLLED_MEMBER, "avery")
    data = {"finding": finding, "fix": "adopt", "seen": ""}
    answer = await click(world, "forger", Verb.DRIFT_FIX, data)
    assert "can't tell who sent that" in answer
    assert await world.tickets_of("avery") == []
