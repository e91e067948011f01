"""Two `syncwarden serve` replicas on one PostgreSQL database: each scheduled effect, once.

Issue 12, item 11: two replicas both ran ``sync.subscriptions``, so one mailbox got two Graph
subscriptions (one orphaned at Graph) and the other replica's job died on a primary-key
violation. Here two real ``serve`` processes share a migrated, fresh PostgreSQL database and the
sandbox tenant served by this test, with every job on short intervals (the sync runs every 30 s,
the approval check every 6 s, the credential scan every 7 s; the weekly digest is due at start
because no run of it is on record). The test follows their log lines, then stops both with
SIGTERM and counts each effect where it lands: Graph subscriptions and pushed events at the
sandbox, messages at a stand-in Bot Framework connector, runs in the logs and ``/metrics``.

The first subscription pass is the race of the issue, made certain: the load balancer in front
of the replicas (Graph's notification URL) holds the pass's first validation handshake until the
other replica's trigger has fired too. With the job's lock, that replica skips; without it, both
create a subscription for the same mailbox.

Not covered, because no setting shortens them: ``sync.failure_digest`` (at least every 5 minutes)
never fires here, and ``sync.subscriptions`` (hourly) runs 15 s after each replica starts, which
is why one replica is restarted half-way (the restart also proves the weekly digest is not re-run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.background import WEEKLY_DIGEST, Job, logged_job
from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.connectors.graph.calendar import source_id_of
from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ports import Appointment, Profile
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.job_runs import last_run
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_watch import CredentialAlert
from syncwarden.sync.records import SyncState
from syncwarden.sync.subscriptions import SubscriptionRecord
from syncwarden.workflow_wiring import build_workflows
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import Channel, Notification, NotificationKind, Person
from syncwarden.workflows.unit_of_work import UnitsOfWork
from tests.conftest import POSTGRES_ENV
from tests.support.enrollments import enroll
from tests.support.m365 import SYNCWARDEN_APP, sandbox_settings
from tests.support.process import free_port
from tests.support.recorder import ConnectorRecorder, RecordedRequest
from tests.support.replicas import FrontDoor, LogBook, LogLine, Replica, replica_environment

pytestmark = pytest.mark.skipif(
    POSTGRES_ENV not in os.environ,
    reason=f"replicas share one PostgreSQL database; set {POSTGRES_ENV} to run this test",
)

SUBSCRIPTIONS = "sync.subscriptions"
DIGEST = "credentials.weekly_digest"
# The app's access policy reaches this group's members; it is also the sync group.
SYNC_GROUP = "Calendar Sync"
PEOPLE = {
    "avery": "avery.quinlan@example.edu",
    "rowan": "rowan.ibarra@example.edu",
    "blake": "blake.okonkwo-reyes@example.edu",
}
SASHA = "sasha.verhoeven@example.edu"  # asks for sync; the request waits for approval
APPROVERS = ("casey.lindqvist@example.edu", "emerson.tal@example.edu")
WATCHED_APPS = ("Parking Permits", "Library Kiosk Sync")  # expiring in a day, and expired
IT_NOTE = "Two replicas: the IT channel hears this once"
AVERY_NOTE = "Two replicas: Avery hears this once"
# Bounds for failure only; every wait ends on an event.
START_LIMIT = 45.0
STEP_LIMIT = 40.0


@dataclass
class Seeded:
    """What the test put in place before the replicas start, to count their effects against."""

    sessions: async_sessionmaker[AsyncSession]
    enrollments: dict[str, int]
    appointments: dict[str, list[str]]
    ticket_ref: str


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_replicas_do_each_scheduled_thing_once(
    database_url: str,
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both replicas run every job; each effect lands once, and a restart repeats nothing."""
    # Graph waits 10 s for a validation handshake; the front door holds one until the other
    # replica's trigger fires, which a slow start can put further apart than that.
    monkeypatch.setattr("syncwarden.sandbox.graph_subscriptions.VALIDATION_TIMEOUT", START_LIMIT)
    book = LogBook()
    hold_validations = asyncio.Event()
    ports = {"a": free_port(), "b": free_port()}
    async with contextlib.AsyncExitStack() as stack:
        recorder = await ConnectorRecorder().start()
        stack.push_async_callback(recorder.close)
        front = await FrontDoor(
            [f"http://127.0.0.1:{port}" for port in ports.values()],
            on_change=book.changed,
            hold=hold_validations,
        ).start()
        stack.push_async_callback(front.close)
        seeded = await seed(migrated_engine, tenant, recorder.url)
        settings = replica_settings(tenant, notification_url=front.url)
        env = {
            name: replica_environment(tenant, database_url, port=port, **settings)
            for name, port in ports.items()
        }
        replicas: dict[str, Replica] = {}

        async def start(name: str, settings_of: str) -> Replica:
            replicas[name] = await Replica.start(name, env[settings_of], book, cwd=tmp_path)
            stack.push_async_callback(replicas[name].kill)
            return replicas[name]

        runs = await exercise_the_pair(book, seeded, front, hold_validations, tenant, start, stack)
        notification_url = front.url

    assert_no_errors(book)
    # Every job ran at least twice on the pair; the weekly digest once (a, b, the restarted b).
    for job in ("approvals.check_pending", "credentials.scan", "sync.run", "sync.requested"):
        assert runs[job] >= 2, (job, runs)
    assert runs[DIGEST] == 1, runs
    assert len(finished(book, SUBSCRIPTIONS)) >= 2, "the first pass, and the restarted replica's"
    await assert_one_subscription_per_mailbox(tenant, seeded, notification_url)
    assert_each_appointment_pushed_once(book, tenant, seeded)
    await assert_each_message_delivered_once(book, tenant, seeded, recorder)
    # The weekly digest: due at start (no run on record), run once on the pair and not again by
    # the restarted replica (its message is counted with the others above).
    assert len(book.where("job.done", job=DIGEST)) == 1, job_story(book, DIGEST)
    assert not book.where(None, job=DIGEST, replica="b2"), job_story(book, DIGEST)
    assert await last_run(migrated_engine, DIGEST) is not None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_calendar_job_runs_once_per_due_time_when_the_replicas_take_turns(
    database_url: str, migrated_engine: AsyncEngine
) -> None:
    """Both replicas found the weekly digest overdue at start; the second's trigger fires after
    the first's run has finished and released the lock. The lock alone would let it run again;
    the run on record since the due time makes it a skip."""
    other = create_engine(database_url)
    fired: list[str] = []

    def digest(replica: str) -> Job:
        async def run() -> None:
            fired.append(replica)

        return Job(DIGEST, 7 * 24 * 60, run, cron=WEEKLY_DIGEST)

    try:
        await logged_job(digest("a"), migrated_engine, timezone="Europe/London")()
        await logged_job(digest("b"), other, timezone="Europe/London")()
    finally:
        await other.dispose()
    assert fired == ["a"]
    assert await last_run(migrated_engine, DIGEST) is not None


