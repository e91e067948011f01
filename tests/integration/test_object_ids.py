"""Entra object ids are stored in one case, so the turn's lookups can use the indexes."""

from __future__ import annotations

from sqlalchemy import select

from syncwarden.workflows.records import Enrollment, Ticket
from tests.support.workflow import Harness


async def test_an_id_typed_in_upper_case_finds_the_same_person(h: Harness) -> None:
    sasha = h.person("sasha")
    result = await h.service.request_enrollment(sasha, justification="drop-ins")
    assert result.ticket is not None
    await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    async with h.sessions() as session:
        stored = await session.scalar(select(Enrollment.subject_id))
    assert stored == sasha.id.lower()

    shouted = sasha.id.upper()
    status = await h.service.status_of(shouted)
    assert status.enrolled_mailbox == "sasha.verhoeven@example.edu"
    assert await h.service.enrollments_of(shouted)


def test_ids_are_stored_in_lower_case_however_they_arrive() -> None:
    assert Enrollment(subject_id=" 5F0E2C7A-93B1 ").subject_id == "5f0e2c7a-93b1"
    ticket = Ticket(subject_id="AB-CD", requester_id="EF")
    assert (ticket.subject_id, ticket.requester_id) == ("ab-cd", "ef")
