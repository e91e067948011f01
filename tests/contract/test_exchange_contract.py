"""Exchange Online's admin endpoint (``InvokeCommand``): what Syncwarden relies on, and its source.

The endpoint is what Microsoft's EXO V3 PowerShell module calls; Microsoft does not publish it as
a contract. The sources are therefore the cmdlet reference pages on learn.microsoft.com (roles
and parameters), Microsoft's docs repository issues (captured answers), Microsoft Q&A threads,
and public client code that talks to the endpoint: CIPP-API's ``New-ExoRequest``, GreyCorbel's
ExoHelper (a port of the module's REST calls) and Tools4ever's Exchange Online connector. Where a
detail is not published the test says so and checks that the product survives each variant, by
feeding the sandbox's real answer to the connector's own classifier.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from syncwarden.connectors import errors
from syncwarden.connectors.exchange.client import MEMBERSHIP_ROLE, exchange_error
from syncwarden.sandbox.exchange import TENANT_CONCURRENCY
from syncwarden.sandbox.server import SandboxTenant
from tests.support.exchange_admin import invoke

EXCHANGE = "https://outlook.office365.com"
SYNC_GROUP = "calendar-sync@example.edu"  # "Calendar Sync", a mail-enabled security group
AVERY = "avery.quinlan@example.edu"  # a member of it
SASHA = "sasha.verhoeven@example.edu"  # not a member
MEMBERSHIP = "Security Group Creation and Membership"
ADD = "Add-DistributionGroupMember"
REMOVE = "Remove-DistributionGroupMember"
REQUEST = errors.RequestInfo("POST", "https://outlook.office365.com/adminapi/beta/t/InvokeCommand")


def cmdlet(name: str, **parameters: Any) -> dict[str, Any]:
    return {"CmdletInput": {"CmdletName": name, "Parameters": parameters}}


def membership(name: str, member: str, **extra: Any) -> dict[str, Any]:
    return cmdlet(
        name, Identity=SYNC_GROUP, Member=member, BypassSecurityGroupManagerCheck=True, **extra
    )


def parts(response: httpx.Response) -> list[str]:
    """``details[0].message`` split into its error id, exception type and text."""
    message: str = response.json()["error"]["details"][0]["message"]
    return message.split("|", 2)


def classified(response: httpx.Response, name: str = ADD) -> errors.ConnectorError:
    """What the product makes of this answer."""
    return exchange_error(
        response.status_code, response.headers, response.content, REQUEST, cmdlet=name
    )


async def test_success_is_200_with_value_and_an_empty_warnings_array(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A cmdlet that ran answers 200 ``{"@odata.context": ".../$metadata#Collection(...)",
    "adminapi.warnings@odata.type": "#Collection(String)", "@adminapi.warnings": [], "value":
    [...]}``; a write cmdlet's ``value`` is empty.

    Sources: the response model in https://github.com/claudineyqr/ExchangeOnlineAdminRestApi
    (RecipientPermissionResponse: @odata.context, adminapi.warnings@odata.type,
    @adminapi.warnings, value); the caller in
    https://github.com/KelvinTegelaar/CIPP-API/blob/master/Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1
    (reads ``value`` and ``@adminapi.warnings``, and copes with ``value`` being null).
    """
    read = await invoke(tenant, raw, cmdlet("Get-DistributionGroupMember", Identity=SYNC_GROUP))
    write = await invoke(tenant, raw, membership(ADD, SASHA))
    for response in (read, write):
        assert response.status_code == 200
        body = response.json()
        assert "/$metadata#Collection(" in body["@odata.context"]
        assert body["adminapi.warnings@odata.type"] == "#Collection(String)"
        assert body["@adminapi.warnings"] == []
    assert AVERY in {row["PrimarySmtpAddress"] for row in read.json()["value"]}
    assert write.json()["value"] == []


