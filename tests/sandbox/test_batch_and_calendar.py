"""$batch, events, calendarView expansion and calendarView delta."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.sandbox.graph_batch import accepted_shape
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client
from tests.sandbox.conftest import TenantFactory

AVERY = "avery.quinlan@example.edu"
PROP = "String {6f3c2a9e-1b4d-4e8f-9a7c-2d5e8f1a3b6c} Name SyncwardenSourceId"
WINDOW = {"startDateTime": "2000-01-01T00:00:00Z", "endDateTime": "2100-01-01T00:00:00Z"}


def event(subject: str, **extra: object) -> dict[str, object]:
    return {
        "subject": subject,
        "start": {"dateTime": "2031-03-04T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2031-03-04T10:00:00", "timeZone": "UTC"},
        **extra,
    }


async def test_batch_runs_each_request_through_the_pipeline(sandbox_factory: TenantFactory) -> None:
    tenant = await sandbox_factory(mailbox_concurrency=1, latency_ms=100)
    async with graph_client(tenant) as graph:
        requests: list[dict[str, object]] = [
            {"id": str(i), "method": "GET", "url": f"/users/{AVERY}/events"} for i in range(3)
        ]
        requests.append({"id": "u", "method": "GET", "url": "/users/nobody@example.edu"})
        response = await graph.post("/$batch", json={"requests": requests})
        assert response.status_code == 200
        by_id = {r["id"]: r for r in response.json()["responses"]}
        statuses = sorted(by_id[str(i)]["status"] for i in range(3))
        assert statuses == [200, 429, 429]
        assert by_id["u"]["status"] == 404
        chained = [
            {"id": "u", "method": "GET", "url": "/users/nobody@example.edu"},
            {"id": "d", "method": "GET", "url": "/groups?$top=1", "dependsOn": ["u"]},
        ]
        response = await graph.post("/$batch", json={"requests": chained})
        by_id = {r["id"]: r for r in response.json()["responses"]}
        assert (by_id["u"]["status"], by_id["d"]["status"]) == (404, 424)
        too_many = await graph.post(
            "/$batch",
            json={
                "requests": [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]
            },
        )
        assert too_many.status_code == 400
    assert sum(1 for r in tenant.requests if r.in_batch) == 5


async def test_transaction_id_and_extended_property_lookup(graph: httpx.AsyncClient) -> None:
    body = event(
        "Synced",
        transactionId="tx-1",
        singleValueExtendedProperties=[{"id": PROP, "value": "appt-42"}],
    )
    first = await graph.post(f"/users/{AVERY}/events", json=body)
    second = await graph.post(f"/users/{AVERY}/events", json=body)
    assert (first.status_code, second.status_code) == (201, 400)
    error = second.json()["error"]
    assert error["code"] == "ErrorDuplicateTransactionId"
    assert error["@event.existingEventId"] == first.json()["id"]
    assert "singleValueExtendedProperties" not in first.json()
    query = {
        "$filter": (
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'appt-42')"
        ),
        "$expand": f"singleValueExtendedProperties($filter=id eq '{PROP}')",
    }
    found = (await graph.get(f"/users/{AVERY}/events", params=query)).json()["value"]
    assert [e["id"] for e in found] == [first.json()["id"]]
    assert found[0]["singleValueExtendedProperties"] == [{"id": PROP, "value": "appt-42"}]
    event_id = first.json()["id"]
    patched = await graph.patch(f"/users/{AVERY}/events/{event_id}", json={"subject": "Moved"})
    assert patched.json()["subject"] == "Moved"
    assert patched.json()["changeKey"] != first.json()["changeKey"]
    assert (await graph.delete(f"/users/{AVERY}/events/{event_id}")).status_code == 204
    missing = await graph.delete(f"/users/{AVERY}/events/{event_id}")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "ErrorItemNotFound")


async def test_calendar_view_expands_recurrence(graph: httpx.AsyncClient) -> None:
    missing = await graph.get(f"/users/{AVERY}/calendarView")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "ErrorInvalidParameter")
    view = (
        await graph.get(f"/users/{AVERY}/calendarView", params={**WINDOW, "$top": "100"})
    ).json()["value"]
    occurrences = [e for e in view if e["type"] == "occurrence"]
    assert len(occurrences) == 12
    assert len({e["seriesMasterId"] for e in occurrences}) == 1
    assert {e["start"]["dateTime"][11:16] for e in occurrences} == {"08:30"}


async def test_delta_pages_then_reports_changes_and_removals(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    url: str | None = f"/users/{AVERY}/calendarView/delta"
    params: dict[str, str] | None = WINDOW
    seen: list[str] = []
    delta_link = ""
    while url:
        body = (
            await graph.get(url, params=params, headers={"Prefer": "odata.maxpagesize=5"})
        ).json()
        params = None
        seen.extend(e["id"] for e in body["value"])
        url = body.get("@odata.nextLink")
        delta_link = body.get("@odata.deltaLink", delta_link)
    assert len(seen) == 14 and delta_link
    created = (await graph.post(f"/users/{AVERY}/events", json=event("New"))).json()
    avery = tenant.state.user(AVERY)
    assert avery is not None
    mailbox = tenant.state.mailbox_events(avery.id).values()
    master = next(e for e in mailbox if e.subject == "Advising drop-in")
    await graph.delete(f"/users/{AVERY}/events/{master.id}")
    changes = (await graph.get(delta_link)).json()
    ids = {e["id"] for e in changes["value"] if "@removed" not in e}
    gone = {e["id"] for e in changes["value"] if "@removed" in e}
    assert ids == {created["id"]}
    assert gone == {master.id}
    assert (await graph.get(delta_link, params={"$select": "subject"})).status_code == 400
    tenant.expire_delta_tokens()
    expired = await graph.get(changes["@odata.deltaLink"])
    assert expired.status_code == 410


@given(st.permutations([str(n) for n in range(1, 8)]), st.integers(min_value=2, max_value=7))
def test_batch_shapes_graph_runs_are_accepted_and_any_mix_is_refused(
    ids: list[str], size: int
) -> None:
    """Any chain through every request and any all-after-one batch are accepted; a chain with a
    request left independent, or a request waiting for two, is refused."""
    ids = ids[:size]
    chain: list[dict[str, Any]] = [
        {"id": rid, **({"dependsOn": [ids[i - 1]]} if i else {})} for i, rid in enumerate(ids)
    ]
    star: list[dict[str, Any]] = [
        {"id": rid, **({"dependsOn": [ids[0]]} if i else {})} for i, rid in enumerate(ids)
    ]
    assert accepted_shape(chain) and accepted_shape(star)
    assert accepted_shape([{"id": rid} for rid in ids])
    if size >= 3:
        partly: list[dict[str, Any]] = [*chain[:-1], {"id": ids[-1]}]
        assert not accepted_shape(partly)
        fan_in: list[dict[str, Any]] = [
            *chain[:-1],
            {"id": ids[-1], "dependsOn": [ids[0], ids[-2]]},
        ]
        assert not accepted_shape(fan_in)
