"""Exchange admin API cmdlets act on the same groups Graph shows, in Exchange's own envelopes."""

from __future__ import annotations

from typing import Any

import httpx

from syncwarden.sandbox.exchange import TENANT_CONCURRENCY
from syncwarden.sandbox.server import SandboxTenant
from tests.support.exchange_admin import invoke

SYNC_GROUP = "36210e13-4d7d-4472-8af4-8892765df8ff"
BLAKE = "963cf0eb-d1fa-4633-aff6-7c17e3d6b634"
MEMBERSHIP_ROLE = "Security Group Creation and Membership"


def cmdlet(name: str, **parameters: Any) -> dict[str, Any]:
    return {"CmdletInput": {"CmdletName": name, "Parameters": parameters}}


def add(member: str = BLAKE, **extra: Any) -> dict[str, Any]:
    return cmdlet(
        "Add-DistributionGroupMember",
        Identity="calendar-sync@example.edu",
        Member=member,
        BypassSecurityGroupManagerCheck=True,
        **extra,
    )


def detail(response: httpx.Response) -> tuple[str, str, str]:
    """The ``id|type|text`` parts of the first error detail."""
    error_id, kind, text = response.json()["error"]["details"][0]["message"].split("|", 2)
    return error_id, kind, text


async def test_add_member_shows_in_graph_and_errors_are_exchange_shaped(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    first = await invoke(tenant, raw, add("blake.okonkwo-reyes@example.org"))
    assert first.status_code == 200, first.text
    assert first.json()["value"] == [] and first.json()["@adminapi.warnings"] == []
    assert "$metadata#Collection(" in first.json()["@odata.context"]
    graph_token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    members = await raw.get(
        f"/v1.0/groups/{SYNC_GROUP}/members", headers={"Authorization": f"Bearer {graph_token}"}
    )
    assert BLAKE in {m["id"] for m in members.json()["value"]}

    again = await invoke(tenant, raw, add("blake.okonkwo-reyes@example.org"))
    assert again.status_code == 400
    assert again.json()["error"]["message"] == "Error executing cmdlet"
    _, kind, text = detail(again)
    assert kind.endswith(".MemberAlreadyExistsException")
    assert "is already a member of the group" in text

    remove = cmdlet(
        "Remove-DistributionGroupMember",
        Identity="Calendar Sync",
        Member=BLAKE,
        BypassSecurityGroupManagerCheck=True,
    )
    assert (await invoke(tenant, raw, remove)).status_code == 200
    not_member = await invoke(tenant, raw, remove)
    assert not_member.status_code == 404
    assert detail(not_member)[1].endswith(".MemberNotFoundException")

    unknown = await invoke(
        tenant,
        raw,
        cmdlet(
            "Add-DistributionGroupMember",
            Identity="no-such-group",
            Member=BLAKE,
            BypassSecurityGroupManagerCheck=True,
        ),
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NotFound"
    error_id, kind, text = detail(unknown)
    assert (error_id, kind.rsplit(".", 1)[-1]) == ("Ex6F9304", "ManagementObjectNotFoundException")
    assert text.startswith("The operation couldn't be performed because object 'no-such-group'")

    nobody = await invoke(tenant, raw, add("nobody@probe.invalid"))
    assert nobody.status_code == 404
    assert 'Couldn\'t find object "nobody@probe.invalid"' in detail(nobody)[2]


async def test_parameter_names_are_not_case_sensitive(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    body = cmdlet(
        "add-distributiongroupmember",
        identity="calendar-sync",
        MEMBER=BLAKE,
        bypassSecurityGroupManagerCheck=True,
    )
    assert (await invoke(tenant, raw, body)).status_code == 200
    assert BLAKE in tenant.group_member_ids(SYNC_GROUP)


async def test_a_security_group_needs_the_bypass_switch(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    body = cmdlet("Add-DistributionGroupMember", Identity="calendar-sync", Member=BLAKE)
    refused = await invoke(tenant, raw, body)
    assert refused.status_code == 400
    assert "only be performed by a manager of the group" in detail(refused)[2]
    assert BLAKE not in tenant.group_member_ids(SYNC_GROUP)


async def test_get_members_pages_and_policy_test(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    tenant.set_knobs(exchange_page_size=2)
    body = cmdlet("Get-DistributionGroupMember", Identity=SYNC_GROUP)
    first = (await invoke(tenant, raw, body)).json()
    assert len(first["value"]) == 2
    second = (await invoke(tenant, raw, body, url=first["@odata.nextLink"])).json()
    assert len(second["value"]) == 1 and "@odata.nextLink" not in second
    app_id = tenant.seed.app_ids["Syncwarden"]
    granted = await invoke(
        tenant,
        raw,
        cmdlet("Test-ApplicationAccessPolicy", Identity="avery.quinlan@example.edu", AppId=app_id),
    )
    assert granted.json()["value"][0]["AccessCheckResult"] == "Granted"
    denied = await invoke(
        tenant,
        raw,
        cmdlet(
            "Test-ApplicationAccessPolicy", Identity="kai.nakamura-ellis@example.edu", AppId=app_id
        ),
    )
    assert denied.json()["value"][0]["AccessCheckResult"] == "Denied"


async def test_exchange_needs_its_audience_and_app_role(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    body = cmdlet("Get-DistributionGroupMember", Identity=SYNC_GROUP)
    graph_token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    assert (await invoke(tenant, raw, body, token=graph_token)).status_code == 401
    kiosk = tenant.mint_access_token(
        tenant.seed.app_ids["Library Kiosk Sync"], "https://outlook.office365.com"
    )
    assert (await invoke(tenant, raw, body, token=kiosk)).status_code == 403


async def test_exchange_roles_decide_cmdlets_and_parameters_apart_from_the_app_role(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.exchange.remove_role(app_id, MEMBERSHIP_ROLE)
    not_allowed = await invoke(tenant, raw, add())
    assert not_allowed.status_code == 401
    assert not_allowed.json()["error"] == {
        "code": "Unauthorized",
        "message": "User is not allowed to call Add-DistributionGroupMember",
        "innererror": {
            "message": "User is not allowed to call Add-DistributionGroupMember",
            "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
        },
    }

    # Recipient Management grants the cmdlet but not -BypassSecurityGroupManagerCheck.
    tenant.exchange.assign_role(app_id, "Recipient Management")
    hidden = await invoke(tenant, raw, add())
    assert hidden.status_code == 400
    assert hidden.json()["error"]["message"] == "Invalid Operation"
    assert detail(hidden)[2].endswith(
        "Invalid cmdlet parameters specified. BypassSecurityGroupManagerCheck"
    )
    inner = hidden.json()["error"]["innererror"]["internalexception"]
    assert inner["type"].endswith(".AmbiguousParameterSetException")
    tenant.exchange.parameter_error_style = "powershell"
    worded = await invoke(tenant, raw, add())
    assert detail(worded)[2] == (
        "A parameter cannot be found that matches parameter name 'BypassSecurityGroupManagerCheck'."
    )
    assert BLAKE not in tenant.group_member_ids(SYNC_GROUP)

    tenant.exchange.assign_role(app_id, "Organization Management")
    assert (await invoke(tenant, raw, add())).status_code == 200


async def test_roles_can_be_changed_over_the_admin_api(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    path = f"/_sandbox/apps/{app_id}/exchange-roles"
    listed = (await raw.get(path)).json()["roles"]
    assert MEMBERSHIP_ROLE in listed
    assert (await raw.request("DELETE", path, json={"role": MEMBERSHIP_ROLE})).status_code == 204
    assert (await invoke(tenant, raw, add())).status_code == 401
    assert (await raw.post(path, json={"role": MEMBERSHIP_ROLE})).status_code == 204
    assert (await invoke(tenant, raw, add())).status_code == 200
    assert (await raw.post(path, json={"role": "Made Up Role"})).status_code == 400
    unknown_app = "/_sandbox/apps/00000000-0000-0000-0000-000000000000/exchange-roles"
    assert (await raw.post(unknown_app, json={"role": MEMBERSHIP_ROLE})).status_code == 404


async def test_throttling_is_plain_text_with_retry_after_and_warnings_ride_along(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    tenant.exchange.throttle(503, retry_after="3")
    refused = await invoke(tenant, raw, add())
    assert refused.status_code == 503
    assert refused.text == TENANT_CONCURRENCY
    assert refused.headers["Retry-After"] == "3"
    assert BLAKE not in tenant.group_member_ids(SYNC_GROUP)

    tenant.exchange.add_warning("Add-DistributionGroupMember", "The group is being migrated.")
    answered = await invoke(tenant, raw, add())
    assert answered.status_code == 200
    assert answered.json()["@adminapi.warnings"] == ["The group is being migrated."]
