"""What a Teams turn costs Syncwarden, beside a bare Agents SDK echo bot measured in the same run.

    .venv/bin/python -m bench.click_bench [--backends sqlite,postgresql] [--clients 1,10,50]
                                          [--turns 200] [--quick]

For each database it starts the real service as its own process, the way ``make run`` does
(``syncwarden serve --sandbox --no-background`` in sandbox mode, anonymous Bot Framework
traffic, JSON log lines as in production) on a fresh SQLite file or a fresh PostgreSQL database
(created, then dropped), and :mod:`bench.echo_bot` beside it. Both reply to a local stand-in for
the Bot Framework connector run by this script.

The database is seeded before the service starts: ``--people`` enrolled people with their 1:1
chats, and one ticket awaiting approval for every approve click to come (asked of two approvers
and the approvals channel, announced to IT, as a real request is). The first ``--clients``
people are the clients; the service is told they are approvers (by object id), so each click is
an approver's decision on a ticket nobody has decided yet.

Three kinds of turn, each at 1, 10 and 50 concurrent clients (each client a person in their own
1:1 chat, sending its next turn when the last was answered):

* ``help``: a message; answered with one reply to the connector;
* ``status``: a message from an enrolled person; one reply;
* ``approve``: an Adaptive Card ``adaptiveCard/action`` invoke, verb ``approve``, on a distinct
  ticket each time; answered with the updated card in the invoke's HTTP response.

The echo bot gets the same turns (it echoes messages and answers invokes with a small card). Per
phase it prints p50/p99 latency, turns per second, and server CPU per turn (the process's user +
system time from ``/proc/<pid>/stat`` across the phase, divided by its turns; the sandbox tenant
child and this script are not counted), and the ratios to echo. Rate limits per person are off
(``SYNCWARDEN_LIMITS__*_TURNS_PER_MINUTE=0``): the point is the cost of a turn that is served.

Each phase runs in ``--rounds`` rounds (3 by default), the echo bot and Syncwarden alternating
(echo first in odd rounds, Syncwarden first in even ones), so that a slow spell of the shared
machine falls on both rather than on one. The table pools every round's turns; the goals compare
each round's ratio (both measured moments apart) and take the median over the rounds, so one
round hit by a spell does not decide them.

Numbers only; nothing is asserted. The machine is shared, so absolute numbers move between runs;
the ratio to the echo bot measured moments apart in the same run is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from syncwarden.bot.conversations import ConversationRecord
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.seed import load_seed
from syncwarden.workflows.announcements import announce_created, ask_for_approval
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Enrollment, Ticket
from syncwarden.workflows.unit_of_work import UnitsOfWork

TURNS = ("help", "status", "approve")
BOT = {"id": "28:syncwarden-bot", "name": "Syncwarden"}
CARD = "application/vnd.microsoft.card.adaptive"
STARTUP_SECONDS = 90.0
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"
# The sandbox's approvers group holds these two; the approval requests seeded are asked of them.
SEED_APPROVERS = ("casey.lindqvist@example.edu", "emerson.tal@example.edu")
GOAL_CPU_RATIO = 4.0
GOAL_P99_RATIO = 3.0
_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Person:
    index: int
    object_id: str

    @property
    def name(self) -> str:
        return f"Bench Person {self.index}"

    @property
    def upn(self) -> str:
        return f"bench.person{self.index}@example.edu"

    @property
    def teams_id(self) -> str:
        return f"29:bench-{self.index}"

    @property
    def chat(self) -> str:
        return f"a:bench-{self.index}"


def bench_person(index: int) -> Person:
    return Person(index, str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncwarden-bench/person/{index}")))


# --- the processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command's ")": state is field 3, utime field 14 and stime field 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Target:
    """A bot answering ``POST /api/messages``: Syncwarden or the echo bot."""

    name: str
    url: str
    pid: int


def _log_lines(log: Path) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


async def _wait_for_line(log: Path, event: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.returncode is None:
        if any(f'"{event}"' in line for line in _log_lines(log)):
            return
        await asyncio.sleep(0.2)
    tail = _log_lines(log)[-20:]
    raise RuntimeError(f"no {event!r} from the process; its last lines:\n" + "\n".join(tail))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def syncwarden_process(
    scratch: Path, database_url: str, approvers: Sequence[Person], profile: Path | None
) -> Any:
    """``syncwarden serve --sandbox --no-background`` on ``database_url``, run in ``scratch``
    (its sandbox tenant keeps its state in ``scratch/var/sandbox``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWARDEN_")}
    env.update(
        SYNCWARDEN_MODE="sandbox",
        SYNCWARDEN_HTTP__PORT=str(port),
        SYNCWARDEN_DATABASE__URL=database_url,
        SYNCWARDEN_LOG__FORMAT="json",
        SYNCWARDEN_LIMITS__PERSON_TURNS_PER_MINUTE="0",
        SYNCWARDEN_LIMITS__CONVERSATION_TURNS_PER_MINUTE="0",
        SYNCWARDEN_APPROVALS__APPROVERS=json.dumps([p.object_id for p in approvers]),
    )
    log = scratch / "syncwarden.log"
    profiling = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiling,
            "-m",
            "syncwarden",
            "serve",
            "--sandbox",
            "--no-background",
            cwd=scratch,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        await _wait_for_line(log, "syncwarden.started", process)
        yield Target("syncwarden", f"http://127.0.0.1:{port}/api/messages", process.pid)
    finally:
        await _stop(process)


@asynccontextmanager
async def echo_process(scratch: Path) -> Any:
    log = scratch / "echo.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.echo_bot",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
            cwd=REPOSITORY,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_SECONDS)
        ready = json.loads(line) if line else {}
        if ready.get("event") != "echo.ready":
            raise RuntimeError("the echo bot did not start: " + "\n".join(_log_lines(log)))
        yield Target("echo", f"http://127.0.0.1:{ready['port']}/api/messages", process.pid)
    finally:
        await _stop(process)


