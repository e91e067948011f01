"""The sync worker against the sandbox tenant at scale: first sync, steady state, forced resync.

    .venv/bin/python -m bench.sync_bench [--people 1000] [--appointments 40] [--latency-ms 50]

Builds that many people in the sandbox (all in the sync group, so inside the access policy),
each with that many appointments in the built-in source, and runs the production engine and
worker (real msal token, real HTTPS, SQLite) three ways: the first sync, a steady-state run after
1% of appointments changed, and a forced full resync of the same data. Prints wall time, Graph
requests (a ``$batch`` counts once), requests per mailbox, ``$batch`` calls the sandbox refused
(as Graph refuses a ``dependsOn`` shape it does not run), 429 answers seen (each retried), writes
that still failed, and people whose run failed, side by side. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncwarden.connectors.errors import BadRequestError
from syncwarden.connectors.graph.client import BatchRequest
from syncwarden.connectors.scheduling.ports import Appointment
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.logging import configure_logging
from syncwarden.core.settings import Settings, SyncSettings
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import running_sandbox
from syncwarden.sync.engine import SyncOptions, SyncReport
from syncwarden.workflow_wiring import build_calendar_sync
from syncwarden.workflows.records import Enrollment
from tests.support.m365 import sandbox_settings
from tests.support.notifier import RecordingNotifier, recording_units

SYNC_GROUP = "Calendar Sync"


@dataclass
class Measured:
    name: str
    seconds: float
    requests: int
    refused_batches: int
    throttled: int
    people: int
    failed_writes: int
    failed: int
    writes: int

    def row(self) -> str:
        per_mailbox = self.requests / max(1, self.people)
        return (
            f"| {self.name} | {self.seconds:.1f} s | {self.requests} | {per_mailbox:.2f} | "
            f"{self.refused_batches} | {self.throttled} | {self.writes} | {self.failed_writes} | "
            f"{self.failed} |"
        )


async def main(people: int, appointments: int, latency_ms: float, concurrency: int) -> None:
    configure_logging(Settings.model_validate({"log": {"level": "WARNING"}}))
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as scratch:
        async with running_sandbox(state_dir=Path(scratch) / "sandbox") as tenant:
            await run(tenant, Path(scratch), people, appointments, latency_ms, concurrency)


async def run(
    tenant: SandboxTenant,
    scratch: Path,
    people: int,
    appointments: int,
    latency_ms: float,
    concurrency: int,
) -> None:
    database = create_engine(f"sqlite+aiosqlite:///{scratch}/bench.db")
    await upgrade_to_head(database)
    sessions = session_factory(database)
    settings = sandbox_settings(tenant, sync=SyncSettings(concurrency=concurrency).model_dump())
    m365 = build_microsoft365(settings)
    sync = build_calendar_sync(settings, recording_units(sessions, RecordingNotifier()), m365)
    group = tenant.seed.group_ids[SYNC_GROUP]
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(7)  # noqa: S311 - repeatable test data, not secrecy
    async with write_transaction(sessions) as session:
        for number in range(people):
            upn = f"bench{number:05d}@example.edu"
            user = tenant.add_user(userPrincipalName=upn, displayName=f"Bench {number}")
            tenant.add_group_member(group, user.id)
            session.add(
                Enrollment(
                    subject_id=user.id,
                    subject_upn=upn,
                    subject_name=f"Bench {number}",
                    profile_id=f"P-{number}",
                    mailbox=upn,
                    active=True,
                    paused=False,
                )
            )
    tenant.propagate_access_policy(tenant.seed.app_ids["Syncwarden"])
    for number in range(people):
        starts = [
            now + timedelta(days=rng.randint(-10, 100), hours=rng.randint(8, 17))
            for _ in range(appointments)
        ]
        await sync.appointments.upsert(
            f"P-{number}",
            [
                Appointment(f"A-{number}-{i}", "Appointment", start, start + timedelta(minutes=50))
                for i, start in enumerate(starts)
            ],
        )
    tenant.set_knobs(latency_ms=latency_ms)

    async def measure(name: str, options: SyncOptions) -> Measured:
        tenant.clear_requests()
        await sync.worker.request()
        started = time.perf_counter()
        reports: list[SyncReport] = await sync.worker.run_requested(options)
        seconds = time.perf_counter() - started
        log = tenant.requests
        return Measured(
            name,
            seconds,
            sum(1 for r in log if not r.in_batch and not r.path.startswith("/adminapi")),
            sum(1 for r in log if r.path == "/$batch" and r.status == 400),
            sum(1 for r in log if r.status == 429),
            len(reports),
            sum(r.failed_writes for r in reports),
            sum(1 for r in reports if not r.ok),
            sum(r.writes for r in reports),
        )

    first = await measure("first sync", SyncOptions())
    changed = max(1, people * appointments // 100)
    for _ in range(changed):
        number, index = rng.randrange(people), rng.randrange(appointments)
        start = now + timedelta(days=rng.randint(1, 100), hours=9)
        await sync.appointments.upsert(
            f"P-{number}",
            [
                Appointment(
                    f"A-{number}-{index}",
                    "Appointment",
                    start,
                    start + timedelta(minutes=50),
                    "Europe/London",
                )
            ],
        )
    steady = await measure(f"steady state, {changed} changed (1%)", SyncOptions())
    full = await measure("forced full resync", SyncOptions(full=True))
    print(
        f"{people} people x {appointments} appointments, {latency_ms:g} ms latency, "
        f"{concurrency} people at once"
    )
    print(
        "| run | wall time | Graph requests | per mailbox | refused batches | 429s (retried) "
        "| writes | failed writes | failed people |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for measured in (first, steady, full):
        print(measured.row())
    print(await former_lanes_reference(m365, tenant))
    await m365.aclose()
    await database.dispose()


async def former_lanes_reference(m365: Microsoft365, tenant: SandboxTenant) -> str:
    """The same sandbox, sent one batch in the shape the engine used before: four dependsOn lanes.

    The reference for the "refused batches" column: it shows the sandbox refuses what Graph
    refuses, so the zeros above are earned, not a sandbox that accepts anything.
    """
    mailbox = tenant.seed.user_ids["avery.quinlan@example.edu"]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    requests = [
        BatchRequest(
            str(index),
            "POST",
            f"/users/{mailbox}/events",
            {
                "subject": "Lane",
                "start": {"dateTime": f"{start:%Y-%m-%dT%H:%M:%S}", "timeZone": "UTC"},
                "end": {"dateTime": f"{start:%Y-%m-%dT%H:%M:%S}", "timeZone": "UTC"},
            },
            depends_on=[str(index - 4)] if index >= 4 else None,
        )
        for index in range(20)
    ]
    try:
        await m365.graph.request(
            "POST", "$batch", json_body={"requests": [r.as_json() for r in requests]}
        )
    except BadRequestError as refused:
        return f"reference: the former four-lane dependsOn batch of 20 writes: refused ({refused})"
    return "reference: the former four-lane dependsOn batch of 20 writes: ACCEPTED (unexpected)"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--appointments", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.people, args.appointments, args.latency_ms, args.concurrency))


if __name__ == "__main__":
    cli()
