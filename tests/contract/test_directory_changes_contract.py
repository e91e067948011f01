"""Directory changes the access reconciler must notice: leavers, movers, managers, hand edits.

Sources: learn.microsoft.com/graph (user-delta, group-delta, delta-query-overview,
delta-query-users, delta-query-groups, user-delete, user-list-manager,
directory-deleteditems-list, the user resource), the Microsoft 365 Developer blog on delta token
lifetimes, and public issues quoted in each test.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from syncwarden.sandbox import directory_admin as admin
from syncwarden.sandbox.server import SandboxTenant

AVERY = "4e478660-48cd-4008-8a06-4a1af03026a1"  # in the mail-enabled "Calendar Sync"
BLAKE = "963cf0eb-d1fa-4633-aff6-7c17e3d6b634"
CASEY = "d7dd6da8-9922-4e7b-a3f4-e479fb95fd01"  # manages Avery, has no manager herself
KAI = "2d8848ff-7e7a-48df-a788-75de66d59318"  # in "Calendar Sync (Graph)"
SASHA = "26bfae02-06a3-4dd2-97eb-b5ba2f1427a0"
MAIL_ENABLED = "36210e13-4d7d-4472-8af4-8892765df8ff"
SECURITY = "bc490a5b-597c-4082-babe-7ef541eb3972"
SELECT = "id,displayName,accountEnabled,mail,proxyAddresses,userPrincipalName"


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def full_round(graph: httpx.AsyncClient, url: str, **params: str) -> tuple[list[Any], str]:
    """Follow nextLinks to the deltaLink: (every item, the deltaLink)."""
    items: list[Any] = []
    response = await graph.get(url, params=params or None)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["value"])
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, body["@odata.deltaLink"]
        response = await graph.get(body["@odata.nextLink"])


def by_id(items: list[Any], object_id: str) -> list[Any]:
    return [item for item in items if item["id"] == object_id]


# ---------------------------------------------------------------- users/delta


async def test_users_delta_returns_the_selected_properties_then_a_delta_link(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """The first round lists every user with the ``$select``-ed properties (``id`` always),
    across ``@odata.nextLink`` pages, and ends with an ``@odata.deltaLink`` holding a
    ``$deltatoken``; a page has one link or the other, never both. accountEnabled and
    proxyAddresses come only when selected.

    Sources: https://learn.microsoft.com/graph/api/user-delta and
    https://learn.microsoft.com/graph/delta-query-users ("A page can't contain both").
    """
    tenant.state.directory_delta.page_size = 4
    items, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    assert {i["id"] for i in items} == set(tenant.state.users)
    avery = by_id(items, AVERY)[0]
    assert set(avery) == set(SELECT.split(","))
    assert avery["proxyAddresses"][0] == "SMTP:avery.quinlan@example.edu"
    assert "$deltatoken=" in link
    plain, _ = await full_round(graph, "/users/delta")
    assert "accountEnabled" not in by_id(plain, AVERY)[0]


async def test_users_delta_with_no_change_returns_nothing_and_a_new_link(
    graph: httpx.AsyncClient,
) -> None:
    """A round with no change returns an empty ``value`` and a new deltaLink to store.

    Source: https://learn.microsoft.com/graph/delta-query-users ("deltaLink request and
    response") and https://learn.microsoft.com/graph/delta-query-overview.
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    response = await graph.get(link)
    assert response.status_code == 200
    assert response.json()["value"] == []
    assert response.json()["@odata.deltaLink"] != link


