"""Access requests end to end at the service level: real database, sandbox tenant, recorded Teams.

Runs on SQLite and, with SYNCWARDEN_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.ports import Mapping, Profile
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import NotificationKind, Person
from syncwarden.workflows.records import Enrollment, Ticket, ticket_id_from_ref
from syncwarden.workflows.service import ActionOutcome
from syncwarden.workflows.steps import StepContext, StepName, StepOutcome
from tests.support.m365 import SYNCWARDEN_APP
from tests.support.workflow import Harness, workflow_harness


async def enrollments(h: Harness) -> list[Enrollment]:
    async with h.sessions() as session:
        return list((await session.scalars(select(Enrollment).order_by(Enrollment.id))).all())


async def test_self_request_approved_and_provisioned(h: Harness) -> None:
    sasha, casey = h.person("sasha"), h.person("casey")
    result = await h.service.request_enrollment(sasha, justification="I see students on Tuesdays")
    assert result.ok and result.created
    ticket = result.ticket
    assert ticket is not None
    assert ticket.status == TicketStatus.AWAITING_APPROVAL
    assert ticket.mailbox == "sasha.verhoeven@example.edu"
    assert ticket.profile_id == "prof-sasha"
    approver_asks = h.notifier.to(f"user:{casey.id.lower()}", NotificationKind.APPROVAL_REQUESTED)
    assert len(approver_asks) == 1
    assert h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.APPROVAL_REQUESTED) == []

    decided = await h.service.decide(
        ticket.ref, casey, approve=True, comment="ok", version=ticket.version
    )
    assert decided.ok, decided.message
    assert decided.ticket is not None and decided.ticket.status == TicketStatus.PROVISIONING
    assert not h.in_sync_group("sasha"), "nothing outside happens inside the decision"
    # The decision moved the ticket twice (approved, provisioning); the cards are updated once.
    assert [(s.ref, s.text) for s in h.notifier.to("card")] == [(ticket.ref, "provisioning")]

    assert await h.runner.run_until_idle() == 4
    final = await h.service.get_ticket(ticket.ref)
    assert final is not None and final.status == TicketStatus.COMPLETED
    assert h.in_sync_group("sasha")
    assert (
        Mapping("prof-sasha", "sasha.verhoeven@example.edu", True)
        in await h.scheduling.list_mappings()
    )
    [enrollment] = await enrollments(h)
    assert (enrollment.active, enrollment.mailbox, enrollment.sync_requested_at is not None) == (
        True,
        "sasha.verhoeven@example.edu",
        True,
    )
    instructions = h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.INSTRUCTIONS)
    assert len(instructions) == 1
    assert "sasha.verhoeven@example.edu" in instructions[0].text
    assert len(h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.COMPLETED)) == 1
    it_lines = [s.text for s in h.notifier.to("channel:it")]
    assert any("waiting for approval" in line for line in it_lines)
    assert any("approved" in line for line in it_lines)
    assert any("completed" in line for line in it_lines)


async def test_reject_tells_the_requester(h: Harness) -> None:
    sasha, casey = h.person("sasha"), h.person("casey")
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    result = await h.service.decide(ticket.ref, casey, approve=False, comment="not this term")
    assert result.ok and result.ticket is not None
    assert result.ticket.status == TicketStatus.REJECTED
    told = h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.REJECTED)
    assert len(told) == 1 and "not this term" in told[0].text
    assert await h.runner.run_until_idle() == 0
    assert not h.in_sync_group("sasha")


async def test_decisions_are_authorised_by_who_clicked(h: Harness) -> None:
    sasha, blake, casey, emerson = (h.person(k) for k in ("sasha", "blake", "casey", "emerson"))
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    refused = await h.service.decide(ticket.ref, blake, approve=True)
    assert refused.outcome is ActionOutcome.NOT_ALLOWED
    assert "not an approver" in refused.message
    own = await h.service.decide(ticket.ref, sasha, approve=True)
    assert own.outcome is ActionOutcome.NOT_ALLOWED
    stale = await h.service.decide(ticket.ref, casey, approve=True, version=ticket.version - 1)
    assert stale.outcome is ActionOutcome.STALE
    assert stale.ticket is not None and stale.ticket.status == TicketStatus.AWAITING_APPROVAL
    assert (await h.service.decide(ticket.ref, casey, approve=True)).ok
    late = await h.service.decide(ticket.ref, emerson, approve=False)
    assert late.outcome is ActionOutcome.ALREADY_DECIDED
    assert late.ticket is not None and late.ticket.status == TicketStatus.PROVISIONING
    unknown = await h.service.decide("SW-99999", casey, approve=True)
    assert unknown.outcome is ActionOutcome.NOT_FOUND
    garbage = await h.service.decide("hello", casey, approve=True)
    assert garbage.outcome is ActionOutcome.INVALID


async def test_an_approver_cannot_approve_a_request_about_themself(h: Harness) -> None:
    casey, dana, emerson = h.person("casey"), h.person("dana"), h.person("emerson")
    on_behalf = await h.service.request_enrollment(dana, subject=casey.upn)
    assert on_behalf.ticket is not None
    refused = await h.service.decide(on_behalf.ticket.ref, casey, approve=True)
    assert refused.outcome is ActionOutcome.NOT_ALLOWED
    assert "about yourself" in refused.message
    assert (await h.service.decide(on_behalf.ticket.ref, emerson, approve=True)).ok


async def test_validation_explains_each_problem(h: Harness) -> None:
    finley, harper, sasha, blake = (h.person(k) for k in ("finley", "harper", "sasha", "blake"))
    disabled = await h.service.request_enrollment(finley)
    assert [p.message for p in disabled.problems] == [f"{disabled.problems[0].message}"]
    assert "disabled" in disabled.problems[0].message
    no_mailbox = await h.service.request_enrollment(harper)
    assert any(
        p.field == "mailbox" and "no Exchange Online mailbox" in p.message
        for p in no_mailbox.problems
    )
    not_theirs = await h.service.request_enrollment(sasha, mailbox="avery.quinlan@example.edu")
    assert [p.field for p in not_theirs.problems] == ["mailbox"]
    not_admin = await h.service.request_enrollment(blake, subject=sasha.upn)
    assert "only IT admins" in not_admin.problems[0].message
    nobody = await h.service.request_enrollment(h.person("dana"), subject="nobody@example.edu")
    assert "nobody with the address" in nobody.problems[0].message
    assert not any([disabled.ok, no_mailbox.ok, not_theirs.ok, not_admin.ok, nobody.ok])


async def test_secondary_address_is_accepted_and_the_primary_stored(h: Harness) -> None:
    rowan = h.person("rowan")
    primary = (await h.m365.directory.get_user(rowan.id)).primary_smtp
    result = await h.service.request_enrollment(rowan, mailbox="Rowan.Ibarra@example.org")
    assert result.ok and result.ticket is not None
    assert result.ticket.mailbox == primary


async def test_duplicate_and_concurrent_requests_share_one_ticket(h: Harness) -> None:
    sasha = h.person("sasha")
    first, second = await asyncio.gather(
        h.service.request_enrollment(sasha), h.service.request_enrollment(sasha)
    )
    assert first.ticket is not None and second.ticket is not None
    assert first.ticket.ref == second.ticket.ref
    assert [first.created, second.created].count(True) == 1
    again = await h.service.request_enrollment(sasha)
    assert again.ticket is not None and again.ticket.ref == first.ticket.ref and not again.created


async def test_already_enrolled_is_answered_with_the_enrolling_ticket(h: Harness) -> None:
    sasha, casey = h.person("sasha"), h.person("casey")
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, casey, approve=True)
    await h.runner.run_until_idle()
    again = await h.service.request_enrollment(sasha)
    assert not again.created
    assert again.ticket is not None and again.ticket.ref == ticket.ref
    assert "already enrolled" in again.message


async def test_cancel_by_requester_and_refused_for_others(h: Harness) -> None:
    sasha, blake = h.person("sasha"), h.person("blake")
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    assert (await h.service.cancel(ticket.ref, blake)).outcome is ActionOutcome.NOT_ALLOWED
    cancelled = await h.service.cancel(ticket.ref, sasha, reason="changed my mind")
    assert cancelled.ok and cancelled.ticket is not None
    assert cancelled.ticket.status == TicketStatus.CANCELLED
    twice = await h.service.cancel(ticket.ref, sasha)
    assert twice.outcome is ActionOutcome.ALREADY_DECIDED
    assert "cannot be cancelled" in twice.message


async def test_reminder_escalation_and_expiry_follow_the_clock(h: Harness) -> None:
    sasha, casey, dana = h.person("sasha"), h.person("casey"), h.person("dana")
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    assert await h.service.check_pending() == {"reminded": 0, "escalated": 0, "expired": 0}
    h.clock.advance(hours=25)
    assert await h.service.check_pending() == {"reminded": 1, "escalated": 0, "expired": 0}
    assert await h.service.check_pending() == {"reminded": 0, "escalated": 0, "expired": 0}
    assert len(h.notifier.to(f"user:{casey.id.lower()}", NotificationKind.APPROVAL_REMINDER)) == 1
    h.clock.advance(hours=24)
    assert (await h.service.check_pending())["escalated"] == 1
    assert len(h.notifier.to(f"user:{dana.id.lower()}", NotificationKind.APPROVAL_ESCALATED)) == 1
    assert (await h.service.decide(ticket.ref, dana, approve=False)).ok, (
        "fallback approvers may decide"
    )


async def test_undecided_requests_expire(h: Harness) -> None:
    sasha = h.person("sasha")
    ticket = (await h.service.request_enrollment(sasha)).ticket
    assert ticket is not None
    h.clock.advance(days=7, seconds=1)
    assert (await h.service.check_pending())["expired"] == 1
    expired = await h.service.get_ticket(ticket.ref)
    assert expired is not None and expired.status == TicketStatus.EXPIRED
    assert len(h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.EXPIRED)) == 1


async def test_it_admin_on_behalf_needs_no_approval_when_configured(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    async with workflow_harness(
        migrated_engine, tenant, m365, approvals={"auto_approve_it_on_behalf": True}
    ) as h:
        dana, sasha = h.person("dana"), h.person("sasha")
        result = await h.service.request_enrollment(dana, subject="sasha.verhoeven@example.edu")
        assert result.ticket is not None and result.ticket.status == TicketStatus.PROVISIONING
        assert result.ticket.requester.id == dana.id and result.ticket.subject.id == sasha.id
        await h.runner.run_until_idle()
        assert h.in_sync_group("sasha")


async def test_two_approvals_when_configured(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    async with workflow_harness(
        migrated_engine, tenant, m365, approvals={"required_approvals": 2}
    ) as h:
        ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
        assert ticket is not None
        first = await h.service.decide(ticket.ref, h.person("casey"), approve=True)
        assert first.ticket is not None and first.ticket.status == TicketStatus.AWAITING_APPROVAL
        repeat = await h.service.decide(ticket.ref, h.person("casey"), approve=True)
        assert repeat.outcome is ActionOutcome.ALREADY_DECIDED
        second = await h.service.decide(ticket.ref, h.person("emerson"), approve=True)
        assert second.ticket is not None and second.ticket.status == TicketStatus.PROVISIONING


async def enroll(h: Harness, key: str) -> str:
    ticket = (await h.service.request_enrollment(h.person(key))).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    return ticket.ref


async def test_change_then_remove(h: Harness) -> None:
    rowan = h.person("rowan")
    await enroll(h, "rowan")
    [enrolled] = await enrollments(h)
    primary = enrolled.mailbox
    same = await h.service.request_change(rowan, mailbox="Rowan.Ibarra@example.org")
    assert [p.message for p in same.problems] == [f"calendar sync already uses {primary}"]
    # The person's primary address changed since they enrolled (a name change, say).
    async with h.sessions.begin() as session:
        row = await session.get(Enrollment, enrolled.id)
        assert row is not None
        row.mailbox = "rowan.former@example.edu"
    change = await h.service.request_change(rowan, mailbox=primary)
    assert change.ticket is not None and change.created
    assert change.ticket.previous_mailbox == "rowan.former@example.edu"
    await h.service.decide(change.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    [changed] = await enrollments(h)
    assert changed.mailbox == primary
    assert Mapping("prof-rowan", primary, True) in await h.scheduling.list_mappings()

    removal = await h.service.request_removal(rowan, justification="leaving")
    assert removal.ticket is not None and removal.created
    assert removal.ticket.profile_name == "Rowan", "cards show the profile's name, not its id"
    await h.service.decide(removal.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    done = await h.service.get_ticket(removal.ticket.ref)
    assert done is not None and done.status == TicketStatus.COMPLETED
    assert not h.in_sync_group("rowan")
    assert all(not e.active for e in await enrollments(h))
    assert Mapping("prof-rowan", primary, False) in await h.scheduling.list_mappings()


async def test_removal_of_someone_not_enrolled_is_explained(h: Harness) -> None:
    result = await h.service.request_removal(h.person("sasha"))
    assert not result.ok
    assert "is not enrolled" in result.problems[0].message


async def test_manual_mapping_waits_for_it(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    async with workflow_harness(migrated_engine, tenant, m365, writes_mappings=False) as h:
        sasha, casey, dana = h.person("sasha"), h.person("casey"), h.person("dana")
        ticket = (await h.service.request_enrollment(sasha)).ticket
        assert ticket is not None
        await h.service.decide(ticket.ref, casey, approve=True)
        await h.runner.run_until_idle()
        waiting = await h.service.get_ticket(ticket.ref)
        assert waiting is not None and waiting.status == TicketStatus.WAITING_MANUAL
        assert waiting.waiting_step == "map_profile"
        [task] = h.notifier.to("channel:it", NotificationKind.MANUAL_STEP)
        assert "prof-sasha" in str(task) or "manual step" in task.text
        assert (
            await h.service.manual_step_done(ticket.ref, sasha)
        ).outcome is ActionOutcome.NOT_ALLOWED
        assert (await h.service.manual_step_done(ticket.ref, dana)).ok
        await h.runner.run_until_idle()
        done = await h.service.get_ticket(ticket.ref)
        assert done is not None and done.status == TicketStatus.COMPLETED
        assert h.in_sync_group("sasha")
        assert await h.scheduling.list_mappings() == [], (
            "mapping was entered by a person, not by us"
        )


async def test_transient_failure_is_retried_later(h: Harness) -> None:
    h.tenant.add_fault("InvokeCommand", method="POST", status=503, count=10)
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    waiting = await h.service.get_ticket(ticket.ref)
    assert waiting is not None and waiting.status == TicketStatus.PROVISIONING
    assert not h.in_sync_group("sasha")
    h.tenant.clear_faults()
    h.clock.advance(minutes=1)
    await h.runner.run_until_idle()
    done = await h.service.get_ticket(ticket.ref)
    assert done is not None and done.status == TicketStatus.COMPLETED
    assert h.in_sync_group("sasha")


async def test_permanent_failure_then_retry_by_it(h: Harness) -> None:
    app_id = h.tenant.seed.app_ids["Syncwarden"]
    h.tenant.revoke_role(app_id, "https://outlook.office365.com", "Exchange.ManageAsApp")
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    failed = await h.service.get_ticket(ticket.ref)
    assert failed is not None and failed.status == TicketStatus.FAILED
    assert failed.failure_reason is not None and "Exchange.ManageAsApp" in failed.failure_reason
    [alert] = h.notifier.to("channel:it", NotificationKind.FAILED)
    # IT reads what failed in words, not the step's name or the endpoint (with the tenant id).
    assert "adding them to the sync group" in alert.text
    assert "add_to_group" not in alert.text and "https://" not in alert.text
    assert "https://" not in failed.failure_reason
    # The person hears it is not finished yet (without internals); before, they heard nothing.
    sasha = f"user:{h.person('sasha').id.lower()}"
    [told] = h.notifier.to(sasha, NotificationKind.FAILED)
    assert "could not be finished yet" in told.text and "Exchange" not in told.text
    assert (
        await h.service.retry(ticket.ref, h.person("sasha"))
    ).outcome is ActionOutcome.NOT_ALLOWED
    h.tenant.grant_role(app_id, "https://outlook.office365.com", "Exchange.ManageAsApp")
    h.m365.tokens.invalidate(h.m365.endpoints.exchange_scope)
    assert (await h.service.retry(ticket.ref, h.person("dana"))).ok
    assert "IT is trying again" in h.notifier.to(sasha)[-1].text
    await h.runner.run_until_idle()
    done = await h.service.get_ticket(ticket.ref)
    assert done is not None and done.status == TicketStatus.COMPLETED
    assert h.in_sync_group("sasha")
    assert h.notifier.to(sasha, NotificationKind.COMPLETED)
    # The audit keeps the error exactly as it came, for whoever investigates.
    async with h.sessions() as session:
        notes = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "ticket.fail"))
        ).all()
    assert any("add_to_group" in str(note.after) for note in notes)


async def test_a_missing_exchange_role_fails_the_ticket_with_the_role_named(h: Harness) -> None:
    """Exchange RBAC is not the token: nothing to retry until IT grants the role, then Retry."""
    app_id = h.tenant.seed.app_ids["Syncwarden"]
    h.tenant.exchange.remove_role(app_id, "Security Group Creation and Membership")
    h.tenant.exchange.assign_role(app_id, "Recipient Management")
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None
    await h.service.decide(ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    failed = await h.service.get_ticket(ticket.ref)
    assert failed is not None and failed.status == TicketStatus.FAILED
    reason = failed.failure_reason or ""
    assert "Security Group Creation and Membership" in reason
    assert "BypassSecurityGroupManagerCheck" in reason
    h.tenant.exchange.assign_role(app_id, "Security Group Creation and Membership")
    assert (await h.service.retry(ticket.ref, h.person("dana"))).ok
    await h.runner.run_until_idle()
    done = await h.service.get_ticket(ticket.ref)
    assert done is not None and done.status == TicketStatus.COMPLETED
    assert h.in_sync_group("sasha")


async def failure_kind_of(h: Harness, ref: str) -> str | None:
    async with h.sessions() as session:
        return await session.scalar(
            select(Ticket.failure_kind).where(Ticket.id == ticket_id_from_ref(ref))
        )


async def test_a_failed_ticket_records_the_kind_of_its_failure_and_keeps_it_on_retry(
    h: Harness,
) -> None:
    """The kind IT lists failed tickets by (``tickets error:permission``) is recorded beside
    the reason, and like the reason it stays when IT retries: the last failure stays on
    record, also once the retry has finished the ticket."""
    app_id = h.tenant.seed.app_ids["Syncwarden"]
    h.tenant.exchange.remove_role(app_id, "Security Group Creation and Membership")
    h.tenant.exchange.assign_role(app_id, "Recipient Management")
    ref = await enroll(h, "sasha")
    failed = await h.service.get_ticket(ref)
    assert failed is not None and failed.status == TicketStatus.FAILED
    assert await failure_kind_of(h, ref) == "permission"
    h.tenant.exchange.assign_role(app_id, "Security Group Creation and Membership")
    assert (await h.service.retry(ref, h.person("dana"))).ok
    assert await failure_kind_of(h, ref) == "permission"
    await h.runner.run_until_idle()
    done = await h.service.get_ticket(ref)
    assert done is not None and done.status == TicketStatus.COMPLETED
    assert await failure_kind_of(h, ref) == "permission"


async def test_a_step_that_crashes_fails_its_ticket_with_the_kind_other(h: Harness) -> None:
    async def crash(context: StepContext) -> StepOutcome:
        raise RuntimeError(f"a bug in the {context.step} handler")

    h.handlers[StepName.SEND_INSTRUCTIONS] = crash
    ref = await enroll(h, "sasha")
    failed = await h.service.get_ticket(ref)
    assert failed is not None and failed.status == TicketStatus.FAILED
    assert await failure_kind_of(h, ref) == "other"


async def test_every_change_is_audited(h: Harness) -> None:
    await enroll(h, "sasha")
    async with h.sessions() as session:
        actions = [
            e.action
            for e in (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        ]
    assert actions[0] == "ticket.created.enroll"
    assert "ticket.approve" in actions and "ticket.complete" in actions
    assert sum(a.startswith("step.") for a in actions) == 4


async def test_removal_deletes_only_our_events_while_access_remains(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    async with workflow_harness(
        migrated_engine, tenant, m365, provisioning={"remove_synced_events": True}
    ) as h:
        sasha = h.person("sasha")
        await enroll(h, "sasha")
        start = h.clock.now + dt.timedelta(days=3)
        window = {
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
        }
        for n in range(3):
            await m365.calendar.create_event(
                sasha.id,
                {"subject": f"Synced {n}", **window},
                source_id=f"appt-{n}",
                transaction_id=f"t-{n}",
            )
        own = (
            await m365.graph.request(
                "POST", f"users/{sasha.id}/events", json_body={"subject": "Dentist", **window}
            )
        ).body
        removal = await h.service.request_removal(sasha)
        assert removal.ticket is not None
        await h.service.decide(removal.ticket.ref, h.person("casey"), approve=True)
        await h.runner.run_until_idle()
        done = await h.service.get_ticket(removal.ticket.ref)
        assert done is not None and done.status == TicketStatus.COMPLETED, done
        left = tenant.state.mailbox_events(sasha.id)
        assert [e.id for e in left.values() if (e.subject or "").startswith("Synced")] == []
        assert own["id"] in left, "the person's own events are never touched"
        assert not h.in_sync_group("sasha")


async def test_profile_candidates_when_no_email_matches(h: Harness) -> None:
    user = h.tenant.add_user(
        userPrincipalName="morgan.ashby@example.edu", displayName="Morgan Ashby"
    )
    await h.scheduling.upsert_profile(Profile("prof-m1", "Morgan Ashby (Advising)", None))
    await h.scheduling.upsert_profile(Profile("prof-m2", "Morgan Ashby (Careers)", None))
    morgan = Person(user.id, "Morgan Ashby", user.userPrincipalName)
    first = await h.service.request_enrollment(morgan)
    assert [p.field for p in first.problems] == ["profile"]
    assert {p.id for p in first.profile_candidates} == {"prof-m1", "prof-m2"}
    chosen = await h.service.request_enrollment(morgan, profile_id="prof-m2")
    assert chosen.ok and chosen.ticket is not None and chosen.ticket.profile_id == "prof-m2"
    foreign = await h.service.request_enrollment(h.person("blake"), profile_id="prof-m2")
    assert "does not belong" in foreign.problems[0].message


async def test_a_mailbox_check_refused_for_a_missing_permission_names_it_not_an_outage(
    h: Harness, tenant: SandboxTenant
) -> None:
    """Without Calendars.* the mailbox probe is refused (403 "Access is denied. Check
    credentials"): waiting a minute will not help, so the answer says what IT must grant."""
    tenant.revoke_role(
        tenant.seed.app_ids[SYNCWARDEN_APP], "https://graph.microsoft.com", "Calendars.ReadWrite"
    )
    result = await h.service.request_enrollment(h.person("sasha"))
    [problem] = [p for p in result.problems if p.field == "mailbox"]
    assert "Calendars.ReadWrite" in problem.message
    assert "syncwarden doctor" in problem.message
    assert result.ticket is None


async def test_free_text_no_database_stores_is_cleaned_by_the_use_case_itself(
    h: Harness,
) -> None:
    """Callers other than the bot (the CLI, scripts) reach the use cases too: a NUL (refused by
    PostgreSQL) or a lone surrogate (encoded by neither database) must not fail the request."""
    result = await h.service.request_enrollment(
        h.person("sasha"), justification="for\x00 advising\ud800 "
    )
    assert result.ticket is not None, result.problems
    assert result.ticket.justification == "for advising"
    decided = await h.service.decide(
        result.ticket.ref, h.person("casey"), approve=False, comment="not\x00 now\udfff"
    )
    assert decided.ok
    assert decided.ticket is not None
    assert [d.comment for d in decided.ticket.decisions] == ["not now"]


async def test_the_chosen_mailbox_address_is_honoured_from_the_card_to_the_instructions(
    h: Harness,
) -> None:
    """Any address of the person's mailbox may be chosen; it is what the ticket, the mapping,
    the enrollment and the instructions say (sync still writes to that one mailbox)."""
    avery = h.person("avery")
    result = await h.service.request_enrollment(avery, mailbox="AQuinlan@example.edu")
    assert result.ok and result.ticket is not None
    assert result.ticket.mailbox == "aquinlan@example.edu"
    await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    [enrolled] = await enrollments(h)
    assert enrolled.mailbox == "aquinlan@example.edu"
    assert Mapping("prof-avery", "aquinlan@example.edu", True) in await h.scheduling.list_mappings()
    [instructions] = h.notifier.to(f"user:{avery.id.lower()}", NotificationKind.INSTRUCTIONS)
    assert "aquinlan@example.edu" in instructions.text

    change = await h.service.request_change(avery, mailbox="avery.quinlan@example.org")
    assert change.ok and change.ticket is not None, change.problems
    assert change.ticket.previous_mailbox == "aquinlan@example.edu"
    await h.service.decide(change.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    [changed] = await enrollments(h)
    assert changed.mailbox == "avery.quinlan@example.org"


async def test_only_the_mailboxs_own_addresses_are_offered_or_accepted(h: Harness) -> None:
    """``otherMails`` (here a personal account) is not an address Exchange delivers to."""
    avery = h.person("avery")
    form = await h.service.enrollment_form(avery)
    assert form.addresses == (
        "avery.quinlan@example.edu",
        "aquinlan@example.edu",
        "avery.quinlan@example.org",
    )
    refused = await h.service.request_enrollment(avery, mailbox="avery.q.personal@example.com")
    assert refused.ticket is None
    [problem] = refused.problems
    assert problem.field == "mailbox"
    assert "is not an address of" in problem.message


async def test_each_kind_of_ticket_is_told_in_its_own_words(h: Harness) -> None:
    """A removal is never "set up", a change never "set up now"; IT's lines name the ticket
    once (the status line starts with it) and say what happened."""
    rowan = h.person("rowan")
    person = f"user:{rowan.id.lower()}"
    await enroll(h, "rowan")
    assert h.notifier.to(person, NotificationKind.COMPLETED)[-1].text.endswith(
        "calendar sync is set up for Rowan Ibarra"
    )

    change = await h.service.request_change(rowan, mailbox="ribarra@example.edu")
    assert change.ticket is not None
    [ask] = [
        s
        for s in h.notifier.to("channel:approvals", NotificationKind.APPROVAL_REQUESTED)
        if s.ref == change.ticket.ref
    ]
    assert "asks to move their calendar sync to ribarra@example.edu" in ask.text
    await h.service.decide(change.ticket.ref, h.person("casey"), approve=True)
    assert h.notifier.to(person, NotificationKind.APPROVED)[-1].text.endswith("moving it now")
    await h.runner.run_until_idle()
    moved = h.notifier.to(person, NotificationKind.COMPLETED)[-1]
    assert "now goes to ribarra@example.edu" in moved.text

    removal = await h.service.request_removal(rowan)
    assert removal.ticket is not None
    ref = removal.ticket.ref
    await h.service.decide(ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    said = [s.text for s in h.notifier.sent if s.ref == ref]
    assert any("asks to stop their calendar sync" in text for text in said)
    assert any(text.endswith("turning it off now") for text in said)
    assert any(text.endswith("calendar sync is turned off for Rowan Ibarra") for text in said)
    assert not any("set up" in text or "setting it up" in text for text in said)
    it_lines = [s.text for s in h.notifier.to("channel:it") if s.ref == ref]
    assert it_lines and all(line.count(ref) == 1 for line in it_lines), it_lines