async def exercise_the_pair(
    book: LogBook,
    seeded: Seeded,
    front: FrontDoor,
    hold_validations: asyncio.Event,
    tenant: SandboxTenant,
    start: Callable[[str, str], Awaitable[Replica]],
    stack: contextlib.AsyncExitStack,
) -> Counter[str]:
    """Start replicas a and b, wait for every job to have acted, restart b (as b2), stop both
    with SIGTERM; the runs each job made on the pair, from the replicas' ``/metrics``."""
    runs: Counter[str] = Counter()
    a, b = await start("a", "a"), await start("b", "b")
    await book.wait_until(
        lambda: all(book.where("syncwarden.started", replica=r.name) for r in (a, b)),
        "both replicas listening",
        limit_seconds=START_LIMIT,
    )
    # The first subscription pass (15 s after each start): its validation handshakes wait at the
    # front door until the other replica's trigger has fired too (it skips, or it is creating
    # as well). Graph gives a handshake 10 s, so this runs beside the steps below.
    released = asyncio.create_task(release_when_both_fired(book, front, hold_validations))
    stack.callback(released.cancel)

    # Each person's first run has pushed their appointments.
    await book.wait_until(
        lambda: all(ran(book, i) for i in seeded.enrollments.values()),
        "everyone's first sync run",
        limit_seconds=STEP_LIMIT,
    )
    # Avery gets an appointment, which a later periodic run pushes. "Sync now" for Rowan,
    # twice: served by sync.requested (sync.run skips anyone who started within 15 s).
    pushed_from = len(book.lines)
    seeded.appointments["avery"].append(await add_appointment(seeded.sessions, "avery", 9))
    for _ in range(2):
        mark = len(book.lines)
        await request_sync(seeded.sessions, seeded.enrollments["rowan"])
        await book.wait_until(
            logged_since(book, mark, "job.done", job="sync.requested"),
            "a requested run serving Rowan",
            limit_seconds=STEP_LIMIT,
        )

    await released
    await book.wait_until(
        lambda: (
            len(finished(book, SUBSCRIPTIONS)) >= 1
            and len(finished(book, SUBSCRIPTIONS))
            + len(book.where("job.skipped", job=SUBSCRIPTIONS))
            >= 2
        ),
        "the first subscription pass on the pair",
        limit_seconds=STEP_LIMIT,
    )
    assert held_at_graph(tenant) == Counter(mailboxes(tenant).values()), (
        "right after the first pass: one subscription per enrolled mailbox, none orphaned: "
        f"{held_at_graph(tenant)}\n{job_story(book, SUBSCRIPTIONS)}"
    )

    # Restart b: its subscription pass runs again 15 s after it starts; the weekly digest, on
    # record, does not.
    runs.update(await b.job_runs())
    assert await b.terminate() == 0, book.tail()
    b2 = await start("b2", "b")
    await book.wait_until(
        lambda: any(
            line.get("enrollment") == seeded.enrollments["avery"] and line.get("created", 0) >= 1
            for line in book.where("sync.run", since=pushed_from)
        ),
        "a periodic run pushing Avery's new appointment",
        limit_seconds=STEP_LIMIT,
    )
    await book.wait_until(
        lambda: bool(finished(book, SUBSCRIPTIONS, replica="b2")),
        "the restarted replica's subscription pass",
        limit_seconds=START_LIMIT,
    )
    for replica in (a, b2):
        runs.update(await replica.job_runs())
    for replica in (a, b2):
        assert await replica.terminate() == 0, book.tail()
    for name in ("a", "b", "b2"):
        assert book.where("syncwarden.stopped", replica=name), f"{name} did not stop cleanly"
    return runs


