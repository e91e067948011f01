"""Exchange admin API cmdlets act on the same groups Graph shows."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.server import SandboxTenant

SYNC_GROUP = "36210e13-4d7d-4472-8af4-8892765df8ff"
BLAKE = "963cf0eb-d1fa-4633-aff6-7c17e3d6b634"


def cmdlet(name: str, **parameters: Any) -> dict[str, Any]:
    return {"CmdletInput": {"CmdletName": name, "Parameters": parameters}}


async def invoke(
    tenant: SandboxTenant,
    raw: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    token: str | None = None,
    url: str | None = None,
) -> httpx.Response:
    token = token or tenant.mint_access_token(
        tenant.seed.app_ids["Syncwarden"], "https://outlook.office365.com"
    )
    return await raw.post(
        url or f"/adminapi/beta/{tenant.tenant_id}/InvokeCommand",
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "X-AnchorMailbox": (
                f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant.tenant_id}"
            ),
        },
    )


async def test_add_member_shows_in_graph_and_errors_are_exchange_shaped(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    add = cmdlet(
        "Add-DistributionGroupMember",
        Identity="calendar-sync@example.edu",
        Member="blake.okonkwo-reyes@example.org",
        BypassSecurityGroupManagerCheck=True,
    )
    first = await invoke(tenant, raw, add)
    assert first.status_code == 200, first.text
    assert first.json()["value"] == []
    graph_token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    members = await raw.get(
        f"/v1.0/groups/{SYNC_GROUP}/members", headers={"Authorization": f"Bearer {graph_token}"}
    )
    assert BLAKE in {m["id"] for m in members.json()["value"]}
    again = await invoke(tenant, raw, add)
    assert again.status_code == 400
    error = again.json()["error"]
    assert "is already a member of the group" in error["details"][0]["message"]
    assert "is already a member of the group" in error["innererror"]["internalException"]["message"]
    remove = cmdlet(
        "Remove-DistributionGroupMember",
        Identity="Calendar Sync",
        Member=BLAKE,
        BypassSecurityGroupManagerCheck=True,
    )
    assert (await invoke(tenant, raw, remove)).status_code == 200
    not_member = await invoke(tenant, raw, remove)
    assert "isn't a member of the group" in not_member.json()["error"]["details"][0]["message"]
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
    assert "couldn't be found" in unknown.json()["error"]["details"][0]["message"]


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


async def test_exchange_needs_its_audience_and_role(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    body = cmdlet("Get-DistributionGroupMember", Identity=SYNC_GROUP)
    graph_token = tenant.mint_access_token(tenant.seed.app_ids["Syncwarden"])
    assert (await invoke(tenant, raw, body, token=graph_token)).status_code == 401
    kiosk = tenant.mint_access_token(
        tenant.seed.app_ids["Library Kiosk Sync"], "https://outlook.office365.com"
    )
    assert (await invoke(tenant, raw, body, token=kiosk)).status_code == 403
