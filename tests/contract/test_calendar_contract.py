"""Outlook calendar behaviours through Graph: ``$batch`` shapes, delta, events, transaction ids.

Each test names the page (or public report) the behaviour comes from. The sync engine depends on
every one of them; where Microsoft publishes nothing, the docstring says what the engine
survives instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client
from tests.sandbox.conftest import TenantFactory

AVERY = "avery.quinlan@example.edu"
TAG = "String {6f3c2a9e-1b4d-4e8f-9a7c-2d5e8f1a3b6c} Name SyncwardenSourceId"
WINDOW = {"startDateTime": "2031-03-01T00:00:00Z", "endDateTime": "2031-04-01T00:00:00Z"}


def event(subject: str, day: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": f"2031-03-{day:02d}T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": f"2031-03-{day:02d}T10:00:00", "timeZone": "UTC"},
        **extra,
    }


def create(request_id: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "POST",
        "url": f"/users/{AVERY}/events",
        "headers": {"Content-Type": "application/json"},
        "body": event(subject),
        **extra,
    }


async def post_batch(graph: httpx.AsyncClient, requests: list[dict[str, Any]]) -> httpx.Response:
    return await graph.post("/$batch", json={"requests": requests})


async def delta_round(
    graph: httpx.AsyncClient, link: str, params: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    url: str | None = link
    while url:
        body = (await graph.get(url, params=params)).json()
        params = None
        items.extend(body["value"])
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        url = body.get("@odata.nextLink")
    raise AssertionError("the round ended without a delta link")


# ---------------------------------------------------------------- $batch


async def test_batch_accepts_fully_parallel_requests(graph: httpx.AsyncClient) -> None:
    """Requests without ``dependsOn`` run in any order and answer by id.
    https://learn.microsoft.com/graph/json-batching (Creating a batch request; responses
    "might appear in a different order", correlate by id)."""
    response = await post_batch(graph, [create(str(n), f"P{n}") for n in range(5)])
    assert response.status_code == 200
    answers = response.json()["responses"]
    assert sorted(a["id"] for a in answers) == ["0", "1", "2", "3", "4"]
    assert {a["status"] for a in answers} == {201}


@pytest.mark.parametrize(
    "depends",
    [
        {"2": ["1"], "4": ["2"], "3": ["4"]},  # the docs' own example: 1, then 2, then 4, then 3
        {"2": ["1"], "3": ["1"], "4": ["1"]},  # every request after the same one
    ],
    ids=["chain", "all-after-one"],
)
async def test_batch_accepts_a_chain_or_all_after_one(
    graph: httpx.AsyncClient, depends: dict[str, list[str]]
) -> None:
    """A fully sequential batch (the json-batching page's example orders 1, 2, 4, 3) and a batch
    whose requests all depend on one request are run.
    https://learn.microsoft.com/graph/json-batching#sequencing-requests-with-the-dependson-property
    """
    requests = [
        create(rid, f"S{rid}", **({"dependsOn": depends[rid]} if rid in depends else {}))
        for rid in ("1", "2", "4", "3")
    ]
    response = await post_batch(graph, requests)
    assert response.status_code == 200
    assert {a["status"] for a in response.json()["responses"]} == {201}


@pytest.mark.parametrize(
    "depends",
    [
        {"5": ["1"], "6": ["2"]},  # four lanes: each request after the one four places earlier
        {"2": ["1"]},  # one pair chained, the rest independent
        {"3": ["1", "2"]},  # a request waiting for two
    ],
    ids=["lanes", "partly-chained", "fan-in"],
)
async def test_batch_refuses_any_other_dependency_shape(
    graph: httpx.AsyncClient, depends: dict[str, list[str]]
) -> None:
    """Graph refuses a batch that is neither fully sequential nor fully parallel with 400 "Batch
    should be either fully sequential or fully parallel".
    https://learn.microsoft.com/graph/json-batching (tip: "Batch should be either fully
    sequential or fully parallel"); https://learn.microsoft.com/answers/questions/1532547
    (Microsoft's answer quoting the same rule)."""
    requests = [
        create(str(n), f"M{n}", **({"dependsOn": depends[str(n)]} if str(n) in depends else {}))
        for n in range(1, 7)
    ]
    response = await post_batch(graph, requests)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert "either fully sequential or fully parallel" in error["message"]


async def test_batch_refuses_more_than_twenty_requests(graph: httpx.AsyncClient) -> None:
    """At most 20 requests per batch; more is a malformed batch, refused as a whole with 400.
    https://learn.microsoft.com/graph/json-batching#batch-size-limitations"""
    response = await post_batch(graph, [create(str(n), "x") for n in range(21)])
    assert response.status_code == 400


async def test_a_failed_dependency_answers_424(graph: httpx.AsyncClient) -> None:
    """ "If an individual request fails, any request that depends on that request fails with
    status code 424 (Failed Dependency)."
    https://learn.microsoft.com/graph/json-batching#sequencing-requests-with-the-dependson-property
    """
    requests = [
        {"id": "1", "method": "GET", "url": "/users/nobody@example.edu"},
        {**create("2", "after a failure"), "dependsOn": ["1"]},
    ]
    response = await post_batch(graph, requests)
    answers = {a["id"]: a["status"] for a in response.json()["responses"]}
    assert answers == {"1": 404, "2": 424}


async def test_an_unordered_batch_to_one_mailbox_stays_within_four_at_a_time(
    sandbox_factory: TenantFactory,
) -> None:
    """Graph sends Outlook up to four requests of an unordered batch at a time, whatever their
    mailboxes, so 20 writes to one mailbox stay inside its four-concurrent-requests limit.
    https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits (the paragraph on
    JSON batches, added in microsoftgraph/microsoft-graph-docs-contrib commit cb40fda);
    https://learn.microsoft.com/answers/questions/1660054 (Microsoft's answer)."""
    tenant = await sandbox_factory(latency_ms=30)
    async with graph_client(tenant) as graph:
        response = await post_batch(graph, [create(str(n), f"B{n}") for n in range(20)])
    assert {a["status"] for a in response.json()["responses"]} == {201}
    assert tenant.max_in_flight[tenant.seed.user_ids[AVERY]] == 4
    assert not any(r.throttled for r in tenant.requests)


async def test_a_fifth_concurrent_request_to_a_mailbox_is_throttled(
    sandbox_factory: TenantFactory,
) -> None:
    """Outlook takes four concurrent requests per app and mailbox; the fifth gets 429
    ``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with
    ``Retry-After``. https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits;
    the message as captured in https://learn.microsoft.com/answers/questions/968767."""
    tenant = await sandbox_factory(latency_ms=100)
    async with graph_client(tenant) as graph:
        answers = await asyncio.gather(
            *(graph.get(f"/users/{AVERY}/events", params={"$top": "1"}) for _ in range(6))
        )
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled[0].json()["error"]["message"]
    assert throttled[0].headers["Retry-After"]


# ---------------------------------------------------------------- delta


async def test_delta_reports_changes_outside_the_window_as_removed(
    graph: httpx.AsyncClient,
) -> None:
    """Within a round, events *outside* the window that were added, changed or deleted since the
    previous call come under ``@removed`` with reason ``deleted``, like deleted ones inside.
    https://learn.microsoft.com/graph/api/event-delta (Response section);
    microsoftgraph/microsoft-graph-docs-contrib api-reference/v1.0/api/event-delta.md."""
    inside = (await graph.post(f"/users/{AVERY}/events", json=event("Inside", 10))).json()
    _, link = await delta_round(graph, f"/users/{AVERY}/calendarView/delta", WINDOW)
    outside = (
        await graph.post(
            f"/users/{AVERY}/events",
            json={
                **event("Outside"),
                "start": {"dateTime": "2031-07-01T09:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2031-07-01T10:00:00", "timeZone": "UTC"},
            },
        )
    ).json()
    moved_out = {
        "start": {"dateTime": "2031-08-01T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2031-08-01T10:00:00", "timeZone": "UTC"},
    }
    await graph.patch(f"/users/{AVERY}/events/{inside['id']}", json=moved_out)

    items, _ = await delta_round(graph, link)

    removed = {item["id"]: item["@removed"] for item in items if "@removed" in item}
    assert removed == {
        outside["id"]: {"reason": "deleted"},
        inside["id"]: {"reason": "deleted"},
    }
    assert all("@removed" in item for item in items)


async def test_delta_refuses_query_options_it_does_not_support(graph: httpx.AsyncClient) -> None:
    """``calendarView/delta`` supports no ``$select``, ``$expand``, ``$filter``, ``$orderby`` or
    ``$search``; the page size is set with ``Prefer: odata.maxpagesize``.
    https://learn.microsoft.com/graph/api/event-delta#odata-query-parameters"""
    for option in ("$select", "$expand", "$filter", "$orderby"):
        answer = await graph.get(
            f"/users/{AVERY}/calendarView/delta", params={**WINDOW, option: "subject"}
        )
        assert answer.status_code == 400, option
    first = await graph.get(
        f"/users/{AVERY}/calendarView/delta",
        params={"startDateTime": "2000-01-01T00:00:00Z", "endDateTime": "2100-01-01T00:00:00Z"},
        headers={"Prefer": "odata.maxpagesize=2"},
    )
    assert len(first.json()["value"]) == 2 and "@odata.nextLink" in first.json()


async def test_an_expired_delta_token_asks_for_a_full_resync(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """A delta token the service no longer knows answers 410 with ``SyncStateNotFound`` /
    resync required, and the client starts a new round. https://learn.microsoft.com/graph/delta-query-overview
    (Synchronization reset); the exact body for calendarView is not published, so the connector
    treats 410 and the codes syncStateNotFound, resyncRequired and syncStateInvalid alike."""
    _, link = await delta_round(graph, f"/users/{AVERY}/calendarView/delta", WINDOW)
    tenant.expire_delta_tokens()
    expired = await graph.get(link)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "SyncStateNotFound"


# ---------------------------------------------------------------- events


async def test_a_reused_transaction_id_is_refused_with_the_existing_event(
    graph: httpx.AsyncClient,
) -> None:
    """A create repeating a ``transactionId`` gets 400 ``ErrorDuplicateTransactionId`` "The
    TransactionId specified in the request has already been used to create a different event",
    with the existing event's id in ``error["@event.existingEventId"]``. Not published by
    Microsoft; seen in public client code (clients reading ``@event.existingEventId``; others
    matching the code on 400 or 409). Whether an identical retry gets the first 201 instead is
    not published either: the sandbox's ``duplicate_transaction`` knob gives all four answers
    and tests/integration/test_sync_fidelity.py runs the engine against each."""
    body = event("Once", transactionId="contract-tx-1")
    first = await graph.post(f"/users/{AVERY}/events", json=body)
    again = await graph.post(f"/users/{AVERY}/events", json=body)
    assert (first.status_code, again.status_code) == (201, 400)
    error = again.json()["error"]
    assert error["code"] == "ErrorDuplicateTransactionId"
    assert error["@event.existingEventId"] == first.json()["id"]


async def test_a_missing_event_is_error_item_not_found(graph: httpx.AsyncClient) -> None:
    """Reading, changing or deleting an event that is gone answers 404 ``ErrorItemNotFound``.
    https://learn.microsoft.com/graph/api/event-get and the Outlook error codes in
    https://learn.microsoft.com/graph/errors (code in the standard error body)."""
    created = (await graph.post(f"/users/{AVERY}/events", json=event("Brief"))).json()
    await graph.delete(f"/users/{AVERY}/events/{created['id']}")
    for method in ("GET", "PATCH", "DELETE"):
        answer = await graph.request(
            method,
            f"/users/{AVERY}/events/{created['id']}",
            json={"subject": "x"} if method == "PATCH" else None,
        )
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "ErrorItemNotFound")


async def test_events_are_found_by_a_single_value_extended_property(
    graph: httpx.AsyncClient,
) -> None:
    """Tagged with a single-value extended property at create; found with
    ``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')`` and
    read back with ``$expand``; not returned unless expanded.
    https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-get
    and https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties
    """
    created = await graph.post(
        f"/users/{AVERY}/events",
        json=event("Tagged", singleValueExtendedProperties=[{"id": TAG, "value": "appt-7"}]),
    )
    assert "singleValueExtendedProperties" not in created.json()
    found = await graph.get(
        f"/users/{AVERY}/events",
        params={
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG}' and "
            "ep/value eq 'appt-7')",
            "$expand": f"singleValueExtendedProperties($filter=id eq '{TAG}')",
        },
    )
    [only] = found.json()["value"]
    assert only["id"] == created.json()["id"]
    assert only["singleValueExtendedProperties"] == [{"id": TAG, "value": "appt-7"}]


async def test_calendar_view_needs_a_window_and_answers_in_utc(graph: httpx.AsyncClient) -> None:
    """``calendarView`` requires ``startDateTime`` and ``endDateTime``; times come back in UTC
    unless ``Prefer: outlook.timezone`` names a zone, which changes only the response.
    https://learn.microsoft.com/graph/api/user-list-calendarview and
    https://learn.microsoft.com/graph/api/resources/datetimetimezone"""
    missing = await graph.get(f"/users/{AVERY}/calendarView")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "ErrorInvalidParameter")
    await graph.post(f"/users/{AVERY}/events", json=event("Zoned", 12))
    params = {**WINDOW, "$top": "100"}
    utc = (await graph.get(f"/users/{AVERY}/calendarView", params=params)).json()["value"]
    [item] = [e for e in utc if e["subject"] == "Zoned"]
    assert item["start"] == {"dateTime": "2031-03-12T09:00:00.0000000", "timeZone": "UTC"}
    zoned = await graph.get(
        f"/users/{AVERY}/calendarView",
        params=params,
        headers={"Prefer": 'outlook.timezone="Eastern Standard Time"'},
    )
    [item] = [e for e in zoned.json()["value"] if e["subject"] == "Zoned"]
    assert item["start"]["dateTime"].startswith("2031-03-12T05:00:00")