@dataclass
class Connector:
    """The Bot Framework connector's stand-in: takes every reply and answers as it does."""

    replies: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> Connector:
        async def take(request: web.Request) -> web.Response:
            await request.read()
            self.replies += 1
            return web.json_response({"id": f"reply-{self.replies}"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", take)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# --- the database -------------------------------------------------------------------------------


class UnreachableError(Exception):
    """The database server the benchmark was pointed at does not answer."""


@asynccontextmanager
async def fresh_database(backend: str, scratch: Path, postgres: str) -> Any:
    """A new, empty database's URL; a PostgreSQL one is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{scratch}/bench.db"
        return
    name = f"syncwarden_click_bench_{os.getpid()}"
    server = make_url(postgres)
    admin_dsn = server.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        raise UnreachableError(f"PostgreSQL at {server.host}:{server.port}: {error}") from error
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def seed(
    database_url: str, connector_url: str, tenant_id: str, people: int, tickets: int
) -> list[str]:
    """Enrolled people with their chats, and ``tickets`` tickets awaiting approval (their refs)."""
    _, seed_info = load_seed()
    approvers = frozenset(seed_info.user_ids[upn] for upn in SEED_APPROVERS)
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    try:
        await upgrade_to_head(engine)
        sessions = session_factory(engine)
        everyone = [bench_person(i) for i in range(people)]
        async with write_transaction(sessions) as session:
            for chunk in _chunks(everyone, 1000):
                await session.execute(insert(Enrollment), [_enrollment(p, now) for p in chunk])
                await session.execute(
                    insert(ConversationRecord),
                    [_conversation(p, connector_url, tenant_id, now) for p in chunk],
                )
        refs: list[str] = []
        units = UnitsOfWork(sessions)
        for numbers in _chunks(list(range(tickets)), 200):
            async with units() as work:
                made = [_ticket(i, now) for i in numbers]
                work.session.add_all(made)
                await work.session.flush()
                for ticket in made:
                    ask_for_approval(work, ticket, approvers, NotificationKind.APPROVAL_REQUESTED)
                    announce_created(work, ticket)
                refs.extend(ticket.ref for ticket in made)
        return refs
    finally:
        await engine.dispose()


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _enrollment(person: Person, now: datetime) -> dict[str, Any]:
    return {
        "subject_id": person.object_id,
        "subject_upn": person.upn,
        "subject_name": person.name,
        "profile_id": f"bench-profile-{person.index}",
        "mailbox": person.upn,
        "active": True,
        "paused": False,
        "created_at": now,
        "updated_at": now,
        "last_run_at": now - timedelta(minutes=3),
        "last_success_at": now - timedelta(minutes=3),
        "last_sync_summary": "2 created, 1 updated",
    }


def _conversation(person: Person, service_url: str, tenant_id: str, now: datetime) -> Any:
    return {
        "conversation_id": person.chat,
        "kind": "personal",
        "service_url": service_url,
        "tenant_id": tenant_id,
        "bot_id": BOT["id"],
        "user_aad_id": person.object_id,
        "user_mri": person.teams_id,
        "installed": True,
        "blocked": False,
        "updated_at": now,
    }


def _ticket(index: int, now: datetime) -> Ticket:
    subject = str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncwarden-bench/subject/{index}"))
    upn = f"bench.subject{index}@example.edu"
    return Ticket(
        kind=TicketKind.ENROLL.value,
        status=TicketStatus.AWAITING_APPROVAL.value,
        version=1,
        subject_id=subject,
        subject_upn=upn,
        subject_name=f"Bench Subject {index}",
        subject_mail=upn,
        requester_id=subject,
        requester_upn=upn,
        requester_name=f"Bench Subject {index}",
        justification="tutoring schedule",
        mailbox=upn,
        previous_mailbox=None,
        profile_id=f"bench-subject-profile-{index}",
        profile_name=f"Bench Subject {index}",
        required_approvals=1,
        created_at=now,
        decisions=[],
        steps=[],
    )


# --- the turns ----------------------------------------------------------------------------------


class Activities:
    """The activities Teams would send for each kind of turn."""

    def __init__(self, service_url: str, tenant_id: str, tickets: Iterator[str]) -> None:
        self._service_url = service_url
        self._tenant_id = tenant_id
        self._tickets = tickets
        self._ids = itertools.count(1)

    def _base(self, person: Person) -> dict[str, Any]:
        return {
            "id": f"bench-{next(self._ids)}",
            "channelId": "msteams",
            "serviceUrl": self._service_url,
            "timestamp": datetime.now(UTC).isoformat(),
            "from": {"id": person.teams_id, "name": person.name, "aadObjectId": person.object_id},
            "recipient": BOT,
            "conversation": {
                "id": person.chat,
                "conversationType": "personal",
                "tenantId": self._tenant_id,
            },
            "channelData": {"tenant": {"id": self._tenant_id}},
            "locale": "en-GB",
        }

    def message(self, person: Person, text: str) -> dict[str, Any]:
        return {**self._base(person), "type": "message", "text": text}

    def approve(self, person: Person) -> dict[str, Any]:
        data = {"verb": "approve", "ticket": next(self._tickets), "version": 1, "comment": ""}
        return {
            **self._base(person),
            "type": "invoke",
            "name": "adaptiveCard/action",
            "replyToId": "bench-card",
            "value": {
                "action": {"type": "Action.Execute", "verb": "approve", "data": data},
                "trigger": "manual",
            },
        }

    def of(self, turn: str) -> Callable[[Person], dict[str, Any]]:
        if turn == "approve":
            return self.approve
        return lambda person: self.message(person, turn)


def answered_well(target: str, turn: str, status: int, body: Any) -> bool:
    """Whether the turn was served as it should be (a refused or failed turn is no measure)."""
    if status not in (200, 201, 202):
        return False
    if turn != "approve":
        return True
    if not isinstance(body, dict) or body.get("statusCode") != 200 or body.get("type") != CARD:
        return False
    shown = json.dumps(body.get("value"))
    return "echo: approve" in shown if target == "echo" else "**Approved** by" in shown


@dataclass
class Measured:
    turn: str
    clients: int
    turns: int
    seconds: float
    cpu: float
    latencies: list[float] = field(default_factory=list)
    failed: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def cpu_per_turn(self) -> float:
        return self.cpu / max(1, self.turns)

    @property
    def per_second(self) -> float:
        return self.turns / self.seconds if self.seconds else float("nan")


def pooled(rounds: Sequence[Measured]) -> Measured:
    """One phase's rounds as one measurement: their turns, time, CPU and latencies together."""
    first = rounds[0]
    return Measured(
        first.turn,
        first.clients,
        sum(r.turns for r in rounds),
        sum(r.seconds for r in rounds),
        sum(r.cpu for r in rounds),
        [latency for r in rounds for latency in r.latencies],
        sum(r.failed for r in rounds),
    )


@dataclass(frozen=True)
class Phase:
    """One kind of turn at one number of clients: Syncwarden's and the echo bot's rounds, in
    pairs measured one after the other."""

    rounds: tuple[tuple[Measured, Measured], ...]  # (ours, echo) per round

    @property
    def ours(self) -> Measured:
        return pooled([ours for ours, _ in self.rounds])

    @property
    def echo(self) -> Measured:
        return pooled([echo for _, echo in self.rounds])


async def drive(
    target: Target,
    turn: str,
    make: Callable[[Person], dict[str, Any]],
    clients: Sequence[Person],
    turns: int,
) -> Measured:
    """``turns`` turns from ``len(clients)`` clients at once, each waiting for its answer."""
    left = itertools.count()
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=len(clients))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(person: Person) -> None:
            nonlocal failed
            while next(left) < turns:
                activity = make(person)
                started = time.perf_counter()
                async with http.post(target.url, json=activity) as response:
                    raw = await response.read()
                    status = response.status
                latencies.append(time.perf_counter() - started)
                body = json.loads(raw) if raw else None
                if not answered_well(target.name, turn, status, body):
                    failed += 1

        cpu_before = cpu_seconds(target.pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(person) for person in clients))
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(target.pid) - cpu_before
    return Measured(turn, len(clients), len(latencies), seconds, cpu, latencies, failed)


