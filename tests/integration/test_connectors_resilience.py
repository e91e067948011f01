"""Retries, Retry-After, timeouts, paging, delta, $batch and the per-mailbox limit, over HTTPS.

Faults are injected by the sandbox tenant (the real service's failure shapes); the connectors are
the production ones, except that some tests hand the Graph client a sleep that records the waits
it was asked for instead of waiting them, so the Retry-After paths are checked exactly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from syncwarden.connectors.errors import DeltaExpiredError, NotFoundError, TransientError
from syncwarden.connectors.graph.applications import OwnerKind
from syncwarden.connectors.graph.client import BatchRequest, GraphClient
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.retry import RetryPolicy
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from tests.support.certificates import make_certificate
from tests.support.m365 import M365Factory

AVERY = "avery.quinlan@example.edu"


def recording_client(
    m365: Microsoft365, waits: list[float], *, timeout: float = 10.0, **policy: float
) -> GraphClient:
    async def record(seconds: float) -> None:
        waits.append(seconds)

    return GraphClient(
        m365.http,
        m365.tokens,
        base_url=m365.endpoints.graph_base_url,
        scope=m365.endpoints.graph_scope,
        limiter=ConcurrencyLimiter(global_limit=32),
        retry=RetryPolicy(**policy),  # type: ignore[arg-type]
        sleep=record,
        timeout_seconds=timeout,
    )


def calls(tenant: SandboxTenant, fragment: str, method: str = "GET") -> list[int | None]:
    """Statuses of requests whose path contains ``fragment`` (ends with it, if it ends in $)."""
    if fragment.endswith("$"):
        matching = [r for r in tenant.requests if r.path.endswith(fragment[:-1])]
    else:
        matching = [r for r in tenant.requests if fragment in r.path]
    return [r.status for r in matching if r.method == method]


async def test_throttling_waits_exactly_the_fractional_retry_after(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    waits: list[float] = []
    client = recording_client(m365, waits)
    tenant.add_fault(
        "/users/avery", status=429, code="TooManyRequests", retry_after="0.25", count=2
    )
    user = await client.get(f"users/{AVERY}")
    assert user["userPrincipalName"] == AVERY
    assert waits == [0.25, 0.25]
    assert calls(tenant, "/users/avery") == [429, 429, 200]


async def test_unavailable_get_is_retried_with_backoff(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    waits: list[float] = []
    client = recording_client(m365, waits, base_delay_seconds=0.5)
    tenant.add_fault("/users/avery", status=503, count=1)
    await client.get(f"users/{AVERY}")
    assert calls(tenant, "/users/avery") == [503, 200]
    assert len(waits) == 1
    assert 0 <= waits[0] <= 0.5


async def test_unavailable_post_is_not_repeated(m365: Microsoft365, tenant: SandboxTenant) -> None:
    waits: list[float] = []
    client = recording_client(m365, waits)
    tenant.add_fault("/subscriptions", method="POST", status=503, count=1)
    with pytest.raises(TransientError):
        await client.request("POST", "subscriptions", json_body={"changeType": "created"})
    assert calls(tenant, "/subscriptions", "POST") == [503]
    assert waits == []


async def test_dropped_connection_is_retried(m365: Microsoft365, tenant: SandboxTenant) -> None:
    waits: list[float] = []
    client = recording_client(m365, waits)
    tenant.add_fault("/users/avery", action="drop", count=1)
    user = await client.get(f"users/{AVERY}")
    assert user["userPrincipalName"] == AVERY
    assert len(waits) == 1


async def test_a_hanging_service_times_out_after_bounded_attempts(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    waits: list[float] = []
    client = recording_client(m365, waits, max_attempts=2, timeout=0.5)
    tenant.add_fault("/users/avery", action="hang", hang_seconds=5)
    with pytest.raises(TransientError, match="did not answer in time"):
        await client.get(f"users/{AVERY}")
    assert len(waits) == 1, "two attempts, one wait between them"


async def test_paging_follows_next_links(m365: Microsoft365, tenant: SandboxTenant) -> None:
    tenant.clear_requests()
    users = await m365.graph.collect("users", params={"$top": "3", "$select": "id"})
    assert len(users) == len(tenant.seed.raw["users"])
    assert len({u["id"] for u in users}) == len(users)
    assert len(calls(tenant, "/users$")) == -(-len(users) // 3)


async def test_two_thousand_apps_take_a_handful_of_requests(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    tenant.add_generated_apps(2000)
    tenant.clear_requests()
    apps = await m365.applications.list_with_credentials(OwnerKind.APPLICATION)
    principals = await m365.applications.list_with_credentials(OwnerKind.SERVICE_PRINCIPAL)
    assert len(apps) > 2000
    assert principals
    assert len(calls(tenant, "/applications")) == 3
    assert any(app.credentials for app in apps)


async def test_batch_with_mixed_results_retries_only_the_throttled_item(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    tenant.add_fault("/users/rowan", status=429, code="TooManyRequests", retry_after="0.1", count=1)
    results = await m365.graph.batch(
        [
            BatchRequest("1", "GET", f"/users/{AVERY}?$select=id"),
            BatchRequest("2", "GET", "/users/nobody@example.edu"),
            BatchRequest("3", "GET", "/users/rowan.ibarra@example.edu?$select=id"),
        ]
    )
    assert [r.status for r in results] == [200, 404, 200]
    assert isinstance(results[1].error, NotFoundError)
    assert len(calls(tenant, "/$batch", "POST")) == 2
    statuses = calls(tenant, "/users/rowan")
    assert statuses == [429, 200]


async def test_calendar_delta_rounds(m365: Microsoft365, tenant: SandboxTenant) -> None:
    calendar = m365.calendar
    mailbox = tenant.seed.user_ids[AVERY]
    now = dt.datetime.now(dt.UTC)
    first = await calendar.delta(
        mailbox, start=now - dt.timedelta(days=14), end=now + dt.timedelta(days=60)
    )
    assert first.items
    tenant.clear_requests()
    quiet = await calendar.delta(mailbox, delta_link=first.delta_link)
    assert quiet.items == []
    assert quiet.requests == 1, "a round with no changes is one request"
    created = await calendar.create_event(
        mailbox,
        {
            "subject": "Advising (synced)",
            "start": {
                "dateTime": (now + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            "end": {
                "dateTime": (now + dt.timedelta(days=2, hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
        },
        source_id="appt-1",
        transaction_id="sw-appt-1",
    )
    again = await calendar.create_event(
        mailbox,
        {"subject": "x", "start": created["start"], "end": created["end"]},
        source_id="appt-1",
        transaction_id="sw-appt-1",
    )
    assert again["id"] == created["id"], "the same transactionId never makes a second event"
    changed = await calendar.delta(mailbox, delta_link=quiet.delta_link)
    assert [item["id"] for item in changed.items] == [created["id"]]
    assert [e["id"] for e in await calendar.find_by_source_id(mailbox, "appt-1")] == [created["id"]]
    assert await calendar.delete_event(mailbox, created["id"])
    assert not await calendar.delete_event(mailbox, created["id"])
    removed = await calendar.delta(mailbox, delta_link=changed.delta_link)
    assert removed.items and "@removed" in removed.items[0]
    tenant.expire_delta_tokens()
    with pytest.raises(DeltaExpiredError):
        await calendar.delta(mailbox, delta_link=removed.delta_link)


async def test_never_more_than_four_requests_per_mailbox(
    m365_factory: M365Factory, tenant: SandboxTenant
) -> None:
    tenant.set_knobs(latency_ms=50)
    m365 = await m365_factory()
    mailbox = tenant.seed.user_ids[AVERY]
    now = dt.datetime.now(dt.UTC)
    await asyncio.gather(
        *(m365.calendar.calendar_view(mailbox, now, now + dt.timedelta(days=7)) for _ in range(24))
    )
    assert 1 < tenant.max_in_flight[mailbox] <= 4
    assert not any(r.throttled for r in tenant.requests)


async def test_the_sandbox_would_throttle_a_fifth_concurrent_request(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    """The check above can fail: the same load sent without naming the mailbox is throttled."""
    tenant.set_knobs(latency_ms=50)
    client = recording_client(m365, [], max_attempts=1)
    mailbox = tenant.seed.user_ids[AVERY]
    await asyncio.gather(
        *(client.get(f"users/{mailbox}/events", params={"$top": "1"}) for _ in range(12)),
        return_exceptions=True,
    )
    assert any(r.throttled for r in tenant.requests)


def write_certificate(path: Path) -> x509.Certificate:
    key, cert = make_certificate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return cert


async def test_certificate_credential_with_real_msal(
    m365_factory: M365Factory, tenant: SandboxTenant, tmp_path: Path
) -> None:
    cert = write_certificate(tmp_path / "graph.pem")
    tenant.register_certificate(tenant.seed.app_ids["Syncwarden"], cert)
    m365 = await m365_factory(
        graph={"client_secret": None, "certificate_path": str(tmp_path / "graph.pem")}
    )
    user = await m365.directory.get_user(AVERY)
    assert user.user_principal_name == AVERY


async def test_managed_identity_with_real_msal(
    m365_factory: M365Factory, tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, header = tenant.identity_endpoint
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", header)
    # No secret and no certificate: the only way to a token is the host's managed identity.
    m365 = await m365_factory(graph={"client_secret": None, "managed_identity": True})
    user = await m365.directory.get_user(AVERY)
    assert user.user_principal_name == AVERY