async def test_batch_request_ids_must_be_unique_ignoring_case(graph: httpx.AsyncClient) -> None:
    """Each request's id "Not case-sensitive. Must be unique in the batch, otherwise, the batch
    request fails with a 400 error code."
    https://learn.microsoft.com/graph/json-batching#creating-a-batch-request"""
    response = await post_batch(graph, [create("a", "one"), create("A", "two")])
    assert response.status_code == 400


@pytest.mark.parametrize("kept", [True, False], ids=["id-stays-spent", "id-freed"])
async def test_a_deleted_events_transaction_id_may_stay_spent(
    sandbox_factory: TenantFactory, kept: bool
) -> None:
    """Whether a ``transactionId`` can be used again once its event is deleted is not published.
    The sandbox keeps it spent by default (the stricter answer: the create is refused as a
    duplicate naming the deleted event) and frees it with ``spent_transactions_kept=False``; the
    engine moves to the next generation's id either way
    (tests/integration/test_sync_fidelity.py, the cancelled-and-restored appointment)."""
    tenant = await sandbox_factory()
    tenant.set_knobs(spent_transactions_kept=kept)
    async with graph_client(tenant) as graph:
        body = event("Cancelled, then restored", transactionId="contract-tx-spent")
        first = (await graph.post(f"/users/{AVERY}/events", json=body)).json()
        await graph.delete(f"/users/{AVERY}/events/{first['id']}")
        again = await graph.post(f"/users/{AVERY}/events", json=body)
    if kept:
        assert again.status_code == 400
        assert again.json()["error"]["@event.existingEventId"] == first["id"]
    else:
        assert again.status_code == 201