def phase_turns(clients: int, turns: int, per_client: int) -> int:
    return max(turns, clients * per_client)


# --- the report ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(backend: str, phases: list[Phase]) -> str:
    lines = [
        f"### {backend}",
        "",
        "| turn | clients | p50 ms | p99 ms | turns/s | CPU ms/turn "
        "| echo p50 | echo p99 | echo turns/s | echo CPU ms | CPU ÷ echo | p99 ÷ echo | failed |",
        "| --- " + "| ---: " * 12 + "|",
    ]
    for phase in phases:
        ours, echo = phase.ours, phase.echo
        cpu_ratio = ours.cpu_per_turn / echo.cpu_per_turn if echo.cpu_per_turn else float("nan")
        p99_ratio = ours.percentile(0.99) / echo.percentile(0.99)
        lines.append(
            f"| {ours.turn} | {ours.clients} | {_ms(ours.percentile(0.5))} "
            f"| {_ms(ours.percentile(0.99))} | {ours.per_second:.0f} | {_ms(ours.cpu_per_turn)} "
            f"| {_ms(echo.percentile(0.5))} | {_ms(echo.percentile(0.99))} "
            f"| {echo.per_second:.0f} | {_ms(echo.cpu_per_turn)} | {cpu_ratio:.1f}x "
            f"| {p99_ratio:.1f}x | {ours.failed + echo.failed} |"
        )
    return "\n".join(lines)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_ratio(pairs: Sequence[tuple[Measured, Measured]]) -> float:
    ours = sum(o.cpu for o, _ in pairs) / max(1, sum(o.turns for o, _ in pairs))
    echo = sum(e.cpu for _, e in pairs) / max(1, sum(e.turns for _, e in pairs))
    return ours / echo if echo else float("nan")