def assert_no_errors(book: LogBook) -> None:
    """Nothing went wrong on any replica: no unexpected error, no duplicate key, no sync run
    that lost its person to another replica."""
    errors = [line.fields for line in book.lines if line.get("level") in ("error", "critical")]
    assert errors == [], book.tail()
    raw = "".join(text for texts in book.raw.values() for text in texts)
    for sign in ("UniqueViolation", "duplicate key", "IntegrityError"):
        assert sign not in raw, f"{sign} in a replica's log\n{book.tail()}"
    assert not book.where("sync.lease_lost"), "two replicas ran one person's sync at once"


async def assert_one_subscription_per_mailbox(
    tenant: SandboxTenant, seeded: Seeded, notification_url: str
) -> None:
    """Graph holds one subscription per enrolled mailbox, ours, and they are the ones we keep."""
    held = tenant.subscriptions.subscriptions.values()
    assert held_at_graph(tenant) == Counter(mailboxes(tenant).values())
    async with seeded.sessions() as session:
        records = (await session.scalars(select(SubscriptionRecord))).all()
    assert {r.mailbox_id: r.subscription_id for r in records} == {s.user_id: s.id for s in held}
    assert {s.notification_url for s in held} == {notification_url}


def assert_each_appointment_pushed_once(
    book: LogBook, tenant: SandboxTenant, seeded: Seeded
) -> None:
    """One event per appointment in each mailbox, created once: no two replicas ran one person's
    sync at the same time (a repeated create would also show as a refused transaction id)."""
    for key, upn in PEOPLE.items():
        pushed = Counter(
            sid
            for event in tenant.state.mailbox_events(tenant.seed.user_ids[upn]).values()
            if (sid := source_id_of({"singleValueExtendedProperties": event.extended}))
        )
        assert sorted(pushed) == sorted(seeded.appointments[key]), (key, pushed)
        assert set(pushed.values()) == {1}, (key, pushed)
        created = sum(
            int(line.get("created", 0))
            for line in book.where("sync.run")
            if line.get("enrollment") == seeded.enrollments[key]
        )
        assert created == len(seeded.appointments[key]), (key, created)
    refused = [
        (r.method, r.path, r.status)
        for r in tenant.requests
        if r.method == "POST" and r.path.lower().endswith("/events") and (r.status or 0) >= 400
    ]
    assert refused == [], "an event create was repeated"


