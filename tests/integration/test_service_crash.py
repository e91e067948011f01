"""Kill the whole service (SIGKILL) at random points while 50 requests are approved and provisioned.

``syncwarden serve`` runs as a real child process in sandbox mode against the sandbox tenant of
this test process and the test's database. Fifty invented people on example.edu ask for calendar
sync over ``/api/messages`` as Teams sends it (the message, then the request card's submission),
and the seed's two approvers approve each request with the card's Approve button; an activity the
service did not answer (down, 5xx, 429) is sent again, as a person would try again. Meanwhile
the service is killed 24 times and started again each time: mostly at random moments (0.5 to
2.5 s after it starts listening), four times while a call to the sandbox tenant is in flight and
four times while a message it sent to Teams is still unanswered. A last, clean generation then
runs until every ticket is completed and the outbox is empty.

What must hold (issue 12, item 9): every ticket completed, each person added to the sync group
exactly once, every message each ticket's life produces reached Teams at least once (the "created"
status line, the approval cards to both approvers and the approvals channel, the approval and
completion messages and the set-up instructions to the person, the IT channel's status lines), and a
message reached Teams twice only when a kill fell between its send and the outbox's record of it (at
most one per message the outbox had under way: its delivery slots). Each approval card the service
knows of (the last copy posted) ends up showing the completed ticket; an earlier copy that a kill
left unrecorded may stay as it was posted. The test prints one report line with the counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import watching_group_adds
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox_dispatch import CLAIM_SECONDS, DELIVERY_CONCURRENCY
from tests.support.process import free_port
from tests.support.service_crash import (
    Delivery,
    Driver,
    Ledger,
    Supervisor,
    TeamsConnector,
    TicketFacts,
    cast_people,
    completed_tickets,
    kill_plan,
    name_channels,
    outbox,
    poll_until,
    run_chaos,
    service_environment,
    tickets_by_subject,
    work_left,
)

PEOPLE = 50
KILLS = 24
KILLS_DURING_SANDBOX_CALLS = 4
KILLS_DURING_TEAMS_SENDS = 4
SEED = 20261123
CONCURRENCY = 6  # people asking at once
# A random kill falls this long (uniformly, in seconds) after a generation starts listening.
RANDOM_KILL_SECONDS = (0.5, 2.5)
# A message whose send a kill interrupted is sent again only when the outbox's claim on it
# runs out (CLAIM_SECONDS, a minute), so the final run may have to wait that long; this
# bounds it, it does not time anything.
DRAIN_LIMIT_SECONDS = CLAIM_SECONDS + 240.0
DRIVER_LIMIT_SECONDS = 300.0


async def test_no_ticket_or_message_is_lost_when_the_service_is_killed(
    tenant: SandboxTenant, migrated_engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    backend = make_url(database_url).get_backend_name()
    cast = await cast_people(tenant, migrated_engine, PEOPLE)
    group_id = tenant.seed.group_ids["Calendar Sync"]
    port = free_port()
    supervisor = Supervisor(service_environment(tenant, database_url, port), cwd=tmp_path)
    connector = await TeamsConnector(lambda: supervisor.generation).start()
    await name_channels(migrated_engine, connector, tenant.tenant_id)
    rng = Random(SEED)
    plan = kill_plan(rng, KILLS, KILLS_DURING_SANDBOX_CALLS, KILLS_DURING_TEAMS_SENDS)
    with watching_group_adds(tenant, group_id) as adds:
        try:
            await supervisor.start()
            async with aiohttp.ClientSession() as http:
                driver = Driver(
                    http, f"http://127.0.0.1:{port}", supervisor, connector, tenant.tenant_id
                )
                await driver.setup(cast)
                driving = asyncio.create_task(driver.run(cast, CONCURRENCY))
                chaos = asyncio.create_task(
                    run_chaos(supervisor, tenant, connector, rng, plan, between=RANDOM_KILL_SECONDS)
                )
                try:
                    await _until_chaos_ends(chaos, driving)
                    kinds = await chaos
                    approved_during_chaos = len(driver.stats.approved)
                    completed_during_chaos = await completed_tickets(migrated_engine)
                    async with asyncio.timeout(DRIVER_LIMIT_SECONDS):
                        await driving
                finally:
                    for task in (driving, chaos):
                        task.cancel()
                chaos_over = time.monotonic()
                await poll_until(lambda: work_left(migrated_engine, PEOPLE), DRAIN_LIMIT_SECONDS)
                drain_seconds = time.monotonic() - chaos_over
        finally:
            await supervisor.stop()
            await connector.close()

    tickets = await tickets_by_subject(migrated_engine)
    facts = [
        TicketFacts(tickets[person.user_id.lower()][0][0], person)
        for person in cast.requesters
        if tickets.get(person.user_id.lower())
    ]
    members = tenant.group_member_ids(group_id)
    attempts = sum(adds.exchange_attempts[p.user_id] for p in cast.requesters)
    attempts += adds.graph_attempts(tenant)
    killed = {kill.generation for kill in supervisor.kills}
    ledger = Ledger(
        cast,
        connector.deliveries,
        killed,
        await outbox(migrated_engine),
        in_flight=DELIVERY_CONCURRENCY,
    )
    gaps = ledger.missing(facts)
    unqueued = ledger.never_queued(gaps)
    repeats = ledger.repeats()
    unexplained = ledger.unexplained_repeats()
    stale = ledger.stale_cards()
    stats = driver.stats
    retried = stats.retried_down + stats.retried_5xx + stats.retried_429 + stats.apologies
    completed = sum(1 for theirs in tickets.values() for _, s in theirs if s == "completed")
    print(
        f"\nservice crash [{backend}, seed {SEED}]: {len(supervisor.kills)} kills "
        f"({_counts(kinds)}); while killing {approved_during_chaos}/{PEOPLE} approved and "
        f"{completed_during_chaos} completed; {completed}/{PEOPLE} tickets completed in the end; "
        f"sync group: {sum(adds.effects.values())} adds from {attempts} attempts; Teams: "
        f"{ledger.sends} messages, {_extra(repeats)} duplicates ({_extra(unexplained)} outside "
        f"the crash window), {sum(map(len, gaps.values()))} lost "
        f"({sum(map(len, unqueued.values()))} never queued), {len(stale)} stale approval cards "
        f"(and {ledger.stale_orphans()} stale copies left by a kill), "
        f"{ledger.others()} messages about no ticket, {ledger.updates()} card updates, "
        f"{ledger.replies()} replies; driver: {stats.sent} posts, {retried} retried "
        f"({stats.retried_down} down, {stats.retried_5xx} 5xx, {stats.retried_429} 429, "
        f"{stats.apologies} apologies); start-up {_mean(supervisor.startup_seconds):.1f} s; "
        f"drain {drain_seconds:.0f} s; runtime {time.monotonic() - began:.0f} s; "
        f"service ERROR lines: {_counts(supervisor.errors()) or 'none'}"
    )

    assert len(supervisor.kills) >= 20
    for person in cast.requesters:
        theirs = tickets.get(person.user_id.lower(), [])
        assert [status for _, status in theirs] == [TicketStatus.COMPLETED], (person.upn, theirs)
    for person in cast.requesters:
        assert members.count(person.user_id) == 1, person.upn
        assert adds.effects[person.user_id] == 1, (person.upn, adds.effects[person.user_id])
    assert not gaps, f"lost messages {gaps}; of these never queued in the outbox: {unqueued}"
    assert not ledger.failed(), ledger.failed()
    assert not ledger.unmatched(), ledger.unmatched()
    assert not unexplained, {
        key: [(copy.seq, copy.generation) for copy in copies] for key, copies in unexplained.items()
    }
    assert ledger.repeats_per_kill() <= DELIVERY_CONCURRENCY
    assert not stale, f"approval cards not showing the completed ticket: {stale}"


async def _until_chaos_ends(chaos: asyncio.Task[Any], driving: asyncio.Task[Any]) -> None:
    """Wait for the killing to end; a failure of either task is raised at once, so a driver
    that fails early does not wait for the rest of the killing."""
    waiting = {chaos, driving}
    while chaos in waiting:
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error


def _extra(copies: dict[str, list[Delivery]]) -> int:
    """How many copies beyond the first."""
    return sum(len(sent) - 1 for sent in copies.values())


def _counts(kinds: Counter[str]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
