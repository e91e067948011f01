"""The credential scan against a sandbox tenant of thousands of apps: first scan and repeat scan.

    .venv/bin/python -m bench.scan_bench [--apps 5000] [--latency-ms 50]

Starts the sandbox tenant as its own process (as ``syncwarden serve --sandbox`` does), adds that
many generated app registrations (0 to 2 secrets and a certificate for some, ending from 30 days
ago to two years ahead, so about one in eight credentials is inside the 60-day alert window; four
in five apps have owners) and adds the latency to every Graph request, each request of a
``$batch`` included. Then it runs the production scan (``CredentialWatch.scan``: real msal token,
real HTTPS, SQLite) twice: the first scan alerts everything inside the window, the repeat finds
nothing new. Beside them, the reference measured in the same run: the listing pages alone (the
same ``GET /applications`` and ``GET /servicePrincipals`` pages the scan reads), requested one
after another by a bare httpx client. Prints requests (a ``$batch`` call counts once) and wall
time. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from syncwarden.connectors.graph.applications import CREDENTIAL_FIELDS, PAGE_SIZE
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.logging import configure_logging
from syncwarden.core.settings import Settings
from syncwarden.m365 import build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import GRAPH_APP, settings_for_sandbox, start_sandbox
from syncwarden.sync.credential_watch import CredentialWatch
from syncwarden.workflows.unit_of_work import UnitsOfWork

LISTINGS = ("applications", "servicePrincipals")
GOAL_FIRST_SCAN_REQUESTS = 60


@dataclass
class Measured:
    name: str
    seconds: float
    requests: int
    batches: int
    lookups: int
    throttled: int
    alerts: int | None

    def row(self) -> str:
        alerts = "-" if self.alerts is None else str(self.alerts)
        return (
            f"| {self.name} | {self.seconds:.2f} s | {self.requests} | {self.batches} | "
            f"{self.lookups} | {self.throttled} | {alerts} |"
        )


class Sandbox:
    """The sandbox child's admin endpoints (loopback only) and its Graph address."""

    def __init__(self, ready: dict[str, Any]) -> None:
        self.ready = ready
        self.admin = httpx.AsyncClient(
            base_url=ready["base_url"], verify=ready["ca_path"], timeout=120
        )

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.admin.request(method, f"/_sandbox{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def requests(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.call("GET", "/requests"))["requests"]
        return found


async def main(apps: int, latency_ms: float) -> None:
    configure_logging(Settings.model_validate({"log": {"level": "WARNING"}}))
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as scratch:
        child = await start_sandbox(Path(scratch) / "sandbox")
        sandbox = Sandbox(child.ready)
        try:
            await run(sandbox, Path(scratch), apps, latency_ms)
        finally:
            await sandbox.admin.aclose()
            await child.stop()


async def run(sandbox: Sandbox, scratch: Path, apps: int, latency_ms: float) -> None:
    await sandbox.call("POST", "/apps/generate", {"count": apps})
    await sandbox.call("PATCH", "/knobs", {"latency_ms": latency_ms})
    settings = settings_for_sandbox(
        Settings.model_validate({"mode": "sandbox", "alerts": {"watch_all_apps": True}}),
        sandbox.ready,
    )
    database = create_engine(f"sqlite+aiosqlite:///{scratch}/bench.db")
    await upgrade_to_head(database)
    m365 = build_microsoft365(settings)
    # Queued only: the outbox's delivery to Teams is not part of the scan.
    watcher = CredentialWatch(
        m365.applications, UnitsOfWork(session_factory(database)), settings.alerts
    )
    await m365.tokens.get_token(m365.endpoints.graph_scope)  # the token is not the scan's cost

    async def measure(name: str, work: Callable[[], Awaitable[int | None]]) -> Measured:
        await sandbox.call("DELETE", "/requests")
        started = time.perf_counter()
        alerts = await work()
        seconds = time.perf_counter() - started
        log = await sandbox.requests()
        return Measured(
            name,
            seconds,
            sum(1 for r in log if not r["in_batch"]),
            sum(1 for r in log if r["path"] == "/$batch"),
            sum(1 for r in log if r["in_batch"] and r["path"].endswith("/owners")),
            sum(1 for r in log if r["status"] == 429),
            alerts,
        )

    async def scan() -> int:
        return (await watcher.scan()).alerted

    listing = await measure(
        "reference: the listing pages alone (bare httpx)", lambda: bare_listing(sandbox)
    )
    first = await measure("first scan", scan)
    repeat = await measure("repeat scan", scan)
    print(
        f"{apps} generated apps (+ the seed's), {latency_ms:g} ms latency per Graph request, "
        "sandbox in its own process, SQLite"
    )
    print(
        "| run | wall time | Graph requests | $batch calls | owner lookups in them | 429s "
        "| alerts written |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for measured in (listing, first, repeat):
        print(measured.row())
    met = "met" if first.requests <= GOAL_FIRST_SCAN_REQUESTS else "NOT met"
    print(f"goal: first scan <= {GOAL_FIRST_SCAN_REQUESTS} requests: {met}")
    await m365.aclose()
    await database.dispose()


async def bare_listing(sandbox: Sandbox) -> None:
    """The listing pages the scan reads, one after another, with nothing else around them."""
    ready = sandbox.ready
    app_id = ready["apps"][GRAPH_APP]["client_id"]
    token = (await sandbox.call("POST", "/tokens", {"appId": app_id}))["access_token"]
    async with httpx.AsyncClient(
        base_url=f"{ready['base_url']}/v1.0",
        verify=ready["ca_path"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    ) as graph:
        for collection in LISTINGS:
            url: str | None = collection
            params: dict[str, str] | None = {"$select": CREDENTIAL_FIELDS, "$top": PAGE_SIZE}
            while url is not None:
                response = await graph.get(url, params=params)
                response.raise_for_status()
                url, params = response.json().get("@odata.nextLink"), None
    return None


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--apps", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(main(args.apps, args.latency_ms))


if __name__ == "__main__":
    cli()