async def assert_each_message_delivered_once(
    book: LogBook, tenant: SandboxTenant, seeded: Seeded, recorder: ConnectorRecorder
) -> None:
    """Every outbox row was claimed once and posted once: the seeded notes, each credential
    alert, the approval reminders, the weekly digest."""
    async with seeded.sessions() as session:
        outbox = (await session.scalars(select(OutboxMessage))).all()
        alert_keys = (await session.scalars(select(CredentialAlert.key))).all()
    again = [(m.key, m.state, m.attempts) for m in outbox if m.state != "sent" or m.attempts != 1]
    assert again == [], "every message sent, at the first claim"
    posts = [r for r in recorder.requests if r.method == "POST"]
    assert len(posts) == len([m for m in outbox if m.target in ("user", "channel")]), (
        "one connector post per outbox message"
    )
    texts = [text_of(post) for post in posts]
    assert texts.count(IT_NOTE) == 1 and texts.count(AVERY_NOTE) == 1
    assert len(alert_keys) >= 1 + len(WATCHED_APPS), alert_keys
    for key in alert_keys:
        cards = [post for post in posts if f'"{key}"' in json.dumps(post.body)]
        assert len(cards) == 1, f"credential alert {key}: {len(cards)} cards"
    reminders = [m.key for m in outbox if ":approval_reminder:" in m.key]
    approvers = [tenant.seed.user_ids[upn] for upn in APPROVERS]
    assert sorted(reminders) == sorted(
        [f"{seeded.ticket_ref}:approval_reminder:{approver}" for approver in approvers]
        + [f"{seeded.ticket_ref}:approval_reminder:channel"]
    ), reminders
    reminded = sum(
        int((line.get("result") or {}).get("reminded", 0))
        for line in book.where("job.done", job="approvals.check_pending")
    )
    assert reminded == 1, "the waiting ticket is reminded once on the pair"
    assert len([m for m in outbox if m.key.startswith("credential-digest:")]) == 1
    assert len([text for text in texts if text.startswith("**Credentials expiring")]) == 1


