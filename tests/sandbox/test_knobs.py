"""Latency, per-mailbox throttling, faults and the request log."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client
from tests.sandbox.conftest import TenantFactory

AVERY = "avery.quinlan@example.edu"


async def test_fifth_concurrent_request_to_a_mailbox_is_throttled(
    sandbox_factory: TenantFactory,
) -> None:
    tenant = await sandbox_factory(latency_ms=300)
    async with graph_client(tenant) as graph:
        responses = await asyncio.gather(*(graph.get(f"/users/{AVERY}/events") for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 4 and statuses.count(429) == 2
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    assert throttled.headers["Retry-After"]
    avery_id = tenant.state.user(AVERY).id  # type: ignore[union-attr]
    assert tenant.max_in_flight[avery_id] == 4
    assert sum(r.throttled for r in tenant.requests) == 2


async def test_budget_gives_fractional_retry_after(sandbox_factory: TenantFactory) -> None:
    tenant = await sandbox_factory(mailbox_budget=2, mailbox_budget_window_s=0.5)
    async with graph_client(tenant) as graph:
        statuses = [(await graph.get(f"/users/{AVERY}/events")).status_code for _ in range(2)]
        third = await graph.get(f"/users/{AVERY}/events")
    assert statuses == [200, 200]
    assert third.status_code == 429
    assert 0 < float(third.headers["Retry-After"]) <= 0.5


async def test_fault_rules_status_count_and_request_log(
    tenant: SandboxTenant, graph: httpx.AsyncClient, raw: httpx.AsyncClient
) -> None:
    fault = await raw.post(
        "/_sandbox/faults",
        json={"path": "^/v1.0/users$", "status": 503, "count": 1, "retry_after": "2"},
    )
    assert fault.status_code == 201
    first = await graph.get("/users")
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert first.json()["error"]["code"] == "ServiceUnavailable"
    assert (await graph.get("/users")).status_code == 200
    log = (await raw.get("/_sandbox/requests")).json()["requests"]
    assert [entry["status"] for entry in log if entry["path"] == "/users"] == [503, 200]


async def test_drop_and_hang_faults(tenant: SandboxTenant, graph: httpx.AsyncClient) -> None:
    tenant.add_fault("/groups", action="drop", count=1)
    with pytest.raises(httpx.TransportError):
        await graph.get("/groups")
    tenant.add_fault("/applications", action="hang", count=1)
    with pytest.raises(httpx.ReadTimeout):
        await graph.get("/applications", timeout=0.5)


async def test_access_policy_blocks_mailboxes_outside_scope(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    blocked = await graph.get("/users/kai.nakamura-ellis@example.edu/events")
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "ErrorAccessDenied"
    assert "Access to OData is disabled" in blocked.json()["error"]["message"]
    no_mailbox = await graph.get("/users/harper.osei@example.edu/events")
    assert no_mailbox.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.set_access_policy(app_id, frozen=True)
    tenant.add_group_member(
        "36210e13-4d7d-4472-8af4-8892765df8ff", "kai.nakamura-ellis@example.edu"
    )
    assert (await graph.get("/users/kai.nakamura-ellis@example.edu/events")).status_code == 403
    tenant.propagate_access_policy(app_id)
    assert (await graph.get("/users/kai.nakamura-ellis@example.edu/events")).status_code == 200
