"""Credential alerts from the sandbox tenant: once per threshold, never repeated, resolved once."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import session_factory
from syncwarden.core.settings import AlertSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_watch import CredentialAlert, CredentialWatch
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.unit_of_work import UnitsOfWork
from tests.support.notifier import RecordingNotifier, recording_units


def watch(
    m365: Microsoft365, engine: AsyncEngine, notifier: RecordingNotifier, **alerts: Any
) -> CredentialWatch:
    options = {
        "watch_all_apps": True,
        "runbook_url": "https://intranet.example.edu/rotate",
        **alerts,
    }
    return CredentialWatch(
        m365.applications,
        recording_units(session_factory(engine), notifier),
        AlertSettings.model_validate(options),
    )


def app_id(tenant: SandboxTenant, name: str) -> str:
    return tenant.seed.app_ids[name]


async def test_alerts_once_across_reruns_and_restarts(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    notifier = RecordingNotifier()
    first = await watch(m365, migrated_engine, notifier).scan()
    alerts = notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)
    assert first.alerted == len(alerts) > 5
    texts = "\n".join(a.text for a in alerts)
    assert "The client secret of **Library Kiosk Sync** has expired" in texts
    assert "The client secret of **Parking Permits** expires in" in texts
    assert "Rotation in progress" in texts, "Cafeteria Menu Bot already has a newer secret"
    assert "https://intranet.example.edu/rotate" in texts
    assert "Orphaned Prototype" not in texts
    again = await watch(m365, migrated_engine, RecordingNotifier()).scan()
    assert again.alerted == 0, (
        "a rerun (or a restarted process: new objects, same database) repeats nothing"
    )


async def test_a_removed_credential_is_resolved_once(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    notifier = RecordingNotifier()
    await watch(m365, migrated_engine, notifier).scan()
    app = tenant.state.application_for(app_id(tenant, "Cafeteria Menu Bot"))
    assert app is not None
    app.passwords[:] = [p for p in app.passwords if p.displayName != "menu-2024"]
    resolved = await watch(m365, migrated_engine, notifier).scan()
    assert resolved.resolved == 1
    [line] = notifier.to("channel:it", NotificationKind.CREDENTIAL_RESOLVED)
    assert "Cafeteria Menu Bot" in line.text
    assert (await watch(m365, migrated_engine, notifier).scan()).resolved == 0


async def test_only_watched_apps_and_our_own(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    notifier = RecordingNotifier()
    kiosk = app_id(tenant, "Library Kiosk Sync")
    report = await watch(
        m365, migrated_engine, notifier, watch_all_apps=False, watch_app_ids=[kiosk]
    ).scan()
    assert report.alerted == 1
    assert "Library Kiosk Sync" in notifier.sent[0].text


async def test_two_thousand_apps_take_a_handful_of_requests(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    tenant.add_generated_apps(2000)
    tenant.clear_requests()
    notifier = RecordingNotifier()
    report = await watch(m365, migrated_engine, notifier).scan()
    sent = [r for r in tenant.requests if not r.in_batch]
    listing = [r for r in sent if r.path.endswith(("/applications", "/servicePrincipals"))]
    batches = [r for r in sent if r.path == "/$batch"]
    lookups = sorted(r.path for r in tenant.requests if r.path.endswith("/owners"))
    alerted = await alerted_apps(migrated_engine)
    assert report.apps > 2000 and report.alerted > len(alerted) > 100
    assert len(listing) <= 6, f"{len(listing)} listing requests"
    assert lookups == sorted(f"/{kind}/{object_id}/owners" for kind, object_id in alerted), (
        "owners are read once for each app alerted about, and for no other"
    )
    assert all(r.in_batch for r in tenant.requests if r.path.endswith("/owners"))
    per_kind = Counter(kind for kind, _ in alerted).values()
    assert len(batches) == sum(-(-count // 20) for count in per_kind), "20 lookups to a call"
    assert len(sent) == len(listing) + len(batches)
    owners_of = {
        app.displayName: [tenant.state.users[o].displayName for o in app.owners]
        for app in tenant.state.applications.values()
    }
    for alert in notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT):
        name = alert.text.split("**")[1]
        expected = ", ".join(owners_of[name]) or "none recorded"
        assert f"\n\nOwners: {expected}\n\n" in alert.text, "each alert names its own app's owners"


async def alerted_apps(engine: AsyncEngine) -> set[tuple[str, str]]:
    async with session_factory(engine)() as session:
        rows = await session.execute(
            select(CredentialAlert.owner_kind, CredentialAlert.object_id).distinct()
        )
        return {(kind, object_id) for kind, object_id in rows.all()}


async def stored(engine: AsyncEngine) -> tuple[int, int]:
    """(credential alert rows, outbox rows)."""
    async with session_factory(engine)() as session:
        alerts = await session.scalar(select(func.count()).select_from(CredentialAlert))
        messages = await session.scalar(select(func.count()).select_from(OutboxMessage))
    return alerts or 0, messages or 0


async def test_a_scan_commits_all_its_alerts_and_messages_at_once(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    tenant.add_generated_apps(500)
    commits: list[object] = []
    watcher = CredentialWatch(
        m365.applications,
        UnitsOfWork(session_factory(migrated_engine)),  # queued only: no delivery commits
        AlertSettings(watch_all_apps=True),
    )
    listen = (migrated_engine.sync_engine, "commit", commits.append)
    event.listen(*listen)
    try:
        report = await watcher.scan()
    finally:
        event.remove(*listen)
    assert report.alerted > 50
    assert len(commits) == 1, "one transaction for every alert row and message of the scan"
    assert await stored(migrated_engine) == (report.alerted, report.alerted)


# A trigger that fails every outbox insert, in the database itself: the failure comes however
# the insert is sent (SQLAlchemy's execution, PostgreSQL's combined statement or SQLite's one
# trip with the COMMIT).
_REFUSING_TRIGGER = {
    "sqlite": (
        [
            "CREATE TRIGGER outbox_refused BEFORE INSERT ON outbox "
            "BEGIN SELECT RAISE(ABORT, 'the database went away mid-write'); END"
        ],
        ["DROP TRIGGER outbox_refused"],
    ),
    "postgresql": (
        [
            "CREATE FUNCTION outbox_refused() RETURNS trigger LANGUAGE plpgsql AS "
            "'BEGIN RAISE EXCEPTION ''the database went away mid-write''; END'",
            "CREATE TRIGGER outbox_refused BEFORE INSERT ON outbox "
            "FOR EACH ROW EXECUTE FUNCTION outbox_refused()",
        ],
        ["DROP TRIGGER outbox_refused ON outbox", "DROP FUNCTION outbox_refused()"],
    ),
}


@asynccontextmanager
async def outbox_inserts_refused(engine: AsyncEngine) -> AsyncIterator[None]:
    create, drop = _REFUSING_TRIGGER[engine.dialect.name]
    async with engine.begin() as connection:
        for statement in create:
            await connection.exec_driver_sql(statement)
    try:
        yield
    finally:
        async with engine.begin() as connection:
            for statement in drop:
                await connection.exec_driver_sql(statement)


async def test_a_failure_mid_write_leaves_nothing_and_the_next_scans_send_each_alert_once(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    notifier = RecordingNotifier()
    async with outbox_inserts_refused(migrated_engine):
        with pytest.raises(Exception, match="went away mid-write"):
            await watch(m365, migrated_engine, notifier).scan()
    assert await stored(migrated_engine) == (0, 0), "no alert row without its message"
    assert notifier.sent == []
    first = await watch(m365, migrated_engine, notifier).scan()
    assert first.alerted == len(notifier.sent) > 5
    assert await stored(migrated_engine) == (first.alerted, first.alerted)
    tenant.clear_requests()
    again = await watch(m365, migrated_engine, notifier).scan()
    assert again.alerted == 0 and len(notifier.sent) == first.alerted
    assert await stored(migrated_engine) == (first.alerted, first.alerted), "a repeat adds nothing"
    assert not [r for r in tenant.requests if r.path.endswith("/owners")], "nor looks up owners"


async def test_weekly_digest_lists_what_expires_within_sixty_days(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    notifier = RecordingNotifier()
    count = await watch(m365, migrated_engine, notifier).digest()
    [digest] = notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)
    assert digest.text.startswith(f"**Credentials expiring in the next 60 days** ({count})")
    lines = digest.text.splitlines()[1:]
    assert lines[0].startswith("- Library Kiosk Sync:") and lines[0].endswith("expired")
    assert any("Payroll Feed" in line for line in lines), "60 days is inside the window"
    assert not any("Badge Printer: certificate 'CN=badges-b'" in line for line in lines), (
        "400 days is not"
    )
    assert any("rotation in progress" in line for line in lines)


async def test_our_own_credentials_can_be_checked_alone(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    kiosk = app_id(tenant, "Library Kiosk Sync")
    watcher = CredentialWatch(
        m365.applications,
        recording_units(session_factory(migrated_engine), RecordingNotifier()),
        AlertSettings(),
        own_app_ids=[kiosk],
    )
    own = await watcher.expiring(within_days=14, own_only=True)
    assert [f.app.display_name for f in own] == ["Library Kiosk Sync"]


async def test_snooze_repeats_after_a_day_and_acknowledge_stops_it(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    import datetime as dt

    now = [dt.datetime.now(dt.UTC)]
    notifier = RecordingNotifier()
    # 30 days left: two days later it is still at the 30-day threshold, so only reminders count.
    options = {"watch_all_apps": False, "watch_app_ids": [app_id(tenant, "LMS Roster Bridge")]}
    watcher = CredentialWatch(
        m365.applications,
        recording_units(session_factory(migrated_engine), notifier, clock=lambda: now[0]),
        AlertSettings.model_validate(options),
        clock=lambda: now[0],
    )
    await watcher.scan()
    [alert] = notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)
    key = notifier.sent[0].key.removeprefix("credential:")
    assert "Snoozed by Dana" in await watcher.snooze(key, "Dana")
    assert (await watcher.scan()).alerted == 0
    assert len(notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)) == 1, (
        "quiet while snoozed"
    )
    now[0] += dt.timedelta(hours=25)
    await watcher.scan()
    assert len(notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)) == 2, (
        "said again after the snooze"
    )
    assert "Acknowledged by Emerson" in await watcher.acknowledge(key, "Emerson")
    assert "Already acknowledged" in await watcher.snooze(key, "Dana")
    now[0] += dt.timedelta(hours=25)
    await watcher.scan()
    assert len(notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)) == 2
    assert alert.text
