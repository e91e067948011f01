"""Time-bound access end to end: an end date on the request, a reminder with Extend before it,
and a removal ticket at the end, over the sandbox tenant on SQLite and PostgreSQL.

Modelled on Entra ID access packages' assignment expiration (an assignment ends on a date and
its holder may ask to extend it, which goes through the policy's approval again):
https://learn.microsoft.com/entra/id-governance/entitlement-management-access-package-lifecycle-policy
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from syncwarden.workflows.access_terms import end_of
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Enrollment, Ticket
from tests.support.workflow import Harness, workflow_harness


async def enrollment_of(h: Harness, key: str) -> Enrollment:
    async with h.sessions() as session:
        row = await session.scalar(
            select(Enrollment)
            .where(Enrollment.subject_id == h.person(key).id.lower())
            .order_by(Enrollment.id.desc())
        )
        assert row is not None
        return row


async def enroll_until(h: Harness, key: str, last_day: dt.date) -> str:
    result = await h.service.request_enrollment(h.person(key), until=last_day)
    assert result.ok and result.ticket is not None, result.problems
    assert result.ticket.access_until == end_of(last_day)
    assert (await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)).ok
    await h.runner.run_until_idle()
    return result.ticket.ref


async def test_reminded_once_then_removed_once_at_the_end(h: Harness) -> None:
    sasha = h.person("sasha")
    last_day = (h.clock.now + dt.timedelta(days=20)).date()
    await enroll_until(h, "sasha", last_day)
    assert h.in_sync_group("sasha")
    assert (await enrollment_of(h, "sasha")).access_until == end_of(last_day)

    assert (await h.service.check_access_expiry()).reminded == 0, "not yet within 7 days"
    h.clock.advance(days=15)
    assert (await h.service.check_access_expiry()).reminded == 1
    assert (await h.service.check_access_expiry()).reminded == 0, "a reminder is sent once"
    [told] = h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.ACCESS_ENDING)
    assert last_day.strftime("%d %b %Y") in told.text and "Extend" in told.text

    h.clock.advance(days=6)
    first, second = await asyncio.gather(
        h.service.check_access_expiry(), h.service.check_access_expiry()
    )
    assert first.removals + second.removals == 1, "the end opens one removal ticket"
    assert (await h.service.check_access_expiry()).removals == 0
    await h.runner.run_until_idle()
    assert not h.in_sync_group("sasha")
    ended = await enrollment_of(h, "sasha")
    assert not ended.active and ended.expiry_ticket_id is not None
    async with h.sessions() as session:
        removal = await session.get(Ticket, ended.expiry_ticket_id)
        assert removal is not None
        assert (removal.kind, removal.status, removal.requester_id) == (
            TicketKind.REMOVE.value,
            TicketStatus.COMPLETED.value,
            "syncwarden:expiry",
        )
        actors = set(
            (
                await session.scalars(
                    select(AuditEvent.actor).where(AuditEvent.ticket_ref == removal.ref)
                )
            ).all()
        )
    assert "syncwarden:expiry" in actors, "the audit trail says why access ended"
    assert h.notifier.to("user:syncwarden:expiry") == [], "Syncwarden is never messaged"
    done = h.notifier.to(f"user:{sasha.id.lower()}", NotificationKind.COMPLETED)
    assert any("turned off" in sent.text for sent in done)


async def test_extend_follows_the_approval_policy_and_moves_the_end(h: Harness) -> None:
    sasha, casey = h.person("sasha"), h.person("casey")
    last_day = (h.clock.now + dt.timedelta(days=10)).date()
    await enroll_until(h, "sasha", last_day)
    h.clock.advance(days=5)
    assert (await h.service.check_access_expiry()).reminded == 1

    later = last_day + dt.timedelta(days=60)
    extension = await h.service.request_extension(sasha, until=later)
    assert extension.ok and extension.ticket is not None, extension.problems
    assert extension.ticket.kind == TicketKind.EXTEND
    assert extension.ticket.status == TicketStatus.AWAITING_APPROVAL
    asks = h.notifier.to(f"user:{casey.id.lower()}", NotificationKind.APPROVAL_REQUESTED)
    assert any(sent.ref == extension.ticket.ref for sent in asks), "approvers decide again"

    h.clock.advance(days=6)
    waiting = await h.service.check_access_expiry()
    assert (waiting.removals, waiting.waiting) == (0, 1), "the end waits for the open extension"
    assert (await h.service.decide(extension.ticket.ref, casey, approve=True)).ok
    await h.runner.run_until_idle()
    extended = await enrollment_of(h, "sasha")
    assert extended.active and extended.access_until == end_of(later)
    assert extended.expiry_reminded_at is None, "the new end date is reminded of afresh"
    assert (await h.service.check_access_expiry()).removals == 0
    assert h.in_sync_group("sasha")

    not_later = await h.service.request_extension(sasha, until=later)
    assert [p.field for p in not_later.problems] == ["until"]


async def test_policy_maximum_bounds_the_end_date(h: Harness) -> None:
    async with workflow_harness(h.engine, h.tenant, h.m365, access={"max_days": 30}) as bounded:
        sasha, rowan, avery = (bounded.person(k) for k in ("sasha", "rowan", "avery"))
        today = bounded.clock.now.date()
        too_long = await bounded.service.request_enrollment(
            sasha, until=today + dt.timedelta(days=31)
        )
        assert [p.field for p in too_long.problems] == ["until"]
        assert "at most 30 days" in too_long.problems[0].message
        past = await bounded.service.request_enrollment(sasha, until=today)
        assert [p.field for p in past.problems] == ["until"]
        unbounded = await bounded.service.request_enrollment(rowan)
        assert unbounded.ticket is not None
        assert unbounded.ticket.access_until == end_of(today + dt.timedelta(days=30)), (
            "with a maximum, a request without an end date gets the maximum"
        )
        fine = await bounded.service.request_enrollment(avery, until=today + dt.timedelta(days=30))
        assert fine.ok, fine.problems


async def test_open_ended_access_is_never_reminded_or_removed(h: Harness) -> None:
    result = await h.service.request_enrollment(h.person("sasha"))
    assert result.ticket is not None and result.ticket.access_until is None
    await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    h.clock.advance(days=4000)
    summary = await h.service.check_access_expiry()
    assert (summary.reminded, summary.removals) == (0, 0)
    extension = await h.service.request_extension(
        h.person("sasha"), until=(h.clock.now + dt.timedelta(days=5)).date()
    )
    assert "no end date" in extension.problems[0].message