def _p99_ratio(pair: tuple[Measured, Measured]) -> float:
    ours, echo = pair
    return ours.percentile(0.99) / echo.percentile(0.99)


def _verdict(ratio: float, goal: float) -> str:
    return "met" if ratio <= goal else "NOT met"


def goals(backend: str, phases: list[Phase]) -> str:
    """The click goals, each the median over the rounds of that round's ratio: CPU over all
    approve phases of the round, p99 at the most clients."""
    clicks = [phase for phase in phases if phase.rounds[0][0].turn == "approve"]
    if not clicks:
        return ""
    busiest = max(clicks, key=lambda phase: phase.rounds[0][0].clients)
    rounds = min(len(phase.rounds) for phase in clicks)
    cpu_ratios = [_cpu_ratio([phase.rounds[i] for phase in clicks]) for i in range(rounds)]
    p99_ratios = [_p99_ratio(pair) for pair in busiest.rounds]
    cpu_ratio, p99_ratio = _median(cpu_ratios), _median(p99_ratios)
    every_click = pooled([phase.ours for phase in clicks])
    ours = busiest.ours
    every = ", ".join
    return (
        f"{backend}: approve CPU {_ms(every_click.cpu_per_turn)} ms/turn over all approve "
        f"phases; CPU ÷ echo per round {every(f'{r:.1f}x' for r in cpu_ratios)}, median "
        f"{cpu_ratio:.1f}x (goal ≤ {GOAL_CPU_RATIO:.0f}x: {_verdict(cpu_ratio, GOAL_CPU_RATIO)}); "
        f"approve p99 at {ours.clients} clients {_ms(ours.percentile(0.99))} ms, "
        f"p99 ÷ echo per round {every(f'{r:.1f}x' for r in p99_ratios)}, median "
        f"{p99_ratio:.1f}x (goal ≤ {GOAL_P99_RATIO:.0f}x: {_verdict(p99_ratio, GOAL_P99_RATIO)})"
    )


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...]
    clients: tuple[int, ...]
    turns: int
    per_client: int
    people: int
    postgres: str
    turn_kinds: tuple[str, ...]
    profile: Path | None
    keep: Path | None
    rounds: int = 3


