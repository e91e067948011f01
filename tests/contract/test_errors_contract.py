"""Graph's error body, authentication answers, throttling and paging, with their sources.

Sources: learn.microsoft.com/graph (errors, throttling, throttling-limits, paging; repository
microsoftgraph/microsoft-graph-docs-contrib) and public issues that captured Graph's answers.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import httpx

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client
from tests.sandbox.conftest import ClientFactory, TenantFactory

AVERY = "avery.quinlan@example.edu"
EVENTUAL = {"ConsistencyLevel": "eventual"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# ---------------------------------------------------------------- the error body


async def test_an_error_body_has_code_message_and_inner_error_ids(
    graph: httpx.AsyncClient,
) -> None:
    """Every Graph error is one JSON object ``{"error": {"code", "message", "innerError":
    {"date", "request-id", "client-request-id"}}}``; clients branch on ``code``. The request id
    is also the ``request-id`` response header.

    Sources: https://learn.microsoft.com/graph/errors ("Error resource type"; "You should only
    code against error codes"); the innerError fields as shown in the response examples of
    https://learn.microsoft.com/graph/aad-advanced-queries ("Error handling …").
    """
    response = await graph.get("/users/nobody@example.edu")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "innerError"}
    inner = body["error"]["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    assert response.headers["request-id"] == inner["request-id"]
    uuid.UUID(inner["request-id"])
    assert len(inner["date"]) == len("2021-05-18T19:03:10") and inner["date"][10] == "T"


async def test_the_client_request_id_is_echoed(graph: httpx.AsyncClient) -> None:
    """A ``client-request-id`` sent with the request comes back in the response header and in
    ``innerError``; without one, Graph fills it with the request id.

    Sources: https://learn.microsoft.com/graph/errors; captures of both cases in
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/18714 (no id sent: both equal).
    """
    sent = "5c3a9d2e-0000-4000-8000-000000000001"
    echoed = await graph.get("/users/nobody@example.edu", headers={"client-request-id": sent})
    assert echoed.headers["client-request-id"] == sent
    assert error_of(echoed)["innerError"]["client-request-id"] == sent
    bare = await graph.get("/users/nobody@example.edu")
    inner = error_of(bare)["innerError"]
    assert inner["client-request-id"] == inner["request-id"]


async def test_a_request_without_a_token_is_401_access_token_is_empty(
    raw: httpx.AsyncClient,
) -> None:
    """No ``Authorization`` header: 401 ``InvalidAuthenticationToken`` "Access token is empty."

    Source: the answer captured in
    https://github.com/microsoftgraph/msgraph-sample-reactspa/issues/54; 401 on
    https://learn.microsoft.com/graph/errors.
    """
    response = await raw.get("/v1.0/users")
    assert response.status_code == 401
    assert (error_of(response)["code"], error_of(response)["message"]) == (
        "InvalidAuthenticationToken",
        "Access token is empty.",
    )


async def test_a_token_for_another_resource_is_401(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A valid token whose audience is not Graph (here Exchange's) is 401
    ``InvalidAuthenticationToken`` ("Access token validation failure").

    Source: the answer captured in https://github.com/microsoftgraph/console-java-connect-sample/issues/1
    (a token for another audience); 401 on https://learn.microsoft.com/graph/errors.
    """
    token = tenant.mint_access_token(
        tenant.seed.app_ids["Syncwarden"], "https://outlook.office365.com"
    )
    response = await raw.get("/v1.0/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert error_of(response)["code"] == "InvalidAuthenticationToken"
    assert error_of(response)["message"].startswith("Access token validation failure")


async def test_a_directory_call_without_the_permission_is_403_request_denied(
    client_factory: ClientFactory,
) -> None:
    """A directory call the app has no application permission for is 403
    ``Authorization_RequestDenied`` "Insufficient privileges to complete the operation."

    Sources: 403 on https://learn.microsoft.com/graph/errors; the code and message as captured in
    https://github.com/KelvinTegelaar/CIPP/issues/1607.
    """
    kiosk = await client_factory("Library Kiosk Sync")
    response = await kiosk.get("/applications")
    assert response.status_code == 403
    assert (error_of(response)["code"], error_of(response)["message"]) == (
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )


# ---------------------------------------------------------------- throttling


async def test_a_fifth_concurrent_request_to_one_mailbox_is_429_mailbox_concurrency(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """Outlook allows one app 4 concurrent requests per mailbox; the next is 429
    ``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with a
    ``Retry-After`` header. Other mailboxes are not affected.

    Sources: https://learn.microsoft.com/graph/throttling-limits ("Outlook service limits": 4
    concurrent requests per app per mailbox); https://learn.microsoft.com/graph/throttling (429
    carries Retry-After); the code and message as captured in
    https://github.com/magodo/terraform-provider-outlook/issues/21 and
    https://github.com/alcionai/corso/issues/3695.
    """
    user = tenant.state.user(AVERY)
    assert user is not None
    behaviour = tenant.ctx.behaviour
    for _ in range(4):  # four requests in flight on Avery's mailbox, held open
        behaviour.enter_mailbox(user.id)
    try:
        throttled = await graph.get(f"/users/{AVERY}/events", params={"$top": "1"})
        other = await graph.get("/users/rowan.ibarra@example.edu/events", params={"$top": "1"})
    finally:
        for _ in range(4):
            behaviour.leave_mailbox(user.id)
    assert throttled.status_code == 429
    assert (error_of(throttled)["code"], error_of(throttled)["message"]) == (
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
    )
    assert float(throttled.headers["Retry-After"]) >= 0
    assert other.status_code == 200
    assert (await graph.get(f"/users/{AVERY}/events", params={"$top": "1"})).status_code == 200


async def test_a_mailbox_request_budget_overrun_is_429_with_retry_after(
    sandbox_factory: TenantFactory,
) -> None:
    """Outlook also limits each app to 10,000 requests per mailbox per 10 minutes; past the
    budget Graph answers 429 ``ApplicationThrottled`` with a ``Retry-After`` in seconds, and the
    request succeeds once that time has passed.

    Sources: https://learn.microsoft.com/graph/throttling-limits ("Outlook service limits") and
    https://learn.microsoft.com/graph/throttling ("Wait the number of seconds specified in the
    Retry-After field"). The message text for this limit and whether Retry-After may be
    fractional are not published; the product parses delta-seconds with or without a fraction,
    and HTTP dates (connectors/graph/error_mapping.py ``parse_retry_after``).
    """
    tenant = await sandbox_factory(mailbox_budget=1, mailbox_budget_window_s=600)
    async with graph_client(tenant) as graph:
        first = await graph.get(f"/users/{AVERY}/events", params={"$top": "1"})
        second = await graph.get(f"/users/{AVERY}/events", params={"$top": "1"})
    assert first.status_code == 200
    assert second.status_code == 429
    assert error_of(second)["code"] == "ApplicationThrottled"
    wait = float(second.headers["Retry-After"])
    assert 0 < wait <= 600 and not math.isnan(wait)


# ---------------------------------------------------------------- paging


async def test_next_links_carry_the_query_and_stop_on_the_last_page(
    graph: httpx.AsyncClient,
) -> None:
    """When more results exist Graph returns ``@odata.nextLink``: the full URL of the next page,
    carrying the original query options plus a ``$skiptoken``. Following links until none is
    returned yields every item once; the last page has no ``@odata.nextLink``.

    Source: https://learn.microsoft.com/graph/paging.
    """
    first = (await graph.get("/users", params={"$top": "4", "$select": "id"})).json()
    link = first["@odata.nextLink"]
    assert link.startswith("https://") and "$skiptoken=" in link
    assert "$top=4" in link and "$select=id" in link
    seen = [u["id"] for u in first["value"]]
    url: str | None = link
    while url is not None:
        page = (await graph.get(url)).json()
        assert all(set(u) == {"id"} for u in page["value"])
        seen.extend(u["id"] for u in page["value"])
        url = page.get("@odata.nextLink")
    assert len(seen) == len(set(seen)) == 11


async def test_the_count_is_on_the_first_page_only(graph: httpx.AsyncClient) -> None:
    """With ``$count=true`` on a directory collection, ``@odata.count`` is present only on the
    first page; the ConsistencyLevel header must be sent again on each page request.

    Source: https://learn.microsoft.com/graph/paging ("@odata.count property will be present only
    in the first page of the paged data"; headers "are not included by default in subsequent page
    requests").
    """
    first = await graph.get(
        "/users", params={"$top": "5", "$count": "true", "$select": "id"}, headers=EVENTUAL
    )
    assert first.json()["@odata.count"] == 11
    second = await graph.get(first.json()["@odata.nextLink"], headers=EVENTUAL)
    assert second.status_code == 200
    assert "@odata.count" not in second.json()


async def test_directory_page_size_is_1_to_999(graph: httpx.AsyncClient) -> None:
    """``$top`` on directory collections accepts 1 to 999; outside that range Graph answers 400
    ``Request_UnsupportedQuery`` "Invalid page size specified: '…'. Must be between 1 and 999
    inclusive."

    Sources: https://learn.microsoft.com/graph/paging (maximum page sizes differ per API; an
    out-of-range value may be refused); the exact answer as quoted in public client code,
    https://github.com/turbot/steampipe-plugin-azuread (azuread/table_azuread_user.go).
    """
    assert (await graph.get("/users", params={"$top": "999"})).status_code == 200
    for size in ("1000", "0"):
        response = await graph.get("/users", params={"$top": size})
        assert response.status_code == 400, size
        assert error_of(response)["code"] == "Request_UnsupportedQuery"
        assert error_of(response)["message"] == (
            f"Invalid page size specified: '{size}'. Must be between 1 and 999 inclusive."
        )
