"""`syncwarden import appointments` and `syncwarden sync` as processes against the sandbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncwarden.core.db import create_engine, session_factory
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from tests.integration.test_cli import run
from tests.support.enrollments import enroll
from tests.support.m365 import SYNCWARDEN_APP

AVERY = "avery.quinlan@example.edu"


async def test_import_then_sync_one_person(tmp_path: Path, tenant: SandboxTenant) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
        await enroll(session_factory(engine), tenant, AVERY, "P-avery")
    finally:
        await engine.dispose()
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    csv_file = tmp_path / "appointments.csv"
    csv_file.write_text(
        "profile_id,id,subject,start,end,time_zone\n"
        f"P-avery,A-1,Intake,{day}T09:00,{day}T10:00,Europe/London\n"
        f"P-avery,A-2,Review,{day}T11:00,{day}T12:00,Europe/London\n"
        f"P-avery,A-3,Broken,{day}T11:00,later,Europe/London\n",
        encoding="utf-8",
    )
    env = {
        "SYNCWARDEN_DATABASE__URL": url,
        "SYNCWARDEN_GRAPH__TENANT_ID": tenant.tenant_id,
        "SYNCWARDEN_GRAPH__CLIENT_ID": tenant.seed.app_ids[SYNCWARDEN_APP],
        "SYNCWARDEN_GRAPH__CLIENT_SECRET": tenant.seed.secret_for(SYNCWARDEN_APP),
        "SYNCWARDEN_GRAPH__LOGIN_URL": tenant.base_url,
        "SYNCWARDEN_GRAPH__BASE_URL": f"{tenant.base_url}/v1.0",
        "SYNCWARDEN_GRAPH__CA_BUNDLE": str(tenant.ca_path),
    }

    imported = await asyncio.to_thread(
        run, "import", "appointments", str(csv_file), cwd=tmp_path, **env
    )
    assert imported.returncode == 1  # one row was rejected, and says so
    assert "imported 2 appointments (2 new, 0 updated), rejected 1 rows" in imported.stdout
    assert "rejected line 4: end 'later' is not a time like 2026-11-23T09:00" in imported.stderr

    # The sandbox answers from this event loop, so the CLI runs in a thread meanwhile.
    synced = await asyncio.to_thread(run, "sync", "--person", AVERY.upper(), cwd=tmp_path, **env)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"{AVERY}: 2 created, 0 updated, 0 deleted" in synced.stdout
    assert "(full resync)" in synced.stdout
    assert synced.stdout.rstrip().endswith("synced 1 of 1 requested, 0 failed")

    nobody = await asyncio.to_thread(
        run, "sync", "--person", "nobody@example.edu", cwd=tmp_path, **env
    )
    assert nobody.returncode == 1
    assert "nobody active matches 'nobody@example.edu'" in nobody.stdout
    both = await asyncio.to_thread(run, "sync", "--all", "--person", AVERY, cwd=tmp_path, **env)
    assert both.returncode == 2 and "either --person or --all" in both.stderr
