"""Graph auth, errors, users, groups and apps, asserted over HTTPS."""

from __future__ import annotations

import httpx

from syncwarden.sandbox.server import SandboxTenant
from tests.sandbox.conftest import ClientFactory

SYNC_GROUP = "36210e13-4d7d-4472-8af4-8892765df8ff"
GRAPH_GROUP = "bc490a5b-597c-4082-babe-7ef541eb3972"
NESTED_GROUP = "e30ddc5e-31d9-4641-a74b-b60860aa8982"
BLAKE = "963cf0eb-d1fa-4633-aff6-7c17e3d6b634"
SASHA = "26bfae02-06a3-4dd2-97eb-b5ba2f1427a0"
KAI = "2d8848ff-7e7a-48df-a788-75de66d59318"
JULES = "c3c07be3-521f-4acf-9e48-9b9ab3cc44f7"


def ref(object_id: str) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{object_id}"}


async def test_missing_and_wrong_audience_tokens_are_401(
    tenant: SandboxTenant, raw: httpx.AsyncClient
) -> None:
    response = await raw.get("/v1.0/users", headers={"client-request-id": "abc-123"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["innerError"]["client-request-id"] == "abc-123"
    assert response.headers["client-request-id"] == "abc-123"
    assert response.headers["request-id"] == error["innerError"]["request-id"]
    exchange_token = tenant.mint_access_token(
        tenant.seed.app_ids["Syncwarden"], "https://outlook.office365.com"
    )
    wrong = await raw.get("/v1.0/users", headers={"Authorization": f"Bearer {exchange_token}"})
    assert wrong.status_code == 401


async def test_missing_role_is_403(client_factory: ClientFactory) -> None:
    kiosk = await client_factory("Library Kiosk Sync")
    response = await kiosk.get(f"/groups/{SYNC_GROUP}/members")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert (
        response.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    )
    assert (await kiosk.get("/users")).status_code == 200


async def test_user_lookup_by_upn_and_id_but_not_by_other_address(graph: httpx.AsyncClient) -> None:
    by_upn = await graph.get("/users/ROWAN.IBARRA@example.edu")
    assert by_upn.status_code == 200
    body = by_upn.json()
    assert set(body) - {"@odata.context"} == {
        "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
        "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
    }  # fmt: skip
    assert (await graph.get(f"/users/{body['id']}")).json()["mail"] == "rowan.ibarra@example.org"
    by_mail = await graph.get("/users/rowan.ibarra@example.org")
    assert by_mail.status_code == 404
    assert by_mail.json()["error"]["code"] == "Request_ResourceNotFound"


async def test_address_lookup_filter_matches_any_address_caselessly(
    graph: httpx.AsyncClient,
) -> None:
    def lookup(address: str) -> dict[str, str]:
        return {
            "$filter": (
                f"userPrincipalName eq '{address}' or mail eq '{address}' or "
                f"proxyAddresses/any(x:x eq 'SMTP:{address}') or otherMails/any(x:x eq '{address}')"
            ),
            "$select": "id,userPrincipalName,mail,proxyAddresses,accountEnabled",
        }

    for address in (
        "ribarra@example.edu",
        "Rowan.Ibarra.Home@example.com",
        "ROWAN.IBARRA@EXAMPLE.ORG",
    ):
        found = (await graph.get("/users", params=lookup(address))).json()["value"]
        assert [u["userPrincipalName"] for u in found] == ["rowan.ibarra@example.edu"], address
        assert set(found[0]) == {
            "id",
            "userPrincipalName",
            "mail",
            "proxyAddresses",
            "accountEnabled",
        }
    nobody = await graph.get("/users", params=lookup("nobody@example.edu"))
    assert nobody.json()["value"] == []


async def test_advanced_queries_need_consistency_level_and_count(graph: httpx.AsyncClient) -> None:
    params = {"$filter": "accountEnabled ne true"}
    refused = await graph.get("/users", params=params)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "Request_UnsupportedQuery"
    allowed = await graph.get(
        "/users", params={**params, "$count": "true"}, headers={"ConsistencyLevel": "eventual"}
    )
    assert allowed.status_code == 200
    assert [u["userPrincipalName"] for u in allowed.json()["value"]] == ["finley.marsh@example.edu"]
    assert allowed.json()["@odata.count"] == 1
    basic = await graph.get(
        "/users", params={"$filter": "startswith(displayName,'ka') and accountEnabled eq true"}
    )
    assert [u["displayName"] for u in basic.json()["value"]] == ["Kai Nakamura-Ellis"]
    bad = await graph.get("/users", params={"$filter": "shoeSize eq 3"})
    assert bad.status_code == 400
    syntax = await graph.get("/users", params={"$filter": "displayName eq"})
    assert syntax.status_code == 400


async def test_users_paging_follows_next_links(graph: httpx.AsyncClient) -> None:
    seen: list[str] = []
    url: str | None = "/users?$top=4&$select=id"
    pages = 0
    while url:
        body = (await graph.get(url)).json()
        seen.extend(u["id"] for u in body["value"])
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 11
    too_big = await graph.get("/users", params={"$top": "1000"})
    assert too_big.status_code == 400


async def test_mail_enabled_groups_refuse_graph_writes(graph: httpx.AsyncClient) -> None:
    kind = (
        await graph.get(
            f"/groups/{SYNC_GROUP}", params={"$select": "groupTypes,mailEnabled,securityEnabled"}
        )
    ).json()
    assert (kind["mailEnabled"], kind["securityEnabled"], kind["groupTypes"]) == (True, True, [])
    message = "Cannot Update a mail-enabled security groups and or distribution list."
    add = await graph.post(f"/groups/{SYNC_GROUP}/members/$ref", json=ref(BLAKE))
    assert (add.status_code, add.json()["error"]["code"], add.json()["error"]["message"]) == (
        400,
        "Request_BadRequest",
        message,
    )
    remove = await graph.delete(
        f"/groups/{SYNC_GROUP}/members/4e478660-48cd-4008-8a06-4a1af03026a1/$ref"
    )
    assert remove.status_code == 400
    patch = await graph.patch(
        f"/groups/{SYNC_GROUP}", json={"members@odata.bind": [ref(BLAKE)["@odata.id"]]}
    )
    assert patch.status_code == 400


async def test_security_group_membership_writes(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    add = await graph.post(f"/groups/{GRAPH_GROUP}/members/$ref", json=ref(BLAKE))
    assert add.status_code == 204
    again = await graph.post(f"/groups/{GRAPH_GROUP}/members/$ref", json=ref(BLAKE))
    assert again.status_code == 400
    assert "already exist" in again.json()["error"]["message"]
    assert BLAKE in tenant.group_member_ids(GRAPH_GROUP)
    assert (await graph.delete(f"/groups/{GRAPH_GROUP}/members/{BLAKE}/$ref")).status_code == 204
    gone = await graph.delete(f"/groups/{GRAPH_GROUP}/members/{BLAKE}/$ref")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "Request_ResourceNotFound")


async def test_patch_bind_is_all_or_nothing(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    url = "https://graph.microsoft.com/v1.0/directoryObjects/"
    mixed = await graph.patch(
        f"/groups/{GRAPH_GROUP}", json={"members@odata.bind": [url + BLAKE, url + KAI]}
    )
    assert mixed.status_code == 400
    assert BLAKE not in tenant.group_member_ids(GRAPH_GROUP)
    too_many = await graph.patch(
        f"/groups/{GRAPH_GROUP}", json={"members@odata.bind": [url + BLAKE] * 21}
    )
    assert too_many.status_code == 400
    good = await graph.patch(
        f"/groups/{GRAPH_GROUP}", json={"members@odata.bind": [url + BLAKE, url + SASHA]}
    )
    assert good.status_code == 204
    assert {BLAKE, SASHA} <= set(tenant.group_member_ids(GRAPH_GROUP))


async def test_members_and_transitive_members(graph: httpx.AsyncClient) -> None:
    direct = (
        await graph.get(f"/groups/{GRAPH_GROUP}/members", params={"$select": "id,displayName"})
    ).json()
    assert {m["id"] for m in direct["value"]} == {KAI, NESTED_GROUP}
    assert {m["@odata.type"] for m in direct["value"]} == {
        "#microsoft.graph.user",
        "#microsoft.graph.group",
    }
    transitive = (await graph.get(f"/groups/{GRAPH_GROUP}/transitiveMembers")).json()
    assert {m["id"] for m in transitive["value"]} == {KAI, NESTED_GROUP, JULES}
    by_name = await graph.get("/groups", params={"$filter": "displayName eq 'Calendar Sync'"})
    assert [g["id"] for g in by_name.json()["value"]] == [SYNC_GROUP]


async def test_applications_and_service_principals(sandbox_factory: object) -> None:
    from syncwarden.sandbox.testing import graph_client
    from tests.sandbox.conftest import TenantFactory

    assert callable(sandbox_factory)
    factory: TenantFactory = sandbox_factory
    big = await factory(extra_apps=2000)
    async with graph_client(big) as graph:
        select = "id,appId,displayName,passwordCredentials,keyCredentials"
        first = (await graph.get("/applications", params={"$select": select, "$top": "999"})).json()
        total = len(first["value"])
        url = first.get("@odata.nextLink")
        while url:
            page = (await graph.get(url)).json()
            total += len(page["value"])
            url = page.get("@odata.nextLink")
        assert total == 2013
        cafeteria = next(a for a in first["value"] if a["displayName"] == "Cafeteria Menu Bot")
        assert len(cafeteria["passwordCredentials"]) == 2
        secret = cafeteria["passwordCredentials"][0]
        assert secret["secretText"] is None and len(secret["hint"]) == 3
        sps = (
            await graph.get(
                "/servicePrincipals",
                params={"$filter": "displayName eq 'Campus SSO (SAML)'", "$select": select},
            )
        ).json()
        assert {k["usage"] for k in sps["value"][0]["keyCredentials"]} == {"Sign", "Verify"}
        owners = (await graph.get(f"/applications/{first['value'][0]['id']}/owners")).json()
        assert owners["value"][0]["userPrincipalName"] == "dana.whitfield@example.edu"
