"""Access reconciliation at scale: a first run, a steady run, a run after 1% of people left, and
the run that removes them once their grace period is over.

    .venv/bin/python -m bench.reconcile_bench [--people 10000] [--latency-ms 50]

Builds that many enrolled people in the sandbox tenant (all members of the sync group, each with
an active scheduling mapping to their mailbox, so nothing differs), adds the latency to every
Graph request and runs the production reconciler as the service wires it (real msal token, real
HTTPS, SQLite) four times: the first run reads the group and the directory in full, the steady
run finds nothing changed, the third follows 1% of the people being disabled in the directory,
and the last runs once their grace period is over and opens their removal tickets. Beside them,
the reference measured in the same run: one bare users/delta request and one bare group
membership delta request from the stored links (what a steady run cannot do with less). Prints
Graph requests and wall time. Numbers only; nothing is asserted.

The sandbox serves from this process, so wall time includes its CPU; the request counts do not
depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.connectors.graph.directory_changes import LOW_PRIORITY
from syncwarden.connectors.scheduling.builtin import MappingRecord, ProfileRecord
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.logging import configure_logging
from syncwarden.core.settings import Settings
from syncwarden.m365 import build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox import directory_admin
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import running_sandbox
from syncwarden.sync.reconcile_records import DriftRecord, ReconcileLink
from syncwarden.workflow_wiring import build_workflows
from syncwarden.workflows.records import Enrollment
from tests.support.m365 import sandbox_settings

SYNC_GROUP = "Calendar Sync (Graph)"
GOAL_STEADY_REQUESTS = 30


@dataclass
class Measured:
    name: str
    seconds: float
    requests: int
    differences: int | None

    def row(self) -> str:
        found = "-" if self.differences is None else str(self.differences)
        return f"| {self.name} | {self.seconds:.2f} s | {self.requests} | {found} |"


async def main(people: int, latency_ms: float) -> None:
    configure_logging(Settings.model_validate({"log": {"level": "WARNING"}}))
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as scratch:
        async with running_sandbox(state_dir=Path(scratch) / "sandbox") as tenant:
            await run(tenant, Path(scratch), people, latency_ms)


async def run(tenant: SandboxTenant, scratch: Path, people: int, latency_ms: float) -> None:
    database = create_engine(f"sqlite+aiosqlite:///{scratch}/bench.db")
    await upgrade_to_head(database)
    sessions = session_factory(database)
    group = tenant.seed.group_ids[SYNC_GROUP]
    ids = await seed(tenant, sessions, group, people)
    settings = sandbox_settings(tenant, graph={"sync_group_id": group})
    m365 = build_microsoft365(settings)
    await m365.tokens.get_token(m365.endpoints.graph_scope)  # the token is not the run's cost
    workflows = build_workflows(settings, sessions, m365)
    assert workflows is not None
    reconciler = workflows.reconciler  # as the service wires it: leavers' removals included
    tenant.set_knobs(latency_ms=latency_ms)

    async def measure(name: str, work: Callable[[], Awaitable[int | None]]) -> Measured:
        tenant.clear_requests()
        started = time.perf_counter()
        found = await work()
        seconds = time.perf_counter() - started
        requests = sum(1 for r in tenant.requests if not r.path.startswith("/_sandbox"))
        return Measured(name, seconds, requests, found)

    async def reconcile() -> int:
        return len((await reconciler.run()).findings)

    first = await measure("first run (full read)", reconcile)
    steady = await measure("steady run, nothing changed", reconcile)
    links = await stored_links(sessions)
    bare = await measure(
        "reference: the two delta requests alone (bare httpx)", lambda: bare_deltas(tenant, links)
    )
    for person in ids[: max(1, people // 100)]:
        directory_admin.set_enabled(tenant.state, person, False)
    changed = await measure(f"after {max(1, people // 100)} people were disabled", reconcile)
    await past_grace(sessions)

    async def leavers_removed() -> int:
        report = await reconciler.run()
        opened.extend(report.opened)
        return len(report.findings)

    opened: list[str] = []
    removals = await measure("the grace period over: a removal ticket per leaver", leavers_removed)
    print(
        f"{people} enrolled people in the sync group, {latency_ms:g} ms latency per Graph request, "
        "sandbox in this process, SQLite"
    )
    print("| run | wall time | Graph requests | differences found |")
    print("| --- | --- | --- | --- |")
    for measured in (bare, first, steady, changed, removals):
        print(measured.row())
    print(f"removal tickets opened by the last run: {len(opened)} (carried out by the runner)")
    met = "met" if steady.requests <= GOAL_STEADY_REQUESTS else "NOT met"
    print(f"goal: steady run <= {GOAL_STEADY_REQUESTS} Graph requests: {met}")
    await m365.aclose()
    await database.dispose()


async def seed(
    tenant: SandboxTenant, sessions: async_sessionmaker[AsyncSession], group: str, people: int
) -> list[str]:
    """People in the tenant and the group, and their enrollments and mappings, in bulk."""
    ids: list[str] = []
    enrollments: list[dict[str, object]] = []
    profiles: list[dict[str, object]] = []
    mappings: list[dict[str, object]] = []
    for number in range(people):
        upn = f"bench{number:05d}@example.edu"
        user = tenant.add_user(userPrincipalName=upn, displayName=f"Bench {number}")
        tenant.add_group_member(group, user.id)
        ids.append(user.id)
        enrollments.append(
            {
                "subject_id": user.id,
                "subject_upn": upn,
                "subject_name": f"Bench {number}",
                "profile_id": f"P-{number}",
                "mailbox": upn,
                "active": True,
                "paused": False,
            }
        )
        profiles.append({"id": f"P-{number}", "name": f"Bench {number}", "email": upn})
        mappings.append({"profile_id": f"P-{number}", "mailbox": upn, "active": True})
    async with write_transaction(sessions) as session:
        await session.execute(insert(Enrollment), enrollments)
        await session.execute(insert(ProfileRecord), profiles)
        await session.execute(insert(MappingRecord), mappings)
    return ids


async def past_grace(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The leavers were first seen longer ago than the grace period."""
    async with write_transaction(sessions) as session:
        for row in (await session.scalars(select(DriftRecord))).all():
            row.first_seen_at -= timedelta(days=30)


async def stored_links(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with sessions() as session:
        rows = (await session.scalars(select(ReconcileLink))).all()
        return {row.name: row.delta_link for row in rows}


async def bare_deltas(tenant: SandboxTenant, links: dict[str, str]) -> None:
    """One request from each stored link, with nothing around it: a steady run's floor."""
    token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    async with httpx.AsyncClient(
        verify=str(tenant.ca_path), headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as graph:
        for link in links.values():
            (await graph.get(link, headers=LOW_PRIORITY)).raise_for_status()
    return None


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=10000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(main(args.people, args.latency_ms))


if __name__ == "__main__":
    cli()