def replica_settings(tenant: SandboxTenant, *, notification_url: str) -> dict[str, str]:
    """Every job on, on the shortest intervals the settings allow that keep the test's timing
    certain: sync every 30 s (so it skips anyone synced in the last 15 s, longer than the 10 s
    poll of requested syncs), approval check every 6 s, credential scan every 7.2 s."""
    return {
        "GRAPH__SYNC_GROUP_ID": tenant.seed.group_ids[SYNC_GROUP],
        "APPROVALS__APPROVERS_GROUP_ID": tenant.seed.group_ids["Calendar Sync Approvers"],
        "APPROVALS__REMINDER_HOURS": "0.0002",  # under a second: the waiting ticket is due
        "ALERTS__WATCH_APP_IDS": json.dumps([tenant.seed.app_ids[app] for app in WATCHED_APPS]),
        "SCHEDULER__TIMEZONE": "Europe/London",
        "SCHEDULER__SYNC_INTERVAL_MINUTES": "0.5",
        "SCHEDULER__SYNC_JITTER_SECONDS": "0",
        "SCHEDULER__APPROVAL_CHECK_MINUTES": "0.1",
        "SCHEDULER__CREDENTIAL_SCAN_HOURS": "0.002",
        "SYNC__NOTIFICATION_URL": notification_url,
        "SYNC__FAILURE_DIGEST_MINUTES": "5",  # the shortest allowed; it never fires here
        # A subscription create waits while its handshake is held at the front door.
        "GRAPH__TIMEOUT_SECONDS": str(START_LIMIT + 15),
    }


async def seed(engine: AsyncEngine, tenant: SandboxTenant, connector_url: str) -> Seeded:
    """Three enrolled people with appointments, an own-app secret ending in two days, the Teams
    conversations (served by the recorder), two queued messages and a ticket awaiting approval."""
    sessions = session_factory(engine)
    tenant.add_group_member(tenant.seed.group_ids[SYNC_GROUP], PEOPLE["blake"])
    enrollments = {
        key: (await enroll(sessions, tenant, upn, f"P-{key}", at_primary=True))[0]
        for key, upn in PEOPLE.items()
    }
    appointments = {
        key: [await add_appointment(sessions, key, day) for day in (1, 2)] for key in PEOPLE
    }
    tenant.add_secret(
        tenant.seed.app_ids[SYNCWARDEN_APP], "two-replicas-secret", end_days=2, display_name="soon"
    )
    await seed_conversations(sessions, tenant, connector_url)
    await seed_outbox(sessions, tenant)
    ticket_ref = await seed_waiting_ticket(tenant, sessions)
    return Seeded(sessions, enrollments, appointments, ticket_ref)


# -- helpers -------------------------------------------------------------------------------------


async def release_when_both_fired(book: LogBook, front: FrontDoor, hold: asyncio.Event) -> None:
    """Open the front door once both replicas' subscription triggers have fired: one replica
    holds the job's lock (its handshake waits here) and the other skipped, or, without the lock,
    both are creating subscriptions (two handshakes wait)."""
    await book.wait_until(
        lambda: bool(book.where("job.skipped", job=SUBSCRIPTIONS)) or front.held >= 2,
        "both replicas' first sync.subscriptions trigger",
        limit_seconds=START_LIMIT,
    )
    hold.set()


def finished(book: LogBook, job: str, *, replica: str | None = None) -> list[LogLine]:
    """Runs of ``job`` that ended, well or not (a run that only skipped is not among them)."""
    return book.where("job.done", job=job, replica=replica) + book.where(
        "job.failed", job=job, replica=replica
    )


def job_story(book: LogBook, job: str) -> str:
    """What each replica logged about ``job``, its failures' errors included, for a message."""

    def error(line: LogLine) -> str:
        causes = [
            text.strip()[:200]
            for text in str(line.get("exception") or "").splitlines()
            if text.startswith(("sqlalchemy.exc.", "asyncpg.exceptions."))
        ]
        return causes[-1] if causes else ""

    return "\n".join(
        f"{line.replica}: {line.event} {line.get('result') or line.get('reason') or ''}"
        f"{error(line)}"
        for line in book.where(None, job=job)
    )


def logged_since(book: LogBook, mark: int, event: str, *, job: str) -> Callable[[], bool]:
    """Whether ``event`` for ``job`` has been logged since line ``mark``, to wait on."""
    return lambda: bool(book.where(event, job=job, since=mark))


