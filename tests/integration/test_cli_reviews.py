"""``syncwarden review start|status|close`` as real processes, over the sandbox tenant."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from syncwarden.core.db import create_engine, session_factory
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.records import Enrollment
from tests.integration.test_cli import run
from tests.integration.test_cli_data import tenant_env


async def enroll_sasha(url: str, tenant: SandboxTenant) -> None:
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
        async with session_factory(engine).begin() as session:
            session.add(
                Enrollment(
                    subject_id=tenant.seed.user_ids["sasha.verhoeven@example.edu"],
                    subject_upn="sasha.verhoeven@example.edu",
                    subject_name="Sasha Verhoeven",
                    profile_id="prof-sasha",
                    mailbox="sasha.verhoeven@example.edu",
                )
            )
    finally:
        await engine.dispose()


async def test_start_status_and_close_a_review(tmp_path: Path, tenant: SandboxTenant) -> None:
    env = tenant_env(
        tmp_path,
        tenant,
        SYNCWARDEN_GRAPH__SYNC_GROUP_ID=tenant.seed.group_ids["Calendar Sync"],
        SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID=tenant.seed.group_ids["Calendar Sync Approvers"],
        SYNCWARDEN_REVIEWS__DEFAULT_DECISION="keep",
    )
    await enroll_sasha(env["SYNCWARDEN_DATABASE__URL"], tenant)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # The sandbox answers from this event loop, so the CLI runs in a thread meanwhile.
        return await asyncio.to_thread(run, *args, cwd=tmp_path, **env)

    started = await cli("review", "start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("AR-1 (open until") and "1 people" in started.stdout
    again = await cli("review", "start")
    assert again.returncode == 1 and "AR-1 is still open" in again.stdout
    status = await cli("review", "status")
    assert "AR-1" in status.stdout and "1 undecided" in status.stdout
    closed = await cli("review", "close", "AR-1")
    assert closed.stdout.startswith("AR-1 (closed)") and "1 kept" in closed.stdout
    wrong = await cli("review", "close", "SW-1001")
    assert wrong.returncode == 2 and "AR-3" in wrong.stderr

    exported = await cli("audit", "export", "--format", "jsonl")
    actions = [json.loads(line) for line in exported.stdout.splitlines()]
    started_row = next(row for row in actions if row["action"] == "review.started")
    assert started_row["actor"] == "syncwarden:cli" and started_row["after"]["people"] == 1
    assert [row["action"] for row in actions if row["action"].startswith("review.")] == [
        "review.started",
        "review.defaulted",
        "review.closed",
    ]
