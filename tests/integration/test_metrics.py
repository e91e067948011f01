"""What an operator watches, through ``GET /metrics`` (issue 12, item 13, the Prometheus part).

Rows are written straight into a migrated database (SQLite, and PostgreSQL when configured) and
the test reads the exposition text as Prometheus would.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.background import Job, logged_job
from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.core.db import create_engine, session_factory, utc_now
from syncwarden.core.jobs_metrics import SYNC_OUTCOMES
from syncwarden.core.settings import Settings, SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_watch import CredentialAlert
from syncwarden.sync.engine import SyncEngine, SyncOptions, SyncReport
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.quiet import QuietWrites
from syncwarden.sync.records import SyncState
from syncwarden.sync.snapshot import Prepared
from syncwarden.sync.worker import SyncWorker
from syncwarden.web import create_app
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.records import Enrollment, Step, Ticket
from tests.support.enrollments import enroll

WebClient = TestClient[web.Request, web.Application]
SANDBOX = Settings.model_validate({"mode": "sandbox"})


async def scrape(engine: AsyncEngine) -> str:
    client: WebClient = TestClient(TestServer(create_app(SANDBOX, engine), host="127.0.0.1"))
    await client.start_server()
    try:
        response = await client.get("/metrics")
        assert response.status == 200
        return await response.text()
    finally:
        await client.close()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels in any order); fails when the series is missing."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        found, _, rendered = series.partition("{")
        if found == name and dict(LABEL.findall(rendered)) == labels:
            return float(value)
    raise AssertionError(f"{name}{labels} is not in the metrics:\n{text}")


LABEL = re.compile(r'(\w+)="([^"]*)"')


def ticket(number: int, status: str) -> Ticket:
    return Ticket(
        kind="enroll",
        status=status,
        subject_id=f"subject-{number}",
        subject_upn=f"person{number}@example.edu",
        subject_name=f"Person {number}",
        subject_mail=f"person{number}@example.edu",
        requester_id=f"subject-{number}",
        requester_upn=f"person{number}@example.edu",
        requester_name=f"Person {number}",
        mailbox=f"person{number}@example.edu",
    )


def enrollment(number: int, *, paused: bool = False, error_kind: str | None = None) -> Enrollment:
    return Enrollment(
        subject_id=f"subject-{number}",
        subject_upn=f"person{number}@example.edu",
        subject_name=f"Person {number}",
        profile_id=f"profile-{number}",
        mailbox=f"person{number}@example.edu",
        paused=paused,
        last_error_kind=error_kind,
    )


def outbox(key: str, state: str, age: timedelta) -> OutboxMessage:
    return OutboxMessage(
        key=key,
        target="user",
        recipient="someone",
        payload={},
        state=state,
        created_at=utc_now() - age,
    )


def alert(key: str, threshold: int, **state: object) -> CredentialAlert:
    return CredentialAlert(
        key=key,
        owner_kind="application",
        object_id="app-object",
        key_id=key,
        app_name="Scheduling connector",
        threshold=threshold,
        severity="warning",
        **state,
    )


@pytest.fixture
async def filled(migrated_engine: AsyncEngine) -> AsyncEngine:
    now = utc_now()
    async with session_factory(migrated_engine).begin() as session:
        tickets = [
            ticket(1, "awaiting_approval"),
            ticket(2, "awaiting_approval"),
            ticket(3, "failed"),
            ticket(4, "completed"),
        ]
        session.add_all(tickets)
        await session.flush()
        session.add_all(
            [
                Step(
                    ticket_id=tickets[2].id,
                    position=1,
                    name="map_profile",
                    state="succeeded",
                    idempotency_key="t3-1",
                ),
                Step(
                    ticket_id=tickets[2].id,
                    position=2,
                    name="add_to_group",
                    state="failed",
                    idempotency_key="t3-2",
                ),
                Step(
                    ticket_id=tickets[3].id,
                    position=1,
                    name="add_to_group",
                    state="failed",
                    idempotency_key="t4-1",
                ),
            ]
        )
        session.add_all(
            [
                outbox("old", "pending", timedelta(minutes=10)),
                outbox("parked", "sending", timedelta(minutes=2)),
                outbox("done", "sent", timedelta(hours=5)),
                outbox("gave-up", "failed", timedelta(hours=3)),
            ]
        )
        people = [
            enrollment(1),
            enrollment(2, error_kind="throttled"),
            enrollment(3, error_kind="throttled"),
            enrollment(4, paused=True, error_kind="credential"),
        ]
        gone = enrollment(5, error_kind="permission")
        gone.active = False
        session.add_all([*people, gone])
        await session.flush()
        session.add_all(
            [
                SyncState(enrollment_id=people[0].id, consecutive_failures=0),
                SyncState(enrollment_id=people[1].id, consecutive_failures=2),
                SyncState(enrollment_id=people[2].id, consecutive_failures=7),
                SyncState(enrollment_id=gone.id, consecutive_failures=40),
            ]
        )
        session.add_all(
            [
                alert("a", 30),
                alert("b", 30, acknowledged_by="Casey"),
                alert("c", 7, snoozed_until=now + timedelta(days=1)),
                alert("d", 7, snoozed_until=now - timedelta(days=1)),  # the snooze is over
                alert("e", 30, resolved_at=now),
            ]
        )
    return migrated_engine


async def test_tickets_are_counted_by_status(filled: AsyncEngine) -> None:
    text = await scrape(filled)
    assert sample(text, "syncwarden_database_metrics_up") == 1
    assert sample(text, "syncwarden_tickets", status="awaiting_approval") == 2
    assert sample(text, "syncwarden_tickets", status="failed") == 1
    assert sample(text, "syncwarden_tickets", status="completed") == 1
    # Every status is there, at 0 when no ticket has it, so an alert on it has a series.
    assert sample(text, "syncwarden_tickets", status="waiting_manual") == 0


async def test_failed_steps_are_counted_by_step(filled: AsyncEngine) -> None:
    text = await scrape(filled)
    assert sample(text, "syncwarden_steps_failed", step="add_to_group") == 2
    assert sample(text, "syncwarden_steps_failed", step="map_profile") == 0


async def test_the_outbox_backlog_and_the_age_of_its_oldest_message(filled: AsyncEngine) -> None:
    text = await scrape(filled)
    assert sample(text, "syncwarden_outbox_backlog") == 2  # pending and sending, not sent/failed
    age = sample(text, "syncwarden_outbox_oldest_pending_age_seconds")
    assert 600 <= age < 700  # the pending one from 10 minutes ago, not the older sent one
    assert sample(text, "syncwarden_outbox_messages", state="failed") == 1
    assert sample(text, "syncwarden_outbox_messages", state="sent") == 1


async def test_an_empty_outbox_has_no_age(migrated_engine: AsyncEngine) -> None:
    text = await scrape(migrated_engine)
    assert sample(text, "syncwarden_outbox_backlog") == 0
    assert sample(text, "syncwarden_outbox_oldest_pending_age_seconds") == 0


async def test_sync_failures_are_counted_by_kind(filled: AsyncEngine) -> None:
    text = await scrape(filled)
    assert sample(text, "syncwarden_sync_enrollments", state="syncing") == 3
    assert sample(text, "syncwarden_sync_enrollments", state="paused") == 1
    assert sample(text, "syncwarden_sync_failing_enrollments", kind="throttled") == 2
    assert sample(text, "syncwarden_sync_failing_enrollments", kind="credential") == 1
    # The inactive enrollment's failure is history, not something to watch.
    assert sample(text, "syncwarden_sync_failing_enrollments", kind="permission") == 0
    assert sample(text, "syncwarden_sync_failing_in_a_row") == 2
    assert sample(text, "syncwarden_sync_consecutive_failures_max") == 7


async def test_credential_alerts_are_counted_by_threshold_and_state(filled: AsyncEngine) -> None:
    text = await scrape(filled)
    alerts = "syncwarden_credential_alerts"
    assert sample(text, alerts, threshold_days="30", state="open") == 1
    assert sample(text, alerts, threshold_days="30", state="acknowledged") == 1
    assert sample(text, alerts, threshold_days="30", state="resolved") == 1
    assert sample(text, alerts, threshold_days="7", state="snoozed") == 1
    assert sample(text, alerts, threshold_days="7", state="open") == 1


async def test_job_runs_and_failures_are_counted_by_job(migrated_engine: AsyncEngine) -> None:
    name = f"metrics-test-{uuid.uuid4().hex[:8]}"

    async def works() -> str:
        return "done"

    async def breaks() -> None:
        raise RuntimeError("the job broke")

    await logged_job(Job(f"{name}.ok", 1, works), migrated_engine)()
    await logged_job(Job(f"{name}.ok", 1, works), migrated_engine)()
    await logged_job(Job(f"{name}.broken", 1, breaks), migrated_engine)()

    text = await scrape(migrated_engine)
    assert sample(text, "syncwarden_job_runs_total", job=f"{name}.ok") == 2
    assert sample(text, "syncwarden_job_failures_total", job=f"{name}.ok") == 0
    assert sample(text, "syncwarden_job_runs_total", job=f"{name}.broken") == 1
    assert sample(text, "syncwarden_job_failures_total", job=f"{name}.broken") == 1


class ScriptedEngine(SyncEngine):
    """The production engine, except for the enrollments given an outcome to play."""

    script: dict[int, str]

    async def sync(
        self,
        enrollment_id: int,
        options: SyncOptions | None = None,
        *,
        lease_owner: str | None = None,
        quiet: QuietWrites | None = None,
        prepared: Prepared | None = None,
    ) -> SyncReport:
        match self.script.get(enrollment_id):
            case "throttled":
                return SyncReport(
                    enrollment_id, "p", ok=False, error="429", error_kind=FailureKind.THROTTLED
                )
            case "crashed":
                raise RuntimeError("the engine broke")
            case "paused since it was claimed":
                return SyncReport(enrollment_id, "p", skipped="paused")
            case "taken over":
                return SyncReport(enrollment_id, "p", ok=False, skipped="another worker took it")
        return await super().sync(
            enrollment_id, options, lease_owner=lease_owner, quiet=quiet, prepared=prepared
        )


def sync_runs(text: str) -> dict[str, float]:
    """Runs by outcome and failures by kind, in one dict (outcomes and kinds differ)."""
    runs = {o: sample(text, "syncwarden_sync_runs_total", outcome=o) for o in SYNC_OUTCOMES}
    for kind in FailureKind:
        runs[kind.value] = sample(text, "syncwarden_sync_run_failures_total", kind=kind.value)
    return runs


async def test_sync_runs_are_counted_by_outcome_and_failures_by_kind(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """Every outcome and kind is a series from the start (at 0 in a new process), and no label
    names a person or an enrollment (the counters would grow a series per person)."""
    before = sync_runs(await scrape(migrated_engine))
    sessions = session_factory(migrated_engine)
    ids = await enroll(
        sessions, tenant, "avery.quinlan@example.edu", "P-0", "P-1", "P-2", "P-3", "P-4"
    )
    settings = SyncSettings()
    engine = ScriptedEngine(sessions, m365.calendar, BuiltinAppointments(sessions), settings)
    engine.script = {
        ids[1]: "throttled",
        ids[2]: "crashed",
        ids[3]: "paused since it was claimed",
        ids[4]: "taken over",
    }

    reports = await SyncWorker(sessions, engine, settings).run_all()

    assert len(reports) == 5 and reports[0].ok, reports
    text = await scrape(migrated_engine)
    after = sync_runs(text)
    moved = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert moved == {"ok": 1, "failed": 2, "skipped": 2, "throttled": 1, "other": 1}
    runs = [line for line in text.splitlines() if line.startswith("syncwarden_sync_run")]
    assert not [line for line in runs if "avery" in line or "enrollment" in line]


async def test_an_unreachable_database_leaves_the_gauges_out_but_still_answers() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    try:
        text = await scrape(engine)
    finally:
        await engine.dispose()
    assert sample(text, "syncwarden_database_metrics_up") == 0
    assert "syncwarden_tickets{" not in text
    assert "syncwarden_http_requests_total" in text