async def test_warnings_come_in_adminapi_warnings_of_a_success(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Warnings a cmdlet writes come back as strings in ``@adminapi.warnings`` of the 200
    answer, next to the results; clients show them (ExoHelper's -ShowWarnings) and Syncwarden
    logs them.

    Source: https://github.com/GreyCorbel/ExoHelper/blob/main/Commands/Public/Invoke-ExoCommand.ps1
    (``Write-Warning`` for each of ``$responseData.'@adminapi.warnings'``).
    """
    tenant.exchange.add_warning(ADD, "The group's membership is being updated.")
    response = await invoke(tenant, raw, membership(ADD, SASHA))
    assert response.status_code == 200
    assert response.json()["@adminapi.warnings"] == ["The group's membership is being updated."]


async def test_pages_are_fetched_by_posting_the_same_body_to_the_next_link(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Long results are paged: a page carries ``@odata.nextLink`` and the client POSTs the same
    ``CmdletInput`` body to it until a page has none.

    Source: https://github.com/KelvinTegelaar/CIPP-API/blob/master/Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1
    (the ``do { ... $URL = $Return.'@odata.nextLink' } until ($null -eq $URL)`` loop).
    """
    tenant.set_knobs(exchange_page_size=2)
    body = cmdlet("Get-DistributionGroupMember", Identity=SYNC_GROUP)
    first = (await invoke(tenant, raw, body)).json()
    second = (await invoke(tenant, raw, body, url=first["@odata.nextLink"])).json()
    assert len(first["value"]) == 2 and len(second["value"]) == 1
    assert "@odata.nextLink" not in second


async def test_an_unknown_group_is_404_not_found_error_executing_cmdlet(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A cmdlet that fails answers ``{"error": {"code": "NotFound", "message": "Error executing
    cmdlet", "details": [{"code": "Client", "target": "", "message": "Ex6F9304|Microsoft.Exchange
    .Configuration.Tasks.ManagementObjectNotFoundException|The operation couldn't be performed
    because object '…' couldn't be found on '…'."}], "innererror": {...}}}``, HTTP 404.

    Sources: the envelope as the module printed it, quoted in
    https://learn.microsoft.com/en-us/answers/questions/1029077/facing-ex6f9304-microsoft-exchange-configuration-t
    and https://learn.microsoft.com/en-us/answers/questions/2108696/write-errormessage-ex6f9304-microsoft-exchange-con
    (the id|type|text form), and a public capture of the whole body ("NotFound: Error executing
    cmdlet : {code: NotFound, ...}", with ``innererror.internalexception`` the generic
    DirectInvokeCmdletExecutionException). ExoHelper splits ``details.message`` on "|":
    https://github.com/GreyCorbel/ExoHelper/blob/main/Commands/Internal/Get-ExoException.ps1
    """
    response = await invoke(tenant, raw, cmdlet(ADD, Identity="no-such-group", Member=SASHA))
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("NotFound", "Error executing cmdlet")
    assert error["details"][0]["code"] == "Client"
    error_id, kind, text = parts(response)
    assert (error_id, kind) == (
        "Ex6F9304",
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
    )
    assert text.startswith("The operation couldn't be performed because object 'no-such-group'")
    assert type(classified(response)) is errors.NotFoundError


async def test_an_unknown_member_is_couldnt_find_object(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A ``-Member`` Exchange cannot resolve fails with the same exception type and the text
    "Couldn't find object "…". Please make sure that it was spelled correctly or specify a
    different object." (error id Ex94914C). The doctor relies on it: it probes with an address
    that cannot exist, so a permitted call changes nothing.

    Source: https://learn.microsoft.com/en-us/answers/questions/2108696/write-errormessage-ex6f9304-microsoft-exchange-con
    ("Ex94914C|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|Couldn't
    find object ..."). The HTTP status of this one is not published; 404 is assumed, and the
    product classifies by the exception type whatever the status.
    """
    response = await invoke(tenant, raw, membership(ADD, "probe@probe.invalid"))
    error_id, kind, text = parts(response)
    assert (error_id, kind.rsplit(".", 1)[-1]) == ("Ex94914C", "ManagementObjectNotFoundException")
    assert text.startswith('Couldn\'t find object "probe@probe.invalid".')
    error = classified(response)
    assert type(error) is errors.NotFoundError and "probe@probe.invalid" in error.message


async def test_adding_a_member_twice_is_member_already_exists(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Adding someone who is already a member fails with
    Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException, "The recipient "…" is
    already a member of the group "…"."; an idempotent add treats it as done.

    Source: https://github.com/Tools4everBV/HelloID-Conn-Prov-Target-ExchangeOnline/blob/main/permissions/groups/grantPermission.ps1
    (matches "*Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException*" in the EXO V3
    module's error to skip an existing member). Issue 11 quoted a form with empty id and type
    parts ("||The recipient ...") that no source shows; the status is not published either. The
    product survives the typed and the untyped text at any status (unit tests); the sandbox sends
    the typed form with 400.
    """
    response = await invoke(tenant, raw, membership(ADD, AVERY))
    assert response.status_code == 400
    _, kind, text = parts(response)
    assert kind == "Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException"
    assert "is already a member of the group" in text
    error = classified(response)
    assert type(error) is errors.AlreadyExistsError and error.code == "AlreadyMember"


async def test_removing_a_non_member_is_member_not_found(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Removing someone who is not a member fails with MemberNotFoundException; an idempotent
    remove treats it as done, and must not mistake it for an unknown group or person.

    Source for the exception type: https://github.com/Tools4everBV/HelloID-Conn-Prov-Target-ExchangeOnline/blob/main/permissions/groups/revokePermission.ps1
    (``$ex.CategoryInfo.Reason -eq 'MemberNotFoundException'`` means "already no longer a
    member"). The text and the HTTP status are not published: the sandbox answers 404 with a
    "isn't a member of the group" text, and the product recognises the type first, then any of
    "isn't a member", "is not a member", "not a member of".
    """
    response = await invoke(tenant, raw, membership(REMOVE, SASHA))
    _, kind, _ = parts(response)
    assert kind.endswith(".MemberNotFoundException")
    error = classified(response, REMOVE)
    assert type(error) is errors.NotFoundError and error.code == "NotMember"


async def test_a_security_group_refuses_non_owners_without_the_bypass_switch(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """Someone not in the group's ManagedBy must add ``-BypassSecurityGroupManagerCheck`` to
    change a mail-enabled security group; without it: "You don't have sufficient permissions.
    This operation can only be performed by a manager of the group."

    Sources: https://learn.microsoft.com/en-us/powershell/module/exchange/add-distributiongroupmember
    (-BypassSecurityGroupManagerCheck); the message in
    https://github.com/Microsoft365DSC/Microsoft365DSC/issues/6435.
    """
    response = await invoke(tenant, raw, cmdlet(ADD, Identity=SYNC_GROUP, Member=SASHA))
    assert response.status_code == 400
    assert "can only be performed by a manager of the group" in parts(response)[2]
    group = tenant.seed.group_ids["Calendar Sync"]
    assert tenant.seed.user_ids[SASHA] not in tenant.group_member_ids(group)


async def test_a_cmdlet_no_exchange_role_grants_is_401_user_is_not_allowed_to_call(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """A cmdlet outside the app's Exchange roles answers 401 ``{"error": {"code":
    "Unauthorized", "message": "User is not allowed to call <cmdlet>", "innererror": {...}}}``,
    although the token is valid: refreshing it changes nothing.

    Source: https://github.com/MicrosoftDocs/office-docs-powershell/issues/7970 ("HttpStatusCode=
    401 ErrorMessage={"error":{"code":"Unauthorized","message":"User is not allowed to call
    Get-Mailbox",...}}", fixed by the role assigned to the service principal).
    """
    tenant.exchange.remove_role(tenant.seed.app_ids["Syncwarden"], MEMBERSHIP)
    response = await invoke(tenant, raw, membership(ADD, SASHA))
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (
        "Unauthorized",
        "User is not allowed to call Add-DistributionGroupMember",
    )
    product = classified(response)
    assert type(product) is errors.PermissionMissingError
    assert product.permission == MEMBERSHIP_ROLE


@pytest.mark.parametrize("style", ["rest", "powershell"])
async def test_the_bypass_switch_needs_organization_management_or_the_membership_role(
    tenant: SandboxTenant, raw: httpx.AsyncClient, style: str
) -> None:
    """To use -BypassSecurityGroupManagerCheck on a distribution group or mail-enabled security
    group "You need to be a member of the Organization Management role group or have the
    Security Group Creation and Membership role assigned": Recipient Management runs the cmdlet
    but hides the switch, and a hidden parameter does not exist for the caller.

    Sources: https://learn.microsoft.com/en-us/powershell/module/exchange/add-distributiongroupmember
    (the role requirement); https://github.com/MicrosoftDocs/office-docs-powershell/issues/9985
    (an app-only caller gets "A parameter cannot be found that matches parameter name
    'BypassSecurityGroupManagerCheck'.", a ParameterBindingException, in PowerShell). What a raw
    InvokeCommand call gets for a hidden parameter is not published: a live capture for an
    unknown parameter shows 400 "Invalid Operation" with AmbiguousParameterSetException
    "Parameter set cannot be resolved ... Invalid cmdlet parameters specified. <name>". The
    sandbox sends either (``style``); the product names the role for both.
    """
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.exchange.remove_role(app_id, MEMBERSHIP)
    tenant.exchange.assign_role(app_id, "Recipient Management")
    tenant.exchange.parameter_error_style = "rest" if style == "rest" else "powershell"
    response = await invoke(tenant, raw, membership(ADD, SASHA))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid Operation"
    assert "BypassSecurityGroupManagerCheck" in parts(response)[2]
    product = classified(response)
    assert type(product) is errors.PermissionMissingError
    assert product.permission == MEMBERSHIP_ROLE
    without = await invoke(tenant, raw, cmdlet(ADD, Identity=SYNC_GROUP, Member=SASHA))
    assert "manager of the group" in parts(without)[2], "the cmdlet itself is granted"
    tenant.exchange.assign_role(app_id, "Organization Management")
    assert (await invoke(tenant, raw, membership(ADD, SASHA))).status_code == 200


async def test_exchange_roles_are_separate_from_the_exchange_manage_as_app_permission(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    """App-only access to Exchange Online takes two grants: the Exchange.ManageAsApp
    application permission (without it the token is refused) and, inside Exchange, a role for
    the app's service principal (without it the cmdlets are refused).

    Source: https://learn.microsoft.com/en-us/powershell/exchange/app-only-auth-powershell-v2
    ("Assign API permissions to the application" and "Assign Microsoft Entra roles to the
    application" / "Assign custom Exchange Online role groups to the application using service
    principals").
    """
    kiosk = tenant.seed.app_ids["Library Kiosk Sync"]
    tenant.exchange.assign_role(kiosk, "Organization Management")
    no_app_role = await invoke(tenant, raw, membership(ADD, SASHA), app="Library Kiosk Sync")
    assert no_app_role.status_code == 403
    syncwarden = tenant.seed.app_ids["Syncwarden"]
    for role in tenant.exchange.roles_of(syncwarden):
        tenant.exchange.remove_role(syncwarden, role)
    no_exchange_role = await invoke(tenant, raw, membership(ADD, SASHA))
    assert no_exchange_role.status_code == 401
    assert "not allowed to call" in no_exchange_role.json()["error"]["message"]


@pytest.mark.parametrize("status", [429, 503, 504])
async def test_throttling_is_429_503_504_and_the_tenant_concurrency_text(
    tenant: SandboxTenant, raw: httpx.AsyncClient, status: int
) -> None:
    """Exchange's REST endpoint throttles with 429 (and 503/504 when busy); a tenant with too
    many calls at once gets the bare text "You have reached the maximum number of concurrent
    requests per tenant. Please wait and try again." Clients wait and retry both.

    Source: https://github.com/GreyCorbel/ExoHelper/blob/main/Commands/Public/Invoke-ExoCommand.ps1
    (retryable: ServiceUnavailable, GatewayTimeout, RequestTimeout, TooManyRequests; and any
    answer ``-like 'You have reached the maximum number of concurrent requests per tenant. Please
    wait and try again*'``). Which status carries the text is not published; the product treats
    the text as throttling at any status (unit tests) and honours Retry-After.
    """
    tenant.exchange.throttle(status, retry_after="2")
    response = await invoke(tenant, raw, membership(ADD, SASHA))
    assert response.status_code == status
    assert response.text == TENANT_CONCURRENCY
    assert response.headers["Retry-After"] == "2"
    product = classified(response)
    assert isinstance(product, errors.ThrottledError) and product.retry_after == 2.0
    assert (await invoke(tenant, raw, membership(ADD, SASHA))).status_code == 200
