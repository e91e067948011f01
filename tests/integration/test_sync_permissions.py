"""A missing Calendars.ReadWrite is reported as a missing permission, never as "not in scope".

Outlook refuses a mailbox outside the app's access policy and an app without a calendar
permission with the same 403 ``ErrorAccessDenied``; only the message differs ("Access to OData is
disabled." against "Access is denied. Check credentials and try again."). The sandbox answers
each as Outlook does; these tests follow the answer through the sync status, the IT alert and a
provisioning ticket. The app's token is fetched after the role is revoked, as a real token
carries the roles granted when it was issued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ports import Appointment
from syncwarden.core.db import session_factory
from syncwarden.core.settings import SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.seed import GRAPH_RESOURCE
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.alerts import SyncAlerts
from syncwarden.sync.engine import SyncEngine, SyncReport
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.worker import SyncWorker
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Enrollment, Step
from syncwarden.workflows.steps import StepName, StepState
from syncwarden.workflows.wording import step_label
from tests.support.enrollments import enroll
from tests.support.notifier import RecordingNotifier, recording_units
from tests.support.workflow import workflow_harness

AVERY = "avery.quinlan@example.edu"
OUTSIDE_POLICY = "sasha.verhoeven@example.edu"
PERMISSION = "Calendars.ReadWrite"


def revoke_calendar_permission(tenant: SandboxTenant) -> None:
    tenant.revoke_role(tenant.seed.app_ids["Syncwarden"], GRAPH_RESOURCE, PERMISSION)


def grant_calendar_permission(tenant: SandboxTenant, m365: Microsoft365) -> None:
    tenant.grant_role(tenant.seed.app_ids["Syncwarden"], GRAPH_RESOURCE, PERMISSION)
    m365.tokens.invalidate(m365.endpoints.graph_scope)  # the next token carries the new role


async def appointment_for(sessions: async_sessionmaker[AsyncSession]) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    await BuiltinAppointments(sessions).upsert(
        "P-1", [Appointment("A-1", "Client", start, start + timedelta(minutes=50))]
    )


def worker_with_alerts(
    sessions: async_sessionmaker[AsyncSession], m365: Microsoft365, notifier: RecordingNotifier
) -> tuple[SyncWorker, SyncAlerts]:
    settings = SyncSettings()
    engine = SyncEngine(sessions, m365.calendar, BuiltinAppointments(sessions), settings)
    alerts = SyncAlerts(recording_units(sessions, notifier))
    return SyncWorker(sessions, engine, settings, on_report=alerts.after_run), alerts


async def sync_avery_once(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> SyncReport:
    """Enroll Avery with one appointment and let the worker run her once."""
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY)
    await appointment_for(sessions)
    worker, _ = worker_with_alerts(sessions, m365, RecordingNotifier())
    await worker.request([enrollment])
    [report] = await worker.run_requested()
    return report


async def test_a_missing_calendar_permission_is_the_sync_status_and_the_it_alert(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    revoke_calendar_permission(tenant)
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY)
    await appointment_for(sessions)
    notifier = RecordingNotifier()
    worker, _ = worker_with_alerts(sessions, m365, notifier)

    await worker.request([enrollment])
    [report] = await worker.run_requested()

    assert not report.ok and report.error_kind is FailureKind.PERMISSION
    async with sessions() as session:
        row = await session.get(Enrollment, enrollment)
    assert row is not None and row.last_error_kind == "permission"
    assert row.last_error is not None and PERMISSION in row.last_error[:80]  # the status line
    assert "admin consent" in row.last_error
    assert "Check credentials" in row.last_error, "Microsoft's own words are kept"
    [alert] = notifier.to("channel:it", NotificationKind.SYNC_ALERT)
    assert PERMISSION in alert.text and "admin consent" in alert.text
    assert "not in the sync group" not in alert.text and "access policy" not in alert.text

    grant_calendar_permission(tenant, m365)
    await worker.request([enrollment])
    [recovered] = await worker.run_requested()
    assert recovered.ok and recovered.recovered and recovered.created == 1


async def test_a_mailbox_outside_the_policy_is_still_not_in_scope(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """The other 403: same code, the policy's words, and it stays "not in scope (yet)"."""
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, OUTSIDE_POLICY)
    notifier = RecordingNotifier()
    worker, _ = worker_with_alerts(sessions, m365, notifier)

    await worker.request([enrollment])
    [report] = await worker.run_requested()

    assert report.error_kind is FailureKind.NOT_IN_SCOPE
    [alert] = notifier.to("channel:it", NotificationKind.SYNC_ALERT)
    assert "not in the sync group" in alert.text and PERMISSION not in alert.text


