"""``syncwarden audit export`` and ``syncwarden import profiles`` as real processes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
from pathlib import Path

from sqlalchemy import select

from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.core.db import create_engine, session_factory
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.audit import AuditEvent, audit_row, record_audit
from tests.integration.test_cli import run


def seed_audit(url: str) -> list[dict[str, object]]:
    async def go() -> list[dict[str, object]]:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            sessions = session_factory(engine)
            async with sessions.begin() as session:
                record_audit(
                    session,
                    actor="ada@example.edu",
                    action="ticket.created.enroll",
                    ticket_ref="SW-1001",
                    after={"mailbox": "ada@example.edu"},
                )
                record_audit(
                    session,
                    actor="casey@example.edu",
                    action="ticket.approve",
                    ticket_ref="SW-1001",
                    before={"status": "awaiting_approval"},
                    after={"status": "approved", "comment": 'fine, "quoted"'},
                )
                record_audit(session, actor="system", action="ticket.reminded", ticket_ref=None)
            async with sessions() as session:
                rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
                return [audit_row(row) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_audit_export_matches_the_table(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    table = seed_audit(url)
    jsonl = run("audit", "export", "--format", "jsonl", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert jsonl.returncode == 0, jsonl.stderr
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == table
    assert "exported 3 audit events" in jsonl.stderr

    out = tmp_path / "audit.csv"
    result = run("audit", "export", "-o", str(out), cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["action"] for r in rows] == [t["action"] for t in table]
    assert [json.loads(r["after"]) if r["after"] else None for r in rows] == [
        t["after"] for t in table
    ]
    assert rows[2]["ticket_ref"] == ""


def test_audit_export_since_filters_and_bad_dates_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    seed_audit(url)
    future = run(
        "audit", "export", "--since", "2999-01-01", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url
    )
    assert future.stdout.strip().splitlines() == [
        "id,occurred_at,actor,action,ticket_ref,before,after"
    ]
    bad = run("audit", "export", "--since", "yesterday", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert bad.returncode == 2
    assert "is not a date like 2026-11-01" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_import_profiles_reports_rows_and_loads_the_rest(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    source = tmp_path / "profiles.csv"
    source.write_text(
        "id,name,email\np1,Ada Byron,ada@example.edu\np2,,x@example.edu\np3,Alan,alan@example.edu\n"
    )
    result = run("import", "profiles", str(source), cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert result.returncode == 1
    assert "imported 2 profiles (2 new, 0 updated), rejected 1 rows" in result.stdout
    assert "rejected line 3: profile p2 has no name" in result.stderr
    again = run("import", "profiles", str(source), cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert "imported 2 profiles (0 new, 2 updated)" in again.stdout

    async def found() -> list[str]:
        engine = create_engine(url)
        try:
            adapter = BuiltinScheduling(session_factory(engine))
            return [p.id for p in await adapter.find_profiles(email="ALAN@example.edu")]
        finally:
            await engine.dispose()

    assert asyncio.run(found()) == ["p3"]


def test_import_of_a_missing_file_is_explained(tmp_path: Path) -> None:
    result = run("import", "profiles", str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def tenant_env(tmp_path: Path, tenant: SandboxTenant, **extra: str) -> dict[str, str]:
    """A CLI process's settings: a database of its own and the test's sandbox tenant."""
    return {
        "SYNCWARDEN_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/sw.db",
        "SYNCWARDEN_GRAPH__TENANT_ID": tenant.tenant_id,
        "SYNCWARDEN_GRAPH__CLIENT_ID": tenant.seed.app_ids["Syncwarden"],
        "SYNCWARDEN_GRAPH__CLIENT_SECRET": tenant.seed.secret_for("Syncwarden"),
        "SYNCWARDEN_GRAPH__LOGIN_URL": tenant.base_url,
        "SYNCWARDEN_GRAPH__BASE_URL": f"{tenant.base_url}/v1.0",
        "SYNCWARDEN_GRAPH__CA_BUNDLE": str(tenant.ca_path),
        **extra,
    }


async def test_secrets_scan_posts_each_alert_once(tmp_path: Path, tenant: SandboxTenant) -> None:
    env = tenant_env(tmp_path, tenant, SYNCWARDEN_ALERTS__WATCH_ALL_APPS="true")

    async def scan() -> subprocess.CompletedProcess[str]:
        # The sandbox answers from this event loop, so the CLI runs in a thread meanwhile.
        return await asyncio.to_thread(run, "secrets", "scan", cwd=tmp_path, **env)

    first = await scan()
    assert first.returncode == 0, first.stderr
    assert "new alerts" in first.stdout and " 0 new alerts" not in first.stdout
    second = await scan()
    assert ", 0 new alerts" in second.stdout


async def test_reconcile_prints_each_difference_and_exits_one_while_any_remains(
    tmp_path: Path, tenant: SandboxTenant
) -> None:
    """Nobody is enrolled in the new database: everyone in the group was added by hand."""
    group = tenant.seed.group_ids["Calendar Sync (Graph)"]
    env = tenant_env(tmp_path, tenant, SYNCWARDEN_GRAPH__SYNC_GROUP_ID=group)

    async def reconcile(*options: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run, "reconcile", *options, cwd=tmp_path, **env)

    first = await reconcile()
    assert first.returncode == 1, first.stderr
    kai = tenant.seed.user_ids["kai.nakamura-ellis@example.edu"]
    assert f"unenrolled_member:{kai}: Kai Nakamura-Ellis (new)" in first.stdout
    assert "fix: adopt or remove_from_group" in first.stdout
    second = await reconcile()
    assert "(new)" not in second.stdout and "0 new" in second.stdout
    malformed = await reconcile("--fix", "unenrolled_member=welcome")
    assert malformed.returncode == 2
    assert "expected FINDING=FIX or KIND=FIX" in malformed.stderr
    no_profile = await reconcile("--fix", "unenrolled_member=adopt")
    assert "Adopt for Kai Nakamura-Ellis was not done: no scheduling profile" in no_profile.stdout
    profiles = tmp_path / "profiles.csv"
    profiles.write_text("id,name,email\nP-KAI,Kai Nakamura-Ellis,kai.nakamura-ellis@example.edu\n")
    imported = await asyncio.to_thread(
        run, "import", "profiles", str(profiles), cwd=tmp_path, **env
    )
    assert imported.returncode == 0, imported.stderr
    adopted = await reconcile("--fix", "unenrolled_member=adopt")
    assert "opened: Adopt for Kai Nakamura-Ellis" in adopted.stdout, adopted.stdout
    again = await reconcile("--fix", f"unenrolled_member:{kai}=adopt")
    assert "is already open for Kai Nakamura-Ellis" in again.stdout, again.stdout
    missing_group = {**env, "SYNCWARDEN_GRAPH__SYNC_GROUP_ID": ""}
    refused = await asyncio.to_thread(run, "reconcile", cwd=tmp_path, **missing_group)
    assert refused.returncode == 2 and "SYNC_GROUP_ID" in refused.stderr
