"""Kill the provisioning worker (SIGKILL) at many points; every ticket still completes, once.

The worker is a real subprocess running the production runner, connectors and outbox against
the sandbox tenant (served by this test process). Crash points cover: right after a claim is
committed, after an outside effect but before it is recorded, right after a step's commit, and a
kill from outside while an Exchange call is in flight. After each kill the worker is started
again; a final clean run must finish everything.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from sqlalchemy import select

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxMessage
from tests.support.m365 import sandbox_settings
from tests.support.process import cli_environment
from tests.support.workflow import Harness

ROOT = Path(__file__).resolve().parents[2]
PEOPLE = ["avery", "blake", "rowan", "sasha", "casey", "dana"]
CRASH_POINTS = [
    "claimed:1",
    "effect:map_profile:1",
    "effect:add_to_group:1",
    "committed:add_to_group:1",
    "in-flight",
    "effect:send_instructions:1",
    "committed:send_instructions:2",
    "claimed:3",
    "effect:request_initial_sync:1",
]


async def run_worker(config: Path, crash_at: str, tenant: SandboxTenant) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.crash_worker",
        str(config),
        crash_at,
        cwd=ROOT,
        env=cli_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    if crash_at == "in-flight":
        await kill_during_exchange_call(process, tenant)
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"worker failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    return process.returncode or 0


async def kill_during_exchange_call(
    process: asyncio.subprocess.Process, tenant: SandboxTenant
) -> None:
    """SIGKILL the worker while the sandbox is still answering one of its Exchange calls."""
    tenant.set_knobs(latency_ms=400)
    try:
        async with asyncio.timeout(60):
            call = await tenant.wait_for_request(
                lambda r: "InvokeCommand" in r.path and r.ended is None
            )
        process.send_signal(signal.SIGKILL)
        assert call.ended is None, "the kill must land while the call is still being answered"
    finally:
        tenant.set_knobs(latency_ms=0)


async def test_every_ticket_completes_once_whatever_the_crash(
    h: Harness, tenant: SandboxTenant, database_url: str, tmp_path: Path
) -> None:
    refs = []
    for key in PEOPLE:
        result = await h.service.request_enrollment(h.person(key))
        assert result.ticket is not None, result.problems
        approver = h.person("emerson") if key in ("casey", "dana") else h.person("casey")
        assert (await h.service.decide(result.ticket.ref, approver, approve=True)).ok
        refs.append(result.ticket.ref)

    settings = sandbox_settings(tenant).model_dump(mode="json")
    settings["graph"]["client_secret"] = tenant.seed.secret_for("Syncwarden")
    config = tmp_path / "worker.json"
    config.write_text(
        json.dumps({"settings": settings, "database_url": database_url, "group_id": h.group_id})
    )
    tenant.clear_requests()

    outcomes = [await run_worker(config, point, tenant) for point in CRASH_POINTS]
    assert outcomes.count(-signal.SIGKILL) >= len(CRASH_POINTS) - 1, outcomes
    assert await run_worker(config, "none", tenant) == 0

    for ref in refs:
        ticket = await h.service.get_ticket(ref)
        assert ticket is not None and ticket.status == TicketStatus.COMPLETED, ref
    members = tenant.group_member_ids(h.group_id)
    for key in PEOPLE:
        assert members.count(tenant.seed.user_ids[h.person(key).upn]) == 1
    adds = [r.status for r in tenant.requests if "InvokeCommand" in r.path and r.method == "POST"]
    newly_added = [
        k for k in PEOPLE if k not in ("avery", "rowan")
    ]  # these two were members already
    assert adds.count(200) == len(newly_added), adds
    async with h.sessions() as session:
        keys = (await session.scalars(select(OutboxMessage.key))).all()
    instructions = [k for k in keys if k.endswith(":send_instructions")]
    assert sorted(instructions) == sorted(f"{ref}:3:send_instructions" for ref in refs)
