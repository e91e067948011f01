"""Owners named in credential alerts: read in bulk, and never the reason an alert is lost.

The scan reads owners through ``$batch`` (tests/contract: each lookup answers for itself). These
tests break lookups the ways Graph can (one lookup failing, one throttled for a while or for
good, a whole ``$batch`` call unanswered, a list longer than a page) and check what IT is told.
The Graph client records the waits it is asked for instead of sleeping them, so Retry-After is
checked exactly and nothing here waits on a clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.graph.applications import GraphApplications
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.retry import RetryPolicy
from syncwarden.core.db import session_factory
from syncwarden.core.settings import AlertSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_watch import CredentialWatch, ScanReport
from syncwarden.workflows.ports import NotificationKind
from tests.support.notifier import RecordingNotifier, recording_units

KIOSK = "Library Kiosk Sync"  # expired; owner Emerson Tal
PARKING = "Parking Permits"  # 1 day left; owner Dana Whitfield
ALUMNI = "Alumni Portal"  # 3 days left; no owners


def graph_recording_waits(
    m365: Microsoft365, waits: list[float], *, timeout: float = 10.0, **policy: Any
) -> GraphClient:
    """The production Graph client, but the waits it asks for are recorded instead of slept."""

    async def record(seconds: float) -> None:
        waits.append(seconds)

    return GraphClient(
        m365.http,
        m365.tokens,
        base_url=m365.endpoints.graph_base_url,
        scope=m365.endpoints.graph_scope,
        limiter=ConcurrencyLimiter(global_limit=32),
        retry=RetryPolicy(**policy),
        sleep=record,
        timeout_seconds=timeout,
    )


async def scan(
    m365: Microsoft365,
    engine: AsyncEngine,
    notifier: RecordingNotifier,
    waits: list[float],
    **options: Any,
) -> ScanReport:
    applications = GraphApplications(graph_recording_waits(m365, waits, **options))
    watcher = CredentialWatch(
        applications,
        recording_units(session_factory(engine), notifier),
        AlertSettings.model_validate({"watch_all_apps": True}),
    )
    return await watcher.scan()


def owners_line(notifier: RecordingNotifier, app: str) -> str:
    """The Owners line of the one alert about ``app``."""
    [alert] = [
        sent
        for sent in notifier.to("channel:it", NotificationKind.CREDENTIAL_ALERT)
        if f"**{app}**" in sent.text
    ]
    [line] = [part for part in alert.text.split("\n\n") if part.startswith("Owners:")]
    return line


def owners_path(tenant: SandboxTenant, app: str) -> str:
    found = tenant.state.application_for(tenant.seed.app_ids[app])
    assert found is not None
    return f"/applications/{found.id}/owners"


async def test_one_failed_lookup_costs_its_names_not_its_alert(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    tenant.add_fault(owners_path(tenant, PARKING), status=500, code="InternalServerError")
    notifier = RecordingNotifier()
    report = await scan(m365, migrated_engine, notifier, [])
    assert report.alerted == report.findings > 5, "every finding is alerted"
    assert owners_line(notifier, PARKING) == (
        "Owners: could not be read this time (Microsoft Graph answered 500); "
        "see the app's Owners page in Entra"
    )
    assert owners_line(notifier, KIOSK) == "Owners: Emerson Tal", "the batch's others are read"
    assert owners_line(notifier, ALUMNI) == "Owners: none recorded"


async def test_a_throttled_lookup_waits_its_retry_after_then_names_the_owners(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    path = owners_path(tenant, KIOSK)
    tenant.add_fault(path, status=429, code="TooManyRequests", retry_after="0.25", count=1)
    notifier, waits = RecordingNotifier(), list[float]()
    tenant.clear_requests()
    await scan(m365, migrated_engine, notifier, waits)
    assert owners_line(notifier, KIOSK) == "Owners: Emerson Tal"
    assert waits == [0.25], "one wait, as long as Retry-After said"
    lookups = [r for r in tenant.requests if r.path == path]
    assert [(r.status, r.in_batch) for r in lookups] == [(429, True), (200, True)]


async def test_a_lookup_throttled_past_the_retries_still_alerts(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    path = owners_path(tenant, KIOSK)
    tenant.add_fault(path, status=429, code="TooManyRequests", retry_after="0.25")
    notifier, waits = RecordingNotifier(), list[float]()
    report = await scan(m365, migrated_engine, notifier, waits, max_attempts=3)
    assert report.alerted == report.findings
    assert waits == [0.25, 0.25]
    assert owners_line(notifier, KIOSK) == (
        "Owners: could not be read this time (Microsoft Graph was still throttling the lookup "
        "after the retries); see the app's Owners page in Entra"
    )
    assert owners_line(notifier, PARKING) == "Owners: Dana Whitfield"


async def test_a_batch_call_left_unanswered_still_alerts_every_app_in_it(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    tenant.add_fault(r"/owners$", action="hang", hang_seconds=5.0)
    notifier = RecordingNotifier()
    report = await scan(m365, migrated_engine, notifier, [], max_attempts=2, timeout=1.0)
    assert report.alerted == report.findings > 5
    unread = "Owners: could not be read this time (Microsoft Graph did not answer)"
    for app in (KIOSK, PARKING, ALUMNI):
        assert owners_line(notifier, app).startswith(unread)


async def test_an_owner_list_longer_than_a_page_is_read_to_the_end(
    m365: Microsoft365, tenant: SandboxTenant, migrated_engine: AsyncEngine
) -> None:
    kiosk = tenant.state.application_for(tenant.seed.app_ids[KIOSK])
    assert kiosk is not None
    extra = [
        tenant.add_user(userPrincipalName=f"owner{n:03d}@example.edu", displayName=f"Owner {n:03d}")
        for n in range(130)
    ]
    kiosk.owners = [user.id for user in extra]
    notifier = RecordingNotifier()
    tenant.clear_requests()
    await scan(m365, migrated_engine, notifier, [])
    names = owners_line(notifier, KIOSK).removeprefix("Owners: ").split(", ")
    assert names == [f"Owner {n:03d}" for n in range(130)]
    pages = [r for r in tenant.requests if r.path == owners_path(tenant, KIOSK)]
    assert [r.in_batch for r in pages] == [True, False], "the next page is followed by itself"
