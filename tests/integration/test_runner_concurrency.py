"""Two runners (two connection pools, as two processes would have) share one queue of steps.

On PostgreSQL claims use FOR UPDATE SKIP LOCKED; on SQLite they queue on the write lock. Either
way no step may run twice and every ticket must finish.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import create_engine, session_factory
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import Person
from syncwarden.workflows.runner import StepRunner
from syncwarden.workflows.steps import StepContext, StepHandler, StepName, StepOutcome
from tests.support.notifier import recording_units
from tests.support.workflow import Harness

STAFF = 20


def counting(
    handlers: dict[StepName, StepHandler], calls: Counter[str], runner: str, ran: Counter[str]
) -> dict[StepName, StepHandler]:
    def wrap(handler: StepHandler) -> StepHandler:
        async def counted(context: StepContext) -> StepOutcome:
            calls[context.idempotency_key] += 1
            ran[runner] += 1
            return await handler(context)

        return counted

    return {name: wrap(handler) for name, handler in handlers.items()}


async def test_two_runners_never_run_one_step_twice(h: Harness, database_url: str) -> None:
    h.tenant.set_knobs(latency_ms=15)
    refs = []
    for index in range(STAFF):
        upn = f"staff{index:02d}@example.edu"
        h.tenant.add_user(userPrincipalName=upn, displayName=f"Staff Member {index:02d}")
        await h.scheduling.upsert_profile(Profile(f"prof-staff-{index}", f"Staff {index}", upn))
        person = await h.m365.directory.get_user(upn)
        result = await h.service.request_enrollment(Person(person.id, person.display_name, upn))
        assert result.ticket is not None, result.problems
        decided = await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
        assert decided.ok
        refs.append(result.ticket.ref)

    calls: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    base_handlers = dict(h.handlers)
    second_engine = create_engine(database_url)
    try:
        runners = [
            StepRunner(
                recording_units(session_factory(engine), h.notifier, clock=h.clock),
                counting(base_handlers, calls, name, ran),
                h.provisioning,
                owner=name,
                clock=h.clock,
            )
            for name, engine in (("first", h.engine), ("second", second_engine))
        ]
        await asyncio.gather(*(runner.run_until_idle() for runner in runners))
    finally:
        await second_engine.dispose()

    assert len(calls) == STAFF * 4
    assert set(calls.values()) == {1}, [key for key, count in calls.items() if count > 1]
    assert ran["first"] > 0 and ran["second"] > 0, f"both runners should have worked: {ran}"
    for ref in refs:
        ticket = await h.service.get_ticket(ref)
        assert ticket is not None and ticket.status == TicketStatus.COMPLETED
