"""Which 403 is which: Outlook's two ``ErrorAccessDenied`` and the directory's refusal.

The code is the same for a mailbox outside the app's access policy and for an app without a
calendar permission; only the message tells them apart, and Syncwarden acts differently on each
(wait for the policy to propagate, or tell IT which permission to grant).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from syncwarden.sandbox.seed import GRAPH_RESOURCE
from syncwarden.sandbox.server import SandboxTenant

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]
AVERY = "avery.quinlan@example.edu"
OUTSIDE_POLICY = "sasha.verhoeven@example.edu"
PERMISSION_TEXT = "Access is denied. Check credentials and try again."
EVENT = {
    "subject": "Contract",
    "start": {"dateTime": "2031-01-01T09:00:00", "timeZone": "UTC"},
    "end": {"dateTime": "2031-01-01T10:00:00", "timeZone": "UTC"},
}


def syncwarden(tenant: SandboxTenant) -> str:
    return tenant.seed.app_ids["Syncwarden"]


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


async def test_a_calendar_call_without_a_calendars_permission_is_access_denied(
    tenant: SandboxTenant, client_factory: ClientFactory
) -> None:
    """403 ErrorAccessDenied "Access is denied. Check credentials and try again." for a calendar
    call by an app holding no Calendars.* permission.

    Sources: public issue reports of calendar calls without the permission,
    https://github.com/microsoftgraph/msgraph-sdk-javascript/issues/282 (GET /users/{id}/events),
    https://github.com/microsoftgraph/python-sample-send-mail/issues/4 (maintainer: the app needs
    Calendars.Read), https://github.com/microsoftgraph/msgraph-sample-pythondjangoapp/issues/29.
    """
    tenant.revoke_role(syncwarden(tenant), GRAPH_RESOURCE, "Calendars.ReadWrite")
    graph = await client_factory()  # a token issued after the change, without the role
    mailbox = tenant.seed.user_ids[AVERY]

    for response in (
        await graph.get(f"/users/{mailbox}/events", params={"$top": "1"}),
        await graph.get(
            f"/users/{mailbox}/calendarView/delta",
            params={"startDateTime": "2031-01-01T00:00:00Z", "endDateTime": "2031-02-01T00:00:00Z"},
        ),
        await graph.post(f"/users/{mailbox}/events", json=EVENT),
    ):
        assert error_of(response) == (403, "ErrorAccessDenied", PERMISSION_TEXT)


async def test_a_write_with_only_a_read_permission_is_the_same_access_denied(
    tenant: SandboxTenant, client_factory: ClientFactory
) -> None:
    """Reading works with Calendars.Read; creating an event then gets 403 ErrorAccessDenied
    "Access is denied. Check credentials and try again.".

    Source: https://github.com/RogerSelwyn/MS365-Calendar/issues/53 (reads fine, creates and
    updates refused with that message until write access was granted).
    """
    app = syncwarden(tenant)
    tenant.revoke_role(app, GRAPH_RESOURCE, "Calendars.ReadWrite")
    tenant.grant_role(app, GRAPH_RESOURCE, "Calendars.Read")
    graph = await client_factory()
    mailbox = tenant.seed.user_ids[AVERY]

    assert (await graph.get(f"/users/{mailbox}/events", params={"$top": "1"})).status_code == 200
    created = await graph.post(f"/users/{mailbox}/events", json=EVENT)
    assert error_of(created) == (403, "ErrorAccessDenied", PERMISSION_TEXT)


async def test_a_mailbox_outside_the_access_policy_is_access_to_odata_disabled(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """403 ErrorAccessDenied "Access to OData is disabled." for a mailbox the app's application
    access policy excludes (the [RAOP] reason follows in current tenants).

    Sources: https://learn.microsoft.com/en-us/graph/auth-limit-mailbox-access#handling-api-errors
    ("Access to OData is disabled."); the longer "Access to OData is disabled: [RAOP] : Blocked by
    tenant configured AppOnly AccessPolicy settings." is quoted in public client code and notes.
    """
    mailbox = tenant.seed.user_ids[OUTSIDE_POLICY]
    status, code, message = error_of(
        await graph.get(f"/users/{mailbox}/events", params={"$top": "1"})
    )
    assert (status, code) == (403, "ErrorAccessDenied")
    assert message.startswith("Access to OData is disabled")
    assert "Check credentials" not in message


async def test_without_the_permission_the_permission_refusal_comes_first(
    tenant: SandboxTenant, client_factory: ClientFactory
) -> None:
    """A mailbox outside the policy, asked by an app without any Calendars.* permission.

    Which check Exchange makes first is not published. The sandbox checks the permission first:
    an application access policy only restricts the permission scopes an app holds ("These
    policies are complementary to the permission scopes that are declared by the application",
    https://learn.microsoft.com/powershell/module/exchange/new-applicationaccesspolicy). The
    product survives either order: the permission text is reported as a missing permission, the
    policy text as "not in scope yet", and once one is fixed the other is reported.
    """
    tenant.revoke_role(syncwarden(tenant), GRAPH_RESOURCE, "Calendars.ReadWrite")
    graph = await client_factory()
    mailbox = tenant.seed.user_ids[OUTSIDE_POLICY]
    response = await graph.get(f"/users/{mailbox}/events", params={"$top": "1"})
    assert error_of(response) == (403, "ErrorAccessDenied", PERMISSION_TEXT)


async def test_a_directory_call_without_a_directory_permission_is_authorization_request_denied(
    tenant: SandboxTenant, client_factory: ClientFactory
) -> None:
    """The directory (not Outlook) answers a missing permission with 403
    Authorization_RequestDenied "Insufficient privileges to complete the operation.".

    Source: https://github.com/microsoftgraph/nodejs-apponlytoken-rest-sample/issues/17
    (listing users without the permission); the error code list in
    https://learn.microsoft.com/en-us/graph/errors describes 403 as missing permissions.
    """
    tenant.revoke_role(syncwarden(tenant), GRAPH_RESOURCE, "User.Read.All")
    graph = await client_factory()
    response = await graph.get(f"/users/{tenant.seed.user_ids[AVERY]}")
    assert error_of(response) == (
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
