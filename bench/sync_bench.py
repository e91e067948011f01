"""The sync engine's CPU at scale, against the sandbox tenant running in a process of its own.

    .venv/bin/python -m bench.sync_bench [--people 100] [--appointments 200] [--latency-ms 50]
        [--concurrency 16] [--shared-people 2000] [--shared-appointments 5]
        [--database-url URL] [--profile DIR]

The sandbox runs as a child process (``syncwarden.sandbox_process``), as ``serve --sandbox``
runs it, so this process's CPU time (``time.process_time``) is the engine's alone: the worker,
the engine, httpx, msal and the database driver (SQLite runs inside it; PostgreSQL's server does
not). The sandbox's CPU is read from ``/proc/<pid>/stat`` and shown beside it.

Part one, ``--people`` people with ``--appointments`` each (production engine and worker, real
msal token, real HTTPS): the first sync (engine CPU per pushed event), a quiet pass where nothing
changed (engine CPU and SQL statements per person), and beside it the same delta request made by
a bare ``httpx`` client in the same run (its CPU and wall time per request: the floor a quiet
person cannot go below), then a pass after 1% of appointments changed and a forced full resync.
The quiet pass and the bare requests run ``--rounds`` times (3), alternating, and the quiet
person's goal takes the median of the rounds' ratios, so that a slow spell of the shared machine
during one side of one round does not decide it.

Part two, on PostgreSQL only (``--database-url`` or ``SYNCWARDEN_TEST_POSTGRES_URL``):
``--shared-people`` people are synced once, then two worker processes (each builds the
production worker as ``syncwarden worker`` does) run one quiet pass together; each reports how
many people it took and its CPU. Both must take a share.

Numbers only; nothing is asserted. ``--people 20 --shared-people 200`` is a quick look.
``--profile DIR`` writes cProfile stats (CPU clock) of the first sync and the quiet pass; the
profiler's own cost inflates the CPU printed for those two runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.scheduling.builtin_appointments import AppointmentRecord
from syncwarden.connectors.tls import ssl_context
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.logging import configure_logging
from syncwarden.core.settings import Settings
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import SandboxProcess, settings_for_sandbox, start_sandbox
from syncwarden.sync.engine import SyncOptions, SyncReport
from syncwarden.sync.records import SyncState
from syncwarden.workflow_wiring import CalendarSync, build_calendar_sync
from syncwarden.workflows.records import Enrollment
from tests.support.notifier import RecordingNotifier, recording_units

SYNC_GROUP = "Calendar Sync"
GRAPH_APP = "Syncwarden"
POSTGRES_ENV = "SYNCWARDEN_TEST_POSTGRES_URL"
DELTA_PAGE = {"Prefer": "odata.maxpagesize=200"}  # what the engine's delta requests carry


# -- measuring -------------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) another process has used so far; None where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


class StatementCounter:
    """Counts the SQL statements the engine sends (every cursor execute, BEGIN and COMMIT too)."""

    def __init__(self, database: AsyncEngine) -> None:
        self.count = 0
        event.listen(database.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


@dataclass
class Measured:
    name: str
    people: int
    seconds: float
    engine_cpu: float
    sandbox_cpu: float | None
    statements: int
    requests: tuple[int, int]
    writes: int
    created: int
    failed: int

    def row(self) -> str:
        per_person = self.engine_cpu / max(1, self.people) * 1000
        per_event = f"{self.engine_cpu / self.created * 1000:.2f} ms" if self.created else "-"
        sandbox = f"{self.sandbox_cpu:.1f} s" if self.sandbox_cpu is not None else "n/a"
        requests, throttled = self.requests
        return (
            f"| {self.name} | {self.people} | {self.seconds:.1f} s | {requests} "
            f"({requests / max(1, self.people):.2f}) | {throttled} | {self.writes} | "
            f"{self.failed} | "
            f"{self.engine_cpu:.2f} s | {per_person:.2f} ms | {per_event} | "
            f"{self.statements / max(1, self.people):.1f} | {sandbox} |"
        )


HEADER = (
    "| run | people | wall time | Graph requests (per mailbox) | 429s (retried) | writes "
    "| failed people | engine CPU | per person | per pushed event | SQL statements per person "
    "| sandbox CPU |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


# -- the sandbox, steered over its admin endpoints -----------------------------------------------


class SandboxAdmin:
    """The sandbox child's ``/_sandbox`` endpoints: the same steering tests do in-process."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.ready = sandbox.ready
        self.pid = sandbox.process.pid
        self._http = httpx.AsyncClient(
            base_url=f"{sandbox.ready['base_url']}/_sandbox",
            verify=ssl_context(Path(sandbox.ready["ca_path"])),
            timeout=120,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def cpu(self) -> float | None:
        return process_cpu(self.pid)

    async def add_people(self, upns: list[str]) -> dict[str, str]:
        """Users with mailboxes, all in the sync group (inside the access policy); upn -> id."""
        group = self.ready["groups"][SYNC_GROUP]
        gate = asyncio.Semaphore(16)

        async def one(upn: str) -> tuple[str, str]:
            async with gate:
                made = await self._http.post(
                    "/users", json={"userPrincipalName": upn, "displayName": upn.split("@")[0]}
                )
                made.raise_for_status()
                user_id = str(made.json()["id"])
                added = await self._http.post(f"/groups/{group}/members", json={"member": user_id})
                added.raise_for_status()
                return upn, user_id

        people = dict(await asyncio.gather(*(one(upn) for upn in upns)))
        app = self.ready["apps"][GRAPH_APP]["client_id"]
        (await self._http.post(f"/access-policies/{app}/propagate")).raise_for_status()
        return people

    async def set_latency(self, milliseconds: float) -> None:
        (await self._http.patch("/knobs", json={"latency_ms": milliseconds})).raise_for_status()

    async def clear_requests(self) -> None:
        (await self._http.delete("/requests")).raise_for_status()

    async def graph_requests(self) -> tuple[int, int]:
        """Graph calls since the last clear (a ``$batch`` counts once), and 429s among them."""
        answer = await self._http.get("/requests")
        answer.raise_for_status()
        graph = [
            r
            for r in answer.json()["requests"]
            if not r["in_batch"] and not str(r["path"]).startswith("/adminapi")
        ]
        return len(graph), sum(1 for r in graph if r["status"] == 429)


# -- the database and the production objects on it ---------------------------------------------


@asynccontextmanager
async def fresh_database(url: str | None, scratch: Path, name: str) -> AsyncIterator[str]:
    """An empty database: a new PostgreSQL database beside ``url`` (dropped after), or SQLite."""
    if url is None:
        yield f"sqlite+aiosqlite:///{scratch}/{name}.db"
        return
    admin_url = make_url(url)
    database = f"sw_bench_{name}_{uuid.uuid4().hex[:8]}"
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        yield admin_url.set(database=database).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def bench_settings(ready: dict[str, Any], database_url: str, concurrency: int) -> Settings:
    """Production settings aimed at the sandbox child, as ``serve --sandbox`` aims them."""
    base = Settings.model_validate(
        {
            "mode": "sandbox",
            "database": {"url": database_url},
            "sync": {"concurrency": concurrency, "subject_template": "{subject}"},
            "log": {"level": "WARNING"},
        }
    )
    return settings_for_sandbox(base, ready)


@dataclass
class Stack:
    settings: Settings
    database: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    sync: CalendarSync
    statements: StatementCounter


@asynccontextmanager
async def production_stack(
    ready: dict[str, Any], database_url: str, concurrency: int, m365: Microsoft365 | None = None
) -> AsyncIterator[tuple[Stack, Microsoft365]]:
    """The database engine, the connectors and the sync worker, built as the server builds them."""
    settings = bench_settings(ready, database_url, concurrency)
    async with AsyncExitStack() as stack:
        database = create_engine(database_url, pool_size=settings.database.pool_size)
        stack.push_async_callback(database.dispose)
        await upgrade_to_head(database)
        sessions = session_factory(database)
        if m365 is None:
            m365 = build_microsoft365(settings)
            stack.push_async_callback(m365.aclose)
        sync = build_calendar_sync(settings, recording_units(sessions, RecordingNotifier()), m365)
        yield Stack(settings, database, sessions, sync, StatementCounter(database)), m365


async def seed_people(
    admin: SandboxAdmin,
    stack: Stack,
    prefix: str,
    people: int,
    appointments: int,
    rng: random.Random,
) -> None:
    """People in the sandbox and the database, each with ``appointments`` in the next 100 days."""
    upns = [f"{prefix}{number:05d}@example.edu" for number in range(people)]
    ids = await admin.add_people(upns)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with write_transaction(stack.sessions) as session:
        session.add_all(
            Enrollment(
                subject_id=ids[upn].lower(),
                subject_upn=upn,
                subject_name=upn.split("@")[0],
                profile_id=f"{prefix}-{number}",
                mailbox=upn,
                active=True,
                paused=False,
            )
            for number, upn in enumerate(upns)
        )
        rows = []
        for number in range(people):
            for index in range(appointments):
                start = now + timedelta(days=rng.randint(-10, 100), hours=rng.randint(8, 17))
                rows.append(
                    {
                        "profile_id": f"{prefix}-{number}",
                        "id": f"A-{number}-{index}",
                        "subject": f"Client {index}",
                        "start_at": start,
                        "end_at": start + timedelta(minutes=50),
                        "time_zone": "Europe/London",
                        "all_day": False,
                        "cancelled": False,
                        "updated_at": now,
                    }
                )
        for first in range(0, len(rows), 5000):
            await session.execute(insert(AppointmentRecord), rows[first : first + 5000])


async def measure(
    name: str,
    admin: SandboxAdmin,
    stack: Stack,
    options: SyncOptions,
    profile: Path | None = None,
) -> Measured:
    """One requested run over everyone, timed in wall clock, our CPU and the sandbox's CPU."""
    await admin.clear_requests()
    await stack.sync.worker.request()
    statements = stack.statements.count
    sandbox_before = admin.cpu()
    profiler = cProfile.Profile(time.process_time) if profile else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    reports: list[SyncReport] = await stack.sync.worker.run_requested(options)
    if profiler:
        profiler.disable()
    engine_cpu = time.process_time() - cpu
    seconds = time.perf_counter() - started
    sandbox_after = admin.cpu()
    if profiler and profile:
        profiler.dump_stats(profile / f"{name.split(',')[0].replace(' ', '-')}.prof")
    return Measured(
        name,
        len(reports),
        seconds,
        engine_cpu,
        None if sandbox_before is None or sandbox_after is None else sandbox_after - sandbox_before,
        stack.statements.count - statements,
        await admin.graph_requests(),
        sum(r.writes for r in reports),
        sum(r.created + r.recreated for r in reports),
        sum(1 for r in reports if not r.ok),
    )


async def bare_delta(
    admin: SandboxAdmin, stack: Stack, m365: Microsoft365, concurrency: int
) -> tuple[int, float, float]:
    """Everyone's stored delta link asked once by a plain httpx client: (requests, CPU, wall).

    The same request the engine's quiet round makes (token, Prefer header, JSON answer), with
    none of the engine around it; the token is taken beforehand, as the engine's is cached.
    """
    async with stack.sessions() as session:
        links = [
            link
            for link in (await session.scalars(select(SyncState.delta_link))).all()
            if link is not None
        ]
    token = await m365.tokens.get_token(m365.endpoints.graph_scope)
    headers = {"Authorization": f"Bearer {token}", **DELTA_PAGE}
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(verify=ssl_context(Path(admin.ready["ca_path"]))) as bare:

        async def one(link: str) -> None:
            async with gate:
                answer = await bare.get(link, headers=headers)
                answer.raise_for_status()
                if answer.json().get("value"):
                    raise RuntimeError("the bare delta request saw changes; nothing should change")

        # Connections and TLS set up outside the measurement, as the engine's are by then.
        await asyncio.gather(*(one(link) for link in links[:concurrency]))
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(link) for link in links))
        return len(links), time.process_time() - cpu, time.perf_counter() - started


