"""Credential alerts from the sandbox tenant: once per threshold, never repeated, resolved once."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import session_factory
from syncwarden.core.settings import AlertSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_watch import CredentialWatch
from syncwarden.workflows.ports import NotificationKind
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
    report = await watch(m365, migrated_engine, RecordingNotifier()).scan()
    listing = [
        r for r in tenant.requests if r.path.endswith(("/applications", "/servicePrincipals"))
    ]
    owners = [r for r in tenant.requests if r.path.endswith("/owners")]
    assert report.apps > 2000
    assert len(listing) <= 6, f"{len(listing)} listing requests"
    assert len(owners) == report.alerted, "owners are looked up only for the apps alerted about"


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