async def bench_backend(
    backend: str, options: Options, scratch: Path, connector: Connector, echo: Target
) -> list[Phase]:
    _, seed_info = load_seed()
    tenant_id = seed_info.tenant_id
    most = max(options.clients)
    clients = [bench_person(i) for i in range(most)]
    clicks = options.rounds * sum(
        phase_turns(c, options.turns, options.per_client) for c in options.clients
    )
    wanted = clicks + most if "approve" in options.turn_kinds else 0
    phases: list[Phase] = []
    async with fresh_database(backend, scratch, options.postgres) as url:
        started = time.perf_counter()
        refs = await seed(url, connector.url, tenant_id, max(options.people, most), wanted)
        print(
            f"[{backend}] seeded {max(options.people, most)} people and {len(refs)} tickets "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        profile = options.profile.with_suffix(f".{backend}.prof") if options.profile else None
        async with syncwarden_process(scratch, url, clients, profile) as service:
            # The echo bot needs no real tickets; each of Syncwarden's clicks takes a new one.
            to_echo = Activities(connector.url, tenant_id, itertools.repeat("SW-1001"))
            to_us = Activities(connector.url, tenant_id, iter(refs))
            for target, activities in ((echo, to_echo), (service, to_us)):
                for kind in options.turn_kinds:  # warm up: every client's first turn of each kind
                    await drive(target, kind, activities.of(kind), clients, len(clients))
            for kind in options.turn_kinds:
                for count in options.clients:
                    turns = phase_turns(count, options.turns, options.per_client)
                    rounds: list[tuple[Measured, Measured]] = []
                    for number in range(options.rounds):
                        run_echo = partial(drive, echo, kind, to_echo.of(kind))
                        run_ours = partial(drive, service, kind, to_us.of(kind))
                        if number % 2 == 0:
                            echo_run = await run_echo(clients[:count], turns)
                            ours = await run_ours(clients[:count], turns)
                        else:
                            ours = await run_ours(clients[:count], turns)
                            echo_run = await run_echo(clients[:count], turns)
                        rounds.append((ours, echo_run))
                        print(
                            f"[{backend}] {kind} x {count}, round {number + 1}: "
                            f"{_ms(ours.percentile(0.99))} ms p99, "
                            f"{_ms(ours.cpu_per_turn)} ms CPU/turn "
                            f"(echo {_ms(echo_run.percentile(0.99))} ms, "
                            f"{_ms(echo_run.cpu_per_turn)} ms)",
                            file=sys.stderr,
                        )
                    phases.append(Phase(tuple(rounds)))
    return phases


async def run(options: Options) -> None:
    started = time.perf_counter()
    results: dict[str, list[Phase]] = {}
    with tempfile.TemporaryDirectory(prefix="click-bench-") as scratch_name:
        scratch = options.keep or Path(scratch_name)
        scratch.mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            connector = await Connector().start()
            stack.push_async_callback(connector.close)
            echo = await stack.enter_async_context(echo_process(scratch))
            for backend in options.backends:
                place = scratch / backend
                place.mkdir()
                try:
                    results[backend] = await bench_backend(backend, options, place, connector, echo)
                except UnreachableError as error:
                    print(f"[{backend}] skipped: {error}", file=sys.stderr)
    print(f"\nClick benchmark, {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs", end="")
    print(f", {time.perf_counter() - started:.0f} s in all\n")
    for backend, phases in results.items():
        print(table(backend, phases))
        print()
    for backend, phases in results.items():
        line = goals(backend, phases)
        if line:
            print(line)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients per phase")
    parser.add_argument("--turns", type=int, default=200, help="turns per phase (at least)")
    parser.add_argument("--turns-per-client", type=int, default=8, help="at least, per phase")
    parser.add_argument("--people", type=int, default=10_000, help="enrolled people seeded")
    parser.add_argument("--kinds", default=",".join(TURNS), help="help,status,approve")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a server, no database")
    parser.add_argument(
        "--profile", type=Path, help="run the service under cProfile; PATH.<backend>.prof"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per phase, echo and Syncwarden alternating"
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (the logs)")
    parser.add_argument("--quick", action="store_true", help="60 turns a phase, 1,000 people")
    args = parser.parse_args(argv)
    backends = _csv(args.backends)
    kinds = _csv(args.kinds)
    unknown = [b for b in backends if b not in ("sqlite", "postgresql")]
    unknown += [k for k in kinds if k not in TURNS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    return Options(
        backends=backends,
        clients=tuple(int(c) for c in _csv(args.clients)),
        turns=60 if args.quick else args.turns,
        per_client=2 if args.quick else args.turns_per_client,
        people=1000 if args.quick else args.people,
        postgres=args.postgres,
        turn_kinds=kinds,
        profile=args.profile.resolve() if args.profile else None,
        keep=args.keep.resolve() if args.keep else None,
        rounds=max(1, args.rounds),
    )


def main() -> None:
    asyncio.run(run(parse_options()))


if __name__ == "__main__":
    main()
