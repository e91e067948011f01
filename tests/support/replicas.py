"""Several ``syncwarden serve`` replicas on one database, followed through their JSON log lines.

A replica's log is its account of what it did (``job.done``, ``job.skipped``, ``sync.run``), so a
test waits on the lines as they arrive instead of sleeping: every child's stderr is read all the
time (a pipe nobody reads would fill and stall the child) into one :class:`LogBook` that wakes
whoever waits on it.

Graph posts change notifications to one public address, which in production is a load balancer
in front of the replicas. :class:`FrontDoor` is that load balancer, so the sandbox tenant's
validation handshakes and notifications reach whichever replica is up; it can also hold the
validation handshakes back until the test releases them, to keep a subscription pass running
while the other replica's trigger fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from syncwarden.sandbox.server import SandboxTenant
from tests.support.m365 import SYNCWARDEN_APP
from tests.support.process import ServiceProcess, cli_environment, free_port

NOTIFICATIONS_PATH = "/api/graph/notifications"
STOP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class LogLine:
    """One JSON log line, with the replica that wrote it."""

    replica: str
    fields: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.fields.get("event", ""))

    @property
    def job(self) -> str | None:
        job = self.fields.get("job")
        return job if isinstance(job, str) else None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


@dataclass
class LogBook:
    """Every replica's lines in arrival order; waiters wake on each new line or a child's end."""

    lines: list[LogLine] = field(default_factory=list)
    raw: dict[str, list[str]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    # Replicas the test is stopping itself: their end is not a failure.
    stopping: set[str] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, replica: str, text: str) -> None:
        self.raw.setdefault(replica, []).append(text)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            self.lines.append(LogLine(replica, parsed))
        self.changed()

    def mark_ended(self, replica: str) -> None:
        self.ended.add(replica)
        self.changed()

    def changed(self) -> None:
        """Wake the waiters to look again (a new line, or something outside the logs moved)."""
        self._changed.set()

    def where(
        self,
        event: str | None = None,
        *,
        job: str | None = None,
        replica: str | None = None,
        since: int = 0,
    ) -> list[LogLine]:
        """Lines (from index ``since`` on) with this event, job and replica, where given."""
        return [
            line
            for line in self.lines[since:]
            if (event is None or line.event == event)
            and (job is None or line.job == job)
            and (replica is None or line.replica == replica)
        ]

    async def wait_until(
        self, ready: Callable[[], bool], what: str, *, limit_seconds: float = 60.0
    ) -> None:
        """Wait for ``ready()`` to hold, checked at every new line; fail with the logs' tail if
        the limit passes or a replica ends that the test did not stop."""

        def settled() -> bool:
            return ready() or bool(self.ended - self.stopping)

        try:
            async with asyncio.timeout(limit_seconds):
                while not settled():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {limit_seconds:g} s: {what}\n{self.tail()}") from None
        if not ready():
            raise AssertionError(
                f"replica {sorted(self.ended - self.stopping)} ended while waiting for: {what}\n"
                + self.tail()
            )

    def tail(self, count: int = 40) -> str:
        parts = []
        for replica, texts in self.raw.items():
            parts.append(f"--- {replica} (last {count} lines) ---")
            parts.extend(text.rstrip() for text in texts[-count:])
        return "\n".join(parts)


@dataclass
class Replica:
    """One ``syncwarden serve`` child whose log lines go to the shared :class:`LogBook`."""

    name: str
    port: int
    service: ServiceProcess
    book: LogBook
    reader: asyncio.Task[None]

    @classmethod
    async def start(
        cls,
        name: str,
        env: dict[str, str],
        book: LogBook,
        *arguments: str,
        cwd: Path | None = None,
        command: str = "serve",
    ) -> Replica:
        """``command`` and ``arguments``: ``serve``, ``serve --no-background`` or ``worker``."""
        port = int(env["SYNCWARDEN_HTTP__PORT"])
        service = await ServiceProcess.start(env, *arguments, cwd=cwd, command=command)
        book.raw.setdefault(name, [])
        reader = asyncio.create_task(_follow(name, service, book), name=f"log-{name}")
        return cls(name, port, service, book, reader)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def job_runs(self) -> dict[str, int]:
        """Runs of each job this replica made, from its ``/metrics`` (skips are not runs)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base_url}/metrics") as response,
        ):
            assert response.status == 200, await response.text()
            text = await response.text()
        runs: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "syncwarden_job_runs":
                continue
            for sample in family.samples:
                if sample.name == "syncwarden_job_runs_total":
                    runs[sample.labels["job"]] = int(sample.value)
        return runs

    async def terminate(self, limit_seconds: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, as an orchestrator stops a replica; the exit code once it has gone."""
        self.book.stopping.add(self.name)
        if self.service.process.returncode is None:
            self.service.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(limit_seconds):
            code = await self.service.process.wait()
            await self.reader
        return code

    async def kill(self) -> None:
        """Clean-up after a failed test: nothing is left running."""
        self.book.stopping.add(self.name)
        await self.service.stop()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def _follow(name: str, service: ServiceProcess, book: LogBook) -> None:
    """Read the child's stderr to its end, line by line; in chunks, because a line with a long
    traceback can outgrow the stream's line limit."""
    stream = service.process.stderr
    assert stream is not None
    pending = b""
    try:
        while chunk := await stream.read(1 << 16):
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                book.add(name, line.decode(errors="replace") + "\n")
        if pending:
            book.add(name, pending.decode(errors="replace"))
    finally:
        book.mark_ended(name)


def replica_environment(
    tenant: SandboxTenant, database_url: str, *, port: int | None = None, **settings: str
) -> dict[str, str]:
    """A sandbox-mode replica's environment: the shared database, the Microsoft 365 addresses
    of the in-test sandbox tenant, JSON logs, and ``settings`` (``SCHEDULER__TIMEZONE=...``)."""
    env = {
        "MODE": "sandbox",
        "HTTP__PORT": str(port or free_port()),
        "HTTP__SHUTDOWN_TIMEOUT_SECONDS": "5",
        "DATABASE__URL": database_url,
        "LOG__FORMAT": "json",
        "GRAPH__TENANT_ID": tenant.tenant_id,
        "GRAPH__CLIENT_ID": tenant.seed.app_ids[SYNCWARDEN_APP],
        "GRAPH__CLIENT_SECRET": tenant.seed.secret_for(SYNCWARDEN_APP),
        "GRAPH__LOGIN_URL": tenant.base_url,
        "GRAPH__BASE_URL": f"{tenant.base_url}/v1.0",
        "GRAPH__CA_BUNDLE": str(tenant.ca_path),
        "GRAPH__TIMEOUT_SECONDS": "10",
        "EXCHANGE__BASE_URL": tenant.base_url,
        **settings,
    }
    return cli_environment(**{f"SYNCWARDEN_{name}": value for name, value in env.items()})


@dataclass
class FrontDoor:
    """The load balancer at Graph's notification URL, in front of the replicas.

    Each post goes to the next replica in turn, and to another when that one is down (it is being
    restarted). While ``hold`` is set and not released, validation handshakes wait here; ``held``
    counts those waiting, and ``on_change`` is called whenever it changes.
    """

    backends: list[str]
    on_change: Callable[[], object] = lambda: None
    hold: asyncio.Event | None = None
    held: int = 0
    server: TestServer | None = None
    _turn: int = 0
    _http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(NOTIFICATIONS_PATH))

    async def start(self) -> FrontDoor:
        app = web.Application()
        app.router.add_post(NOTIFICATIONS_PATH, self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._http is not None:
            await self._http.close()
        if self.server is not None:
            await self.server.close()

    def _order(self) -> Iterator[str]:
        self._turn += 1
        for offset in range(len(self.backends)):
            yield self.backends[(self._turn + offset) % len(self.backends)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if "validationToken" in request.query and self.hold is not None and not self.hold.is_set():
            self.held += 1
            self._changed()
            try:
                await self.hold.wait()
            finally:
                self.held -= 1
                self._changed()
        assert self._http is not None
        for backend in self._order():
            try:
                async with self._http.post(
                    backend + NOTIFICATIONS_PATH,
                    params=request.query,
                    data=body,
                    headers={"Content-Type": request.headers.get("Content-Type", "")},
                ) as answer:
                    text = await answer.read()
                    return web.Response(
                        status=answer.status,
                        body=text,
                        content_type=answer.content_type,
                        charset=answer.charset,
                    )
            except aiohttp.ClientConnectionError:
                continue  # that replica is down; the next one answers
        return web.Response(status=502, text="no replica is up")

    def _changed(self) -> None:
        self.on_change()