async def test_only_selected_properties_are_tracked(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Graph: "If a change occurs to a property that is not selected, the resource for which that
    property changed does not appear in the delta response."

    Source: https://learn.microsoft.com/graph/delta-query-overview ("Optional query
    parameters").
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": "id,displayName"})
    admin.set_enabled(tenant.state, AVERY, False)
    items, link = await full_round(graph, link)
    assert items == []
    tenant.state.users[AVERY].displayName = "Avery Q."
    items, _ = await full_round(graph, link)
    assert items == [{"id": AVERY, "displayName": "Avery Q."}]


async def test_a_disabled_user_is_an_ordinary_change_of_account_enabled(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Blocking sign-in changes ``accountEnabled`` to false; users delta reports the user as
    an updated object, not as ``@removed``.

    Sources: https://learn.microsoft.com/graph/api/resources/user (accountEnabled) and
    https://learn.microsoft.com/graph/delta-query-users.
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    admin.set_enabled(tenant.state, AVERY, False)
    items, _ = await full_round(graph, link)
    assert len(items) == 1
    assert items[0]["accountEnabled"] is False
    assert "@removed" not in items[0]


async def test_soft_delete_is_removed_changed_and_a_restore_returns_unannotated(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """A soft-deleted user comes as ``{"id", "@removed": {"reason": "changed"}}`` and nothing
    else; once restored it comes back as a plain object with no annotation.

    Sources: https://learn.microsoft.com/graph/delta-query-users and
    https://learn.microsoft.com/graph/delta-query-overview ("Resource representation in the
    delta query response": changed = can be restored, deleted = permanent).
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    admin.soft_delete(tenant.state, AVERY)
    items, link = await full_round(graph, link)
    assert items == [{"id": AVERY, "@removed": {"reason": "changed"}}]
    admin.restore(tenant.state, AVERY)
    items, _ = await full_round(graph, link)
    assert len(items) == 1
    assert items[0]["id"] == AVERY
    assert "@removed" not in items[0]
    assert items[0]["userPrincipalName"] == "avery.quinlan@example.edu"


async def test_a_permanent_delete_is_removed_deleted(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """A permanently deleted user comes with ``"@removed": {"reason": "deleted"}``, both
    straight from active and after a soft delete.

    Source: https://learn.microsoft.com/graph/delta-query-overview ("Resource representation").
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    admin.hard_delete(tenant.state, AVERY)
    admin.soft_delete(tenant.state, BLAKE)
    items, link = await full_round(graph, link)
    assert sorted(items, key=lambda i: i["id"]) == [
        {"id": AVERY, "@removed": {"reason": "deleted"}},
        {"id": BLAKE, "@removed": {"reason": "changed"}},
    ]
    admin.hard_delete(tenant.state, BLAKE)
    items, _ = await full_round(graph, link)
    assert items == [{"id": BLAKE, "@removed": {"reason": "deleted"}}]


async def test_a_primary_address_change_moves_proxy_addresses_and_mail(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """The primary SMTP address is the ``proxyAddresses`` entry prefixed ``SMTP:`` (capital);
    ``mail`` follows it; the old primary stays as a secondary ``smtp:``. Users delta reports
    the change with both properties.

    Source: https://learn.microsoft.com/graph/api/resources/user ("proxyAddresses", and "mail
    and proxyAddresses properties").
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    admin.change_primary_address(tenant.state, AVERY, "avery.q@example.org")
    items, _ = await full_round(graph, link)
    assert len(items) == 1
    assert items[0]["mail"] == "avery.q@example.org"
    assert items[0]["proxyAddresses"][0] == "SMTP:avery.q@example.org"
    assert "smtp:avery.quinlan@example.edu" in items[0]["proxyAddresses"]
    assert [p for p in items[0]["proxyAddresses"] if p.startswith("SMTP:")] == [
        "SMTP:avery.q@example.org"
    ]
    one = await graph.get(f"/users/{AVERY}", params={"$select": "mail,proxyAddresses"})
    assert one.json()["mail"] == "avery.q@example.org"


async def test_return_minimal_returns_only_changed_properties(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """With ``Prefer: return=minimal`` a deltaLink round returns only the properties that
    changed (plus ``id``).

    Source: https://learn.microsoft.com/graph/api/user-delta ("Request headers" and the
    return=minimal example).
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    admin.set_enabled(tenant.state, AVERY, False)
    response = await graph.get(link, headers={"Prefer": "return=minimal"})
    assert response.json()["value"] == [{"id": AVERY, "accountEnabled": False}]


async def test_delta_token_latest_returns_only_a_delta_link(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """``$deltaToken=latest`` answers an empty round and a deltaLink: "sync from now".

    Source: https://learn.microsoft.com/graph/delta-query-overview ("Use delta query to track
    changes in a resource collection", the note on $deltaToken=latest).
    """
    response = await graph.get("/users/delta", params={"$select": SELECT, "$deltaToken": "latest"})
    body = response.json()
    assert body["value"] == []
    admin.set_enabled(tenant.state, KAI, False)
    items, _ = await full_round(graph, body["@odata.deltaLink"])
    assert [i["id"] for i in items] == [KAI]


async def test_delta_filter_takes_object_ids_only_up_to_fifty(graph: httpx.AsyncClient) -> None:
    """``$filter=id eq '…' or id eq '…'`` limits the round to those objects (at most 50);
    any other filter is 400 ``Request_UnsupportedQuery``.

    Sources: https://learn.microsoft.com/graph/api/user-delta ("There is a limit of 50
    filtered objects"); the refusal of other filters in
    https://learn.microsoft.com/en-us/answers/questions/1090594. The refusal's text for more
    than 50 ids is not published.
    """
    items, _ = await full_round(
        graph, "/users/delta", **{"$filter": f"id eq '{AVERY}' or id eq '{KAI}'"}
    )
    assert sorted(i["id"] for i in items) == sorted([AVERY, KAI])
    other = await graph.get("/users/delta", params={"$filter": "accountEnabled eq false"})
    assert other.status_code == 400
    assert error_of(other)["code"] == "Request_UnsupportedQuery"
    many = " or ".join(f"id eq '00000000-0000-4000-8000-{n:012d}'" for n in range(51))
    too_many = await graph.get("/users/delta", params={"$filter": many})
    assert too_many.status_code == 400


async def test_an_expired_token_is_400_sync_state_not_found(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """A directory delta token that is no longer known is answered 400 ``syncStateNotFound``
    "The sync state generation is not found. The delta token is expired and data must be
    synchronized again." (the sandbox's default of the documented answers).

    Sources: https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/
    and https://learn.microsoft.com/graph/delta-query-overview ("Token duration": "a 40X-series
    error with error codes such as syncStateNotFound").
    """
    _, link = await full_round(graph, "/users/delta", **{"$select": SELECT})
    tenant.state.directory_delta_tokens.clear()
    response = await graph.get(link)
    assert response.status_code == 400
    assert error_of(response)["code"] == "syncStateNotFound"
    assert error_of(response)["message"].startswith("The sync state generation is not found.")


async def test_a_synchronization_reset_is_410_with_a_location(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Graph: "Delta query can return a response code of 410 (gone) and a Location header
    containing a request URL with an empty $deltaToken (same as the initial query)." The body's
    code is not published; the sandbox sends ``resyncRequired`` (Graph's error list: "the delta
    token is no longer valid, and the app must reset the sync state").

    Sources: https://learn.microsoft.com/graph/delta-query-overview ("Synchronization reset")
    and https://learn.microsoft.com/graph/errors.
    """
    tenant.state.directory_delta.expiry = "gone"
    _, link = await full_round(graph, "/groups/delta", **{"$select": "id,members"})
    tenant.state.directory_delta_tokens.clear()
    response = await graph.get(link)
    assert response.status_code == 410
    location = response.headers["Location"]
    assert urlsplit(location).path.endswith("/v1.0/groups/delta")
    assert parse_qs(urlsplit(location).query, keep_blank_values=True)["$deltatoken"] == [""]


async def test_soft_deleted_users_are_in_deleted_items_and_get_user_is_404(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """A soft-deleted user is gone from ``/users/{id}`` (404 ``Request_ResourceNotFound``
    "Resource '{id}' does not exist or one of its queried reference-property objects are not
    present.") and listed in ``/directory/deletedItems/microsoft.graph.user`` with
    ``deletedDateTime`` until deleted for good.

    Sources: https://learn.microsoft.com/graph/api/user-delete,
    https://learn.microsoft.com/graph/api/directory-deleteditems-list and
    https://learn.microsoft.com/graph/api/directory-deleteditems-get; the 404 body as captured in
    https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/7618.
    """
    admin.soft_delete(tenant.state, AVERY)
    gone = await graph.get(f"/users/{AVERY}")
    assert gone.status_code == 404
    assert error_of(gone)["code"] == "Request_ResourceNotFound"
    assert error_of(gone)["message"] == (
        f"Resource '{AVERY}' does not exist or one of its queried reference-property objects "
        "are not present."
    )
    assert set(error_of(gone)["innerError"]) == {"date", "request-id", "client-request-id"}
    listed = await graph.get(
        "/directory/deletedItems/microsoft.graph.user", params={"$select": "id,deletedDateTime"}
    )
    assert [u["id"] for u in listed.json()["value"]] == [AVERY]
    assert listed.json()["value"][0]["deletedDateTime"].endswith("Z")
    item = await graph.get(f"/directory/deletedItems/{AVERY}")
    assert item.json()["@odata.type"] == "#microsoft.graph.user"
    admin.hard_delete(tenant.state, AVERY)
    assert (await graph.get(f"/directory/deletedItems/{AVERY}")).status_code == 404


# ---------------------------------------------------------------- manager


async def test_manager_is_a_directory_object_and_404_when_none(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """``GET /users/{id}/manager`` returns the manager (``@odata.type`` says user or
    orgContact); with no manager it is 404 ``Request_ResourceNotFound`` "Resource 'manager' does
    not exist or one of its queried reference-property objects are not present." ("by design",
    per the product team).

    Sources: https://learn.microsoft.com/graph/api/user-list-manager;
    https://github.com/microsoftgraph/aspnet-snippets-sample/issues/6 and
    https://github.com/microsoftgraph/entra-powershell/issues/237.
    """
    found = await graph.get(f"/users/{AVERY}/manager", params={"$select": "id,displayName"})
    assert found.status_code == 200
    assert found.json()["@odata.type"] == "#microsoft.graph.user"
    assert found.json()["id"] == CASEY
    none = await graph.get(f"/users/{CASEY}/manager")
    assert none.status_code == 404
    assert error_of(none)["code"] == "Request_ResourceNotFound"
    assert error_of(none)["message"] == (
        "Resource 'manager' does not exist or one of its queried reference-property objects "
        "are not present."
    )
    admin.set_manager(tenant.state, CASEY, SASHA)
    assert (await graph.get(f"/users/{CASEY}/manager")).json()["id"] == SASHA


# ---------------------------------------------------------------- groups/delta


async def test_group_delta_lists_members_first_then_additions_and_removals(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """``groups/delta?$filter=id eq '{id}'&$select=members``: the first round lists current
    members in ``members@delta`` (``@odata.type`` and ``id`` only); later rounds list additions
    plainly and removals with ``@removed`` (reason ``deleted``), also for members changed by
    hand outside any app, in a mail-enabled group too (Graph reads those groups).

    Sources: https://learn.microsoft.com/graph/api/group-delta,
    https://learn.microsoft.com/graph/delta-query-groups and
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/18763 (entries without
    @removed are additions).
    """
    params = {"$filter": f"id eq '{MAIL_ENABLED}'", "$select": "id,displayName,members"}
    items, link = await full_round(graph, "/groups/delta", **params)
    assert [i["id"] for i in items] == [MAIL_ENABLED]
    first = items[0]["members@delta"]
    assert {"@odata.type": "#microsoft.graph.user", "id": AVERY} in first
    assert all(set(m) == {"@odata.type", "id"} for m in first)
    admin.add_member_by_hand(tenant.state, "calendar-sync@example.edu", SASHA)
    admin.remove_member_by_hand(tenant.state, MAIL_ENABLED, AVERY)
    items, link = await full_round(graph, link)
    members = [m for i in items for m in i.get("members@delta", [])]
    assert {"@odata.type": "#microsoft.graph.user", "id": SASHA} in members
    assert {
        "@odata.type": "#microsoft.graph.user",
        "id": AVERY,
        "@removed": {"reason": "deleted"},
    } in members
    assert {m["id"] for m in members if "@removed" in m} == {AVERY}
    assert {m["id"] for m in members if "@removed" not in m} == {SASHA}
    items, _ = await full_round(graph, link)
    assert items == []


async def test_group_delta_splits_a_large_group_over_pages(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """A large group's members fill pages: the same group object reappears on following pages
    with another slice of ``members@delta``; clients merge by group id.

    Source: https://learn.microsoft.com/graph/delta-query-groups ("Paging through members in a
    large group").
    """
    tenant.state.directory_delta.member_page_size = 2
    for user_id in (BLAKE, CASEY, SASHA):
        admin.add_member_by_hand(tenant.state, SECURITY, user_id)
    pages = 0
    members: list[str] = []
    response = await graph.get(
        "/groups/delta", params={"$filter": f"id eq '{SECURITY}'", "$select": "members"}
    )
    while True:
        pages += 1
        body = response.json()
        assert all(item["id"] == SECURITY for item in body["value"])
        members += [m["id"] for i in body["value"] for m in i.get("members@delta", [])]
        if "@odata.deltaLink" in body:
            break
        response = await graph.get(body["@odata.nextLink"])
    assert pages >= 3
    assert sorted(members) == sorted(tenant.state.groups[SECURITY].members)


async def test_an_empty_group_has_no_members_delta_key(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Graph: "If a group has no members, the members@delta property isn't included."

    Source: https://learn.microsoft.com/graph/delta-query-groups (initial response notes).
    """
    tenant.state.groups[SECURITY].members.clear()
    items, _ = await full_round(
        graph, "/groups/delta", **{"$filter": f"id eq '{SECURITY}'", "$select": "id,members"}
    )
    assert items == [{"id": SECURITY}]


async def test_soft_deleted_members_stay_in_group_delta_until_deleted_for_good(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Graph: "Users that have been temporary deleted keep their group memberships and won't appear
    in the delta result until they're permanently deleted"; a permanent delete then shows as a
    removal. A restored user is back in its groups ("The user is also restored to any groups
    they were a member of").

    Sources: https://learn.microsoft.com/graph/delta-query-groups and
    https://learn.microsoft.com/graph/api/user-delete.
    """
    params = {"$filter": f"id eq '{SECURITY}'", "$select": "members"}
    _, link = await full_round(graph, "/groups/delta", **params)
    admin.soft_delete(tenant.state, KAI)
    items, link = await full_round(graph, link)
    assert items == []
    listed = await graph.get(f"/groups/{SECURITY}/members", params={"$select": "id"})
    assert KAI not in [m["id"] for m in listed.json()["value"]]
    admin.restore(tenant.state, KAI)
    assert KAI in tenant.state.groups[SECURITY].members
    admin.hard_delete(tenant.state, KAI)
    items, _ = await full_round(graph, link)
    removed = [m for i in items for m in i.get("members@delta", [])]
    assert removed == [
        {"@odata.type": "#microsoft.graph.user", "id": KAI, "@removed": {"reason": "deleted"}}
    ]


async def test_a_deleted_member_may_never_show_as_removed(
    graph: httpx.AsyncClient, tenant: SandboxTenant
) -> None:
    """Public reports say a permanently deleted user did not appear as removed in
    ``members@delta`` (the group delta "continues to return empty value"), though users delta
    reported it; the sandbox can do the same, so the product must not rely on group delta to
    find leavers.

    Source: https://github.com/microsoftgraph/microsoft-graph-docs/issues/14708.
    """
    tenant.state.directory_delta.report_deleted_members = False
    params = {"$filter": f"id eq '{SECURITY}'", "$select": "members"}
    _, link = await full_round(graph, "/groups/delta", **params)
    admin.hard_delete(tenant.state, KAI)
    items, _ = await full_round(graph, link)
    assert items == []