async def test_read_without_write_permission_is_reported_as_the_missing_write_permission(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    revoke_calendar_permission(tenant)
    tenant.grant_role(app_id, GRAPH_RESOURCE, "Calendars.Read")
    report = await sync_avery_once(migrated_engine, tenant, m365)

    assert report.error_kind is FailureKind.PERMISSION
    assert PERMISSION in (report.error or "")


async def test_a_ticket_step_refused_for_the_permission_fails_at_once_naming_it(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """Not "not propagated yet": the step is not put back on the hour-long policy wait."""
    async with workflow_harness(
        migrated_engine, tenant, m365, provisioning={"remove_synced_events": True}
    ) as h:
        sasha, casey = h.person("sasha"), h.person("casey")
        enrolled = (await h.service.request_enrollment(sasha)).ticket
        assert enrolled is not None
        await h.service.decide(enrolled.ref, casey, approve=True)
        await h.runner.run_until_idle()
        revoke_calendar_permission(tenant)  # an administrator removes it afterwards
        m365.tokens.invalidate(m365.endpoints.graph_scope)
        removal = (await h.service.request_removal(sasha)).ticket
        assert removal is not None
        await h.service.decide(removal.ref, casey, approve=True)

        await h.runner.run_until_idle()

        failed = await h.service.get_ticket(removal.ref)
        assert failed is not None and failed.status == TicketStatus.FAILED
        reason = failed.failure_reason or ""
        assert reason.startswith(step_label(StepName.REMOVE_SYNCED_EVENTS))
        assert PERMISSION in reason and "admin consent" in reason
        async with h.sessions() as session:
            step = await session.scalar(
                select(Step).where(Step.name == StepName.REMOVE_SYNCED_EVENTS.value)
            )
        assert step is not None and step.state == StepState.FAILED.value and step.attempt == 1
        [told] = [
            s for s in h.notifier.to("channel:it", NotificationKind.FAILED) if removal.ref in s.text
        ]
        assert PERMISSION in told.text and "admin consent" in told.text


async def test_an_app_wide_failure_is_said_once_not_once_per_person(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """A missing permission stops everyone at once: IT hears it once, and once that it is over."""
    revoke_calendar_permission(tenant)
    sessions = session_factory(migrated_engine)
    people = [AVERY, "rowan.ibarra@example.edu"]  # both inside the access policy
    enrollments = [
        enrollment for upn in people for enrollment in await enroll(sessions, tenant, upn)
    ]
    await appointment_for(sessions)
    notifier = RecordingNotifier()
    worker, _ = worker_with_alerts(sessions, m365, notifier)

    await worker.request(enrollments)
    reports = await worker.run_requested()

    assert [r.error_kind for r in reports] == [FailureKind.PERMISSION] * 2
    # The durable outbox sends one message per key.
    alerts = notifier.to("channel:it", NotificationKind.SYNC_ALERT)
    assert len({alert.key for alert in alerts}) == 1
    assert PERMISSION in alerts[0].text

    grant_calendar_permission(tenant, m365)
    await worker.request(enrollments)
    assert all(r.ok and r.recovered for r in await worker.run_requested())
    recoveries = notifier.to("channel:it", NotificationKind.SYNC_RECOVERED)
    assert len({recovery.key for recovery in recoveries}) == 1
    assert "works again" in recoveries[0].text and "permission" in recoveries[0].text


async def test_the_same_words_with_the_permission_in_our_token_are_the_mailbox_scope(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """The text alone would say "missing permission"; a token that carries Calendars.ReadWrite
    says otherwise, so the refusal is the mailbox's scope (RBAC for Applications answers an
    out-of-scope mailbox in words Microsoft does not publish) and is retried, not escalated."""
    tenant.add_fault(
        r"/calendarView/delta",
        status=403,
        code="ErrorAccessDenied",
        message="Access is denied. Check credentials and try again.",
    )
    report = await sync_avery_once(migrated_engine, tenant, m365)

    assert report.error_kind is FailureKind.NOT_IN_SCOPE
