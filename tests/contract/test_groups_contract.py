"""Groups and membership: what Graph does, each with where it is published.

The sync group decides whose mailboxes the calendar app may touch, and Graph can change the
membership of only some kinds of group. Sources: learn.microsoft.com/graph (groups-overview,
group-post-members, group-delete-members, group-list-members, group-list-transitivemembers),
Microsoft's docs repository microsoftgraph/microsoft-graph-docs-contrib, and public issues that
captured Graph's answers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.state import Group
from tests.sandbox.conftest import ClientFactory

MAIL_ENABLED_SECURITY = "36210e13-4d7d-4472-8af4-8892765df8ff"  # "Calendar Sync"
DISTRIBUTION_LIST = "3ba17c9e-5d9a-4e0e-b424-8952c7bf46fc"  # "All Advising Staff"
SECURITY = "bc490a5b-597c-4082-babe-7ef541eb3972"  # "Calendar Sync (Graph)"
NESTED = "e30ddc5e-31d9-4641-a74b-b60860aa8982"  # "Registrar Staff", inside SECURITY
AVERY = "4e478660-48cd-4008-8a06-4a1af03026a1"  # member of the mail-enabled group
BLAKE = "963cf0eb-d1fa-4633-aff6-7c17e3d6b634"
SASHA = "26bfae02-06a3-4dd2-97eb-b5ba2f1427a0"
KAI = "2d8848ff-7e7a-48df-a788-75de66d59318"  # member of SECURITY
JULES = "c3c07be3-521f-4acf-9e48-9b9ab3cc44f7"  # member of NESTED
NOBODY = "00000000-0000-4000-8000-00000000dead"
MAIL_ENABLED_REFUSAL = "Cannot Update a mail-enabled security groups and or distribution list."
EVENTUAL = {"ConsistencyLevel": "eventual"}


def ref(object_id: str) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{object_id}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_group_kind_is_read_from_group_types_mail_enabled_and_security_enabled(
    graph: httpx.AsyncClient,
) -> None:
    """A group's kind is told by three properties: Microsoft 365 groups have "Unified" in
    groupTypes; a mail-enabled security group is mailEnabled and securityEnabled without
    "Unified"; a distribution list is mailEnabled only; a security group securityEnabled only.

    Source: https://learn.microsoft.com/graph/api/resources/groups-overview ("Group types in
    Microsoft Entra ID and Microsoft Graph", the groupTypes/mailEnabled/securityEnabled table).
    """
    select = {"$select": "groupTypes,mailEnabled,securityEnabled"}
    kinds = {}
    for group_id in (MAIL_ENABLED_SECURITY, DISTRIBUTION_LIST, SECURITY):
        body = (await graph.get(f"/groups/{group_id}", params=select)).json()
        kinds[group_id] = (body["groupTypes"], body["mailEnabled"], body["securityEnabled"])
    assert kinds == {
        MAIL_ENABLED_SECURITY: ([], True, True),
        DISTRIBUTION_LIST: ([], True, False),
        SECURITY: ([], False, True),
    }


@pytest.mark.parametrize("group_id", [MAIL_ENABLED_SECURITY, DISTRIBUTION_LIST])
async def test_mail_enabled_groups_refuse_a_member_add_with_the_exchange_400(
    graph: httpx.AsyncClient, group_id: str
) -> None:
    """Mail-enabled security groups and distribution lists are mastered in Exchange and are
    read-only through Graph: ``POST /groups/{id}/members/$ref`` answers 400 ``Request_BadRequest``
    "Cannot Update a mail-enabled security groups and or distribution list."

    Sources: https://learn.microsoft.com/graph/api/resources/groups-overview (mail-enabled
    security groups and distribution groups are read-only through Graph); the exact answer in
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/14827.
    """
    response = await graph.post(f"/groups/{group_id}/members/$ref", json=ref(BLAKE))
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["message"]) == (
        "Request_BadRequest",
        MAIL_ENABLED_REFUSAL,
    )


async def test_mail_enabled_groups_refuse_a_member_removal_too(graph: httpx.AsyncClient) -> None:
    """Removal through Graph is refused the same way, even for an existing member.

    Source: https://learn.microsoft.com/graph/api/resources/groups-overview (read-only through
    Graph); the message as captured in public client code handling it
    (https://github.com/KelvinTegelaar/CIPP/issues/1607 shows the same text for writes).
    """
    response = await graph.delete(f"/groups/{MAIL_ENABLED_SECURITY}/members/{AVERY}/$ref")
    assert response.status_code == 400
    assert error_of(response)["message"] == MAIL_ENABLED_REFUSAL


async def test_mail_enabled_groups_refuse_a_bulk_bind(graph: httpx.AsyncClient) -> None:
    """The ``PATCH … members@odata.bind`` form is a membership write too, and is refused.

    Source: https://learn.microsoft.com/graph/api/resources/groups-overview (read-only through
    Graph); https://learn.microsoft.com/graph/api/group-post-members (example 2 is the bind form).
    """
    response = await graph.patch(
        f"/groups/{MAIL_ENABLED_SECURITY}",
        json={"members@odata.bind": [ref(BLAKE)["@odata.id"]]},
    )
    assert response.status_code == 400
    assert error_of(response)["message"] == MAIL_ENABLED_REFUSAL


async def test_adding_a_member_by_reference_is_204(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """``POST /groups/{id}/members/$ref`` with ``{"@odata.id": ".../directoryObjects/{id}"}``
    adds the member and answers 204 with no body.

    Source: https://learn.microsoft.com/graph/api/group-post-members ("Response", example 1).
    """
    response = await graph.post(f"/groups/{SECURITY}/members/$ref", json=ref(BLAKE))
    assert (response.status_code, response.content) == (204, b"")
    assert BLAKE in tenant.group_member_ids(SECURITY)


async def test_adding_an_existing_member_is_400_already_exist(graph: httpx.AsyncClient) -> None:
    """Adding someone who is already a member is 400 ``Request_BadRequest`` "One or more added
    object references already exist for the following modified properties: 'members'." Clients
    match the code and the phrase "already exist", not the whole text.

    Sources: https://learn.microsoft.com/graph/api/group-post-members ("returns a 400 Bad
    Request response code when the object is already a member"); the message as captured in
    https://github.com/KelvinTegelaar/CIPP/issues/1607.
    """
    response = await graph.post(f"/groups/{SECURITY}/members/$ref", json=ref(KAI))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == (
        "One or more added object references already exist for the following modified "
        "properties: 'members'."
    )


async def test_adding_an_object_that_does_not_exist_is_404(graph: httpx.AsyncClient) -> None:
    """Adding a directory object that does not exist is 404 ``Request_ResourceNotFound``.

    Source: https://learn.microsoft.com/graph/api/group-post-members ("returns a 404 Not Found
    response code when the object being added doesn't exist").
    """
    response = await graph.post(f"/groups/{SECURITY}/members/$ref", json=ref(NOBODY))
    assert response.status_code == 404
    assert error_of(response)["code"] == "Request_ResourceNotFound"


async def test_removing_a_member_by_reference_is_204(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """``DELETE /groups/{id}/members/{id}/$ref`` removes the membership (not the object) and
    answers 204.

    Source: https://learn.microsoft.com/graph/api/group-delete-members.
    """
    response = await graph.delete(f"/groups/{SECURITY}/members/{KAI}/$ref")
    assert response.status_code == 204
    assert KAI not in tenant.group_member_ids(SECURITY)
    assert tenant.state.user(KAI) is not None


async def test_removing_a_non_member_is_404_naming_the_group(graph: httpx.AsyncClient) -> None:
    """Removing someone who is not a member is 404 ``Request_ResourceNotFound`` with the *group*
    in the message ("Resource '{group id}' does not exist or one of its queried
    reference-property objects are not present."), the same answer as for a missing group, so a
    client cannot tell the two apart from this answer alone.

    Sources: public captures in https://github.com/microsoftgraph/microsoft-graph-docs/issues/18714
    ("If the user is not found in the group") and
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/9191.
    """
    response = await graph.delete(f"/groups/{SECURITY}/members/{BLAKE}/$ref")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "Request_ResourceNotFound"
    assert error["message"] == (
        f"Resource '{SECURITY}' does not exist or one of its queried reference-property objects "
        "are not present."
    )


async def test_delete_without_ref_is_403_for_an_app_that_cannot_manage_users(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """Without ``/$ref`` the URL names the member object itself. An app that may not manage that
    kind of object (here: GroupMember.ReadWrite.All without User.ReadWrite.All) gets 403.

    Source: https://learn.microsoft.com/graph/api/group-delete-members (the caution: "If /$ref
    is not appended … otherwise, a 403 Forbidden error is returned").
    """
    response = await graph.delete(f"/groups/{SECURITY}/members/{KAI}")
    assert response.status_code == 403
    assert error_of(response)["code"] == "Authorization_RequestDenied"
    assert KAI in tenant.group_member_ids(SECURITY)


async def test_delete_without_ref_deletes_the_user_when_the_app_may(
    tenant: SandboxTenant, client_factory: ClientFactory
) -> None:
    """With permission to manage users, the same URL without ``/$ref`` deletes the user from the
    directory, which is why every removal must end in ``/$ref``.

    Source: https://learn.microsoft.com/graph/api/group-delete-members (the caution: "an app
    with both GroupMember.ReadWrite.All and User.ReadWrite.All permissions will delete a user").
    """
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.grant_role(app_id, "https://graph.microsoft.com", "User.ReadWrite.All")
    graph = await client_factory()
    response = await graph.delete(f"/groups/{SECURITY}/members/{KAI}")
    assert response.status_code == 204
    assert tenant.state.user(KAI) is None
    assert (await graph.get(f"/users/{KAI}")).status_code == 404


async def test_bulk_bind_adds_at_most_20_and_all_or_nothing(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """``PATCH /groups/{id}`` with ``members@odata.bind`` adds up to 20 members in one request;
    if any reference is in error, no member is added.

    Source: https://learn.microsoft.com/graph/api/group-post-members (example 2: "up to 20
    members can be added in a single request … If an error condition exists in the request
    body, no members are added").
    """
    url = "https://graph.microsoft.com/v1.0/directoryObjects/"
    mixed = await graph.patch(
        f"/groups/{SECURITY}", json={"members@odata.bind": [url + BLAKE, url + KAI]}
    )
    assert mixed.status_code == 400
    assert BLAKE not in tenant.group_member_ids(SECURITY)
    too_many = await graph.patch(
        f"/groups/{SECURITY}", json={"members@odata.bind": [url + BLAKE] * 21}
    )
    assert too_many.status_code == 400
    good = await graph.patch(
        f"/groups/{SECURITY}", json={"members@odata.bind": [url + BLAKE, url + SASHA]}
    )
    assert good.status_code == 204
    assert {BLAKE, SASHA} <= set(tenant.group_member_ids(SECURITY))


async def test_membership_writes_need_a_write_permission(client_factory: ClientFactory) -> None:
    """An app without GroupMember.ReadWrite.All (or a broader write permission) gets 403
    ``Authorization_RequestDenied`` "Insufficient privileges to complete the operation."

    Sources: https://learn.microsoft.com/graph/api/group-post-members ("Permissions"); the
    message as captured in https://github.com/KelvinTegelaar/CIPP/issues/1607.
    """
    kiosk = await client_factory("Library Kiosk Sync")
    response = await kiosk.post(f"/groups/{SECURITY}/members/$ref", json=ref(BLAKE))
    assert response.status_code == 403
    assert (error_of(response)["code"], error_of(response)["message"]) == (
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )


async def test_microsoft_365_groups_cannot_be_nested(
    tenant: SandboxTenant, graph: httpx.AsyncClient
) -> None:
    """A Microsoft 365 group cannot be a member of a group, and cannot contain groups.

    Source: the member-type table on https://learn.microsoft.com/graph/api/group-post-members
    (groups-allowed-member-types). The refusal's code and text are not published; the sandbox
    answers 400 ``Request_BadRequest`` and the product only ever adds users.
    """
    unified = "5a0f1e7c-1111-4e2b-9c3d-000000000365"
    tenant.state.groups[unified] = Group(
        id=unified, displayName="Advising Team", mailEnabled=True, securityEnabled=False,
        groupTypes=["Unified"], mail="advising-team@example.edu",
    )  # fmt: skip
    into_security = await graph.post(f"/groups/{SECURITY}/members/$ref", json=ref(unified))
    assert into_security.status_code == 400
    nested_into_unified = await graph.post(f"/groups/{unified}/members/$ref", json=ref(NESTED))
    assert nested_into_unified.status_code == 400
    user_into_unified = await graph.post(f"/groups/{unified}/members/$ref", json=ref(BLAKE))
    assert user_into_unified.status_code == 204


async def test_filtering_members_is_an_advanced_query(graph: httpx.AsyncClient) -> None:
    """``$filter`` on a group's members needs ``ConsistencyLevel: eventual`` and ``$count=true``;
    plain listing with ``$select`` and ``$top`` does not.

    Sources: https://learn.microsoft.com/graph/api/group-list-members ("Optional query
    parameters") and https://learn.microsoft.com/graph/aad-advanced-queries (group members is a
    relationship with advanced query support).
    """
    plain = await graph.get(f"/groups/{SECURITY}/members", params={"$select": "id", "$top": "999"})
    assert {m["id"] for m in plain.json()["value"]} == {KAI, NESTED}
    params = {"$filter": f"id eq '{KAI}'"}
    refused = await graph.get(f"/groups/{SECURITY}/members", params=params)
    assert (refused.status_code, error_of(refused)["code"]) == (400, "Request_UnsupportedQuery")
    allowed = await graph.get(
        f"/groups/{SECURITY}/members", params={**params, "$count": "true"}, headers=EVENTUAL
    )
    assert [m["id"] for m in allowed.json()["value"]] == [KAI]


async def test_members_are_typed_and_transitive_members_include_nested_ones(
    graph: httpx.AsyncClient,
) -> None:
    """``members`` lists direct members as directoryObjects tagged with ``@odata.type`` (users and
    groups); ``transitiveMembers`` also lists the members of nested groups.

    Sources: https://learn.microsoft.com/graph/api/group-list-members and
    https://learn.microsoft.com/graph/api/group-list-transitivemembers.
    """
    direct = (await graph.get(f"/groups/{SECURITY}/members")).json()["value"]
    assert {(m["id"], m["@odata.type"]) for m in direct} == {
        (KAI, "#microsoft.graph.user"),
        (NESTED, "#microsoft.graph.group"),
    }
    transitive = (await graph.get(f"/groups/{SECURITY}/transitiveMembers")).json()["value"]
    assert {m["id"] for m in transitive} == {KAI, NESTED, JULES}


async def test_groups_are_found_by_display_name_by_default(graph: httpx.AsyncClient) -> None:
    """``$filter=displayName eq '…'`` on groups needs no advanced query parameters.

    Source: https://learn.microsoft.com/graph/aad-advanced-queries (groups: displayName eq is
    supported by default) and https://learn.microsoft.com/graph/api/group-list.
    """
    response = await graph.get("/groups", params={"$filter": "displayName eq 'Calendar Sync'"})
    assert [g["id"] for g in response.json()["value"]] == [MAIL_ENABLED_SECURITY]