def ran(book: LogBook, enrollment_id: int) -> bool:
    return any(line.get("enrollment") == enrollment_id for line in book.where("sync.run"))


def mailboxes(tenant: SandboxTenant) -> dict[str, str]:
    return {key: tenant.seed.user_ids[upn] for key, upn in PEOPLE.items()}


def held_at_graph(tenant: SandboxTenant) -> Counter[str]:
    """Subscriptions the sandbox holds, by mailbox (a mailbox counted twice has an orphan)."""
    return Counter(sub.user_id for sub in tenant.subscriptions.subscriptions.values())


def text_of(post: RecordedRequest) -> str:
    body: Any = post.body
    return str(body.get("text") or "") if isinstance(body, dict) else ""


async def add_appointment(sessions: async_sessionmaker[AsyncSession], key: str, day: int) -> str:
    start = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) + timedelta(
        days=day
    )
    appointment = Appointment(
        f"{key}-{day}", f"Client {day}", start, start + timedelta(minutes=50), "Europe/London"
    )
    await BuiltinAppointments(sessions).upsert(f"P-{key}", [appointment])
    return appointment.id


async def request_sync(sessions: async_sessionmaker[AsyncSession], enrollment_id: int) -> None:
    """What "sync now" leaves in the database: a request stamp on the person's sync state."""
    async with write_transaction(sessions) as session:
        await session.execute(
            update(SyncState)
            .where(SyncState.enrollment_id == enrollment_id)
            .values(requested_at=datetime.now(UTC))
        )


async def seed_conversations(
    sessions: async_sessionmaker[AsyncSession], tenant: SandboxTenant, service_url: str
) -> None:
    """The IT and approvals channels and the people's chats, all served by the recorder."""
    store = ConversationStore(sessions)
    channels = (("19:it@thread", ChannelRole.IT), ("19:approvals@thread", ChannelRole.APPROVALS))
    for conversation, role in channels:
        await store.remember(
            ConversationRef(conversation, ConversationKind.CHANNEL, service_url, "t", "28:bot")
        )
        await store.assign_role(conversation, role)
    for upn in (*APPROVERS, SASHA, PEOPLE["avery"]):
        user_id = tenant.seed.user_ids[upn]
        await store.remember(
            ConversationRef(
                f"a:{upn}",
                ConversationKind.PERSONAL,
                service_url,
                "t",
                "28:bot",
                user_id,
                f"29:{upn}",
            )
        )


async def seed_outbox(sessions: async_sessionmaker[AsyncSession], tenant: SandboxTenant) -> None:
    """Two messages queued before the replicas start, as a crashed process would leave them."""
    async with UnitsOfWork(sessions)() as work:
        work.to_channel(
            Channel.IT,
            Notification(NotificationKind.STATUS, None, IT_NOTE),
            key="two-replicas:it-note",
        )
        work.to_user(
            tenant.seed.user_ids[PEOPLE["avery"]],
            Notification(NotificationKind.STATUS, None, AVERY_NOTE),
            key="two-replicas:avery-note",
        )


async def seed_waiting_ticket(
    tenant: SandboxTenant, sessions: async_sessionmaker[AsyncSession]
) -> str:
    """Sasha's request, waiting for approval, through the production workflow."""
    settings = sandbox_settings(
        tenant,
        graph={"sync_group_id": tenant.seed.group_ids[SYNC_GROUP]},
        approvals={"approvers_group_id": tenant.seed.group_ids["Calendar Sync Approvers"]},
    )
    m365 = build_microsoft365(settings)
    try:
        workflows = build_workflows(settings, sessions, m365)
        assert workflows is not None
        await workflows.scheduling.upsert_profile(Profile("prof-sasha", "Sasha", SASHA))
        sasha = Person(tenant.seed.user_ids[SASHA], "Sasha Verhoeven", SASHA)
        result = await workflows.service.request_enrollment(sasha)
        assert result.ticket is not None, result
        return result.ticket.ref
    finally:
        await m365.aclose()