async def change_one_percent(stack: Stack, people: int, appointments: int, prefix: str) -> int:
    rng = random.Random(11)  # noqa: S311 - repeatable test data, not secrecy
    changed = max(1, people * appointments // 100)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with write_transaction(stack.sessions) as session:
        for _ in range(changed):
            number, index = rng.randrange(people), rng.randrange(appointments)
            start = now + timedelta(days=rng.randint(1, 100), hours=9)
            await session.execute(
                update(AppointmentRecord)
                .where(
                    AppointmentRecord.profile_id == f"{prefix}-{number}",
                    AppointmentRecord.id == f"A-{number}-{index}",
                )
                .values(start_at=start, end_at=start + timedelta(minutes=50))
            )
    return changed


# -- part one: one process -----------------------------------------------------------------------


async def one_process(
    admin: SandboxAdmin, args: argparse.Namespace, database_url: str, profile: Path | None
) -> None:
    async with production_stack(admin.ready, database_url, args.concurrency) as (stack, m365):
        await seed_people(
            admin,
            stack,
            "bench",
            args.people,
            args.appointments,
            random.Random(7),  # noqa: S311
        )
        await admin.set_latency(args.latency_ms)
        first = await measure("first sync", admin, stack, SyncOptions(), profile)
        # The first quiet pass reopens connections idle since the first sync; the second runs
        # on warm ones, as the bare client below does.
        cold = await measure("quiet pass, new connections", admin, stack, SyncOptions())
        # Quiet passes and the bare requests alternate (quiet first in odd rounds), so that a
        # slow spell of the shared machine falls on both; the goal takes the rounds' median.
        quiets: list[Measured] = []
        bares: list[tuple[int, float, float]] = []
        for number in range(max(1, args.rounds)):
            name = f"quiet pass, nothing changed (round {number + 1})"
            if number % 2 == 0:
                quiets.append(await measure(name, admin, stack, SyncOptions(), profile))
                bares.append(await bare_delta(admin, stack, m365, args.concurrency))
            else:
                bares.append(await bare_delta(admin, stack, m365, args.concurrency))
                quiets.append(await measure(name, admin, stack, SyncOptions()))
            profile = None  # cProfile for the first round only
        changed = await change_one_percent(stack, args.people, args.appointments, "bench")
        steady = await measure(f"{changed} changed (1%)", admin, stack, SyncOptions())
        full = await measure("forced full resync", admin, stack, SyncOptions(full=True))
        backend = make_url(database_url).get_backend_name()
        print(
            f"\n{args.people} people x {args.appointments} appointments, {args.latency_ms:g} ms "
            f"latency, {args.concurrency} people at once, {backend}, pool "
            f"{stack.settings.database.pool_size}"
        )
        print(HEADER)
        for measured in (first, cold, *quiets, steady, full):
            print(measured.row())
        quiet_ms = [q.engine_cpu / max(1, q.people) * 1000 for q in quiets]
        bare_ms = [cpu / max(1, count) * 1000 for count, cpu, _wall in bares]
        ratios = [ours / bare for ours, bare in zip(quiet_ms, bare_ms, strict=True)]
        per_event = first.engine_cpu / max(1, first.created) * 1000
        count, _cpu, _wall = bares[0]
        walls = ", ".join(f"{wall / max(1, n) * 1000:.1f}" for n, _cpu, wall in bares)
        print(
            f"\nreference, same run: the quiet pass's delta request from a bare httpx client: "
            f"{', '.join(f'{ms:.2f}' for ms in bare_ms)} ms CPU and {walls} ms wall per "
            f"request by round ({count} requests, {args.concurrency} at once)"
        )
        print(
            f"quiet person: {', '.join(f'{ms:.2f}' for ms in quiet_ms)} ms engine CPU = "
            f"{', '.join(f'{r:.1f}x' for r in ratios)} the bare request by round, median "
            f"{statistics.median(ratios):.1f}x (goal <= 2x); first sync: {per_event:.2f} ms "
            f"engine CPU per pushed event (goal <= 0.5 ms)"
        )


# -- part two: two worker processes share a quiet pass -------------------------------------------


async def two_processes(
    admin: SandboxAdmin, args: argparse.Namespace, database_url: str, scratch: Path
) -> None:
    async with production_stack(admin.ready, database_url, args.concurrency) as (stack, _m365):
        await seed_people(
            admin,
            stack,
            "shared",
            args.shared_people,
            args.shared_appointments,
            random.Random(9),  # noqa: S311 - repeatable test data, not secrecy
        )
        await admin.set_latency(args.latency_ms)
        first = await measure("first sync (shared set, one process)", admin, stack, SyncOptions())
        # The periodic run skips anyone synced within half an interval: this pass is the next one.
        async with write_transaction(stack.sessions) as session:
            await session.execute(update(SyncState).values(last_run_started_at=None))
    config = scratch / "worker-child.json"
    config.write_text(
        json.dumps(
            {"ready": admin.ready, "database_url": database_url, "concurrency": args.concurrency}
        )
    )
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sync_bench",
            "--child-worker",
            str(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for child in children:  # each has built its worker and taken its token
        assert child.stdout is not None
        if not await child.stdout.readline():
            raise RuntimeError("a worker process did not start; its error is above")
    await admin.clear_requests()
    sandbox_before = admin.cpu()
    started = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    results = []
    for child in children:
        assert child.stdout is not None
        line = await child.stdout.readline()
        if not line:
            raise RuntimeError("a worker process failed; its error is above")
        results.append(json.loads(line))
        await child.wait()
    seconds = time.perf_counter() - started
    sandbox_after = admin.cpu()
    sandbox = (
        f"{sandbox_after - sandbox_before:.1f} s"
        if sandbox_before is not None and sandbox_after is not None
        else "n/a"
    )
    print(
        f"\n{args.shared_people} people x {args.shared_appointments} appointments, "
        f"PostgreSQL, {args.concurrency} people at once per process"
    )
    print(HEADER)
    print(first.row())
    print(
        "\n| quiet pass, two worker processes | people taken | failed | wall time | engine CPU "
        "| per person |\n| --- | --- | --- | --- | --- | --- |"
    )
    for number, result in enumerate(results, 1):
        per_person = result["cpu"] / max(1, result["people"]) * 1000
        print(
            f"| worker {number} | {result['people']} | {result['failed']} | "
            f"{result['seconds']:.1f} s | {result['cpu']:.2f} s | {per_person:.2f} ms |"
        )
    total = sum(r["people"] for r in results)
    print(
        f"| both | {total} | {sum(r['failed'] for r in results)} | {seconds:.1f} s | "
        f"{sum(r['cpu'] for r in results):.2f} s | sandbox CPU {sandbox}, "
        f"{(await admin.graph_requests())[0]} Graph requests |"
    )


async def child_worker(config: dict[str, Any]) -> None:
    """One worker process of part two: set up, say so, wait for "go", run one periodic pass."""
    configure_logging(Settings.model_validate({"log": {"level": "WARNING"}}))
    async with production_stack(config["ready"], config["database_url"], config["concurrency"]) as (
        stack,
        m365,
    ):
        await m365.tokens.get_token(m365.endpoints.graph_scope)
        print(json.dumps({"event": "ready"}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started, cpu = time.perf_counter(), time.process_time()
        reports = await stack.sync.worker.run_all()
        result = {
            "people": len(reports),
            "failed": sum(1 for r in reports if not r.ok),
            "cpu": time.process_time() - cpu,
            "seconds": time.perf_counter() - started,
        }
        print(json.dumps(result), flush=True)


# -- the command ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    configure_logging(Settings.model_validate({"log": {"level": "WARNING"}}))
    postgres = args.database_url or os.environ.get(POSTGRES_ENV)
    profile = Path(args.profile) if args.profile else None
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as folder:
        scratch = Path(folder)
        sandbox = await start_sandbox(scratch / "sandbox")
        admin = SandboxAdmin(sandbox)
        try:
            async with fresh_database(postgres, scratch, "one") as url:
                await one_process(admin, args, url, profile)
            if args.shared_people and postgres:
                async with fresh_database(postgres, scratch, "two") as url:
                    await two_processes(admin, args, url, scratch)
            elif args.shared_people:
                print(f"\ntwo worker processes: skipped (PostgreSQL only; set {POSTGRES_ENV})")
        finally:
            await admin.aclose()
            await sandbox.stop()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--appointments", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=3, help="quiet passes, each beside a bare round"
    )
    parser.add_argument("--shared-people", type=int, default=2000, help="0 skips part two")
    parser.add_argument("--shared-appointments", type=int, default=5)
    parser.add_argument(
        "--database-url", help=f"a PostgreSQL server to create databases on (or {POSTGRES_ENV})"
    )
    parser.add_argument(
        "--profile", help="write cProfile stats of the first sync and the quiet pass here"
    )
    parser.add_argument("--child-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.child_worker:
        asyncio.run(child_worker(json.loads(Path(args.child_worker).read_text())))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
