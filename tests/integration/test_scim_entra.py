"""Entra ID's provisioning requests, replayed one by one against the live /scim/v2 endpoint.

The requests are those of Microsoft's tutorial "Develop and plan provisioning for a SCIM
endpoint in Microsoft Entra ID", section "SCIM protocol requests and responses"
(https://learn.microsoft.com/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups;
MicrosoftDocs/entra-docs docs/identity/app-provisioning/use-scim-to-provision-users-and-groups.md):
Get User by query (zero results) before Create User, Get User, Get User by query, Update User
[Multi-valued properties] (``"op": "Replace"``, ``emails[type eq "work"].value``), Update User
[Single-valued properties], Disable User (``active`` false), Delete User; "Don't require a
case-sensitive match on ... PATCH op operation values ... Microsoft Entra ID emits the values of op
as Add, Replace, and Remove"; users are queried with ``userName`` and ``externalId`` and with
``emails[type eq "work"].value``; listing is paged with ``startIndex`` and ``count``
(RFC 7644 §3.4.2.4, which the tutorial names).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind
from tests.support.scim import ERROR_SCHEMA, ScimHarness, patch, scim_harness, user_body
from tests.support.workflow import PEOPLE, Harness

pytestmark = pytest.mark.postgres

AVERY = PEOPLE["avery"]  # mailbox aliases: aquinlan@example.edu, avery.quinlan@example.org


@pytest.fixture
async def s(h: Harness) -> AsyncIterator[ScimHarness]:
    async with scim_harness(h) as harness:
        yield harness


async def test_entra_sequence_create_query_update_disable_delete(s: ScimHarness) -> None:
    # Get User by query - Zero results: Entra ID asks before it creates.
    status, body = await s.call("GET", "/Users", params={"filter": f'userName eq "{AVERY}"'})
    assert (status, body["totalResults"], body["Resources"]) == (200, 0, [])
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]

    # Create User.
    status, created = await s.call("POST", "/Users", user_body(AVERY))
    assert status == 201, created
    user_id = created["id"]
    assert (created["userName"], created["active"], created["externalId"]) == (
        AVERY,
        True,
        "avery.quinlan",
    )
    [ticket] = await s.tickets()
    assert (ticket.kind, ticket.requester_id, ticket.requester_name) == (
        TicketKind.ENROLL.value,
        "syncwarden:scim",
        "Entra ID provisioning",
    )
    assert ticket.status == TicketStatus.PROVISIONING.value, "the assignment is the decision"
    assert await s.h.runner.run_until_idle() == 4
    assert s.h.in_sync_group("avery")
    [enrollment] = await s.enrollments()
    assert (enrollment.active, enrollment.mailbox) == (True, AVERY)
    [stored] = await s.scim_users()
    assert stored.directory_id == s.h.person("avery").id

    # Get User, and Get User by query (userName is matched case-insensitively).
    status, got = await s.call("GET", f"/Users/{user_id}")
    assert (status, got["id"], got["userName"]) == (200, user_id, AVERY)
    for wanted in (
        f'userName eq "{AVERY.upper()}"',
        'externalId eq "avery.quinlan"',
        f'emails[type eq "work"].value eq "{AVERY}"',
    ):
        status, found = await s.call("GET", "/Users", params={"filter": wanted})
        assert (status, found["totalResults"]) == (200, 1), wanted
        assert found["Resources"][0]["id"] == user_id

    # Update User [Multi-valued properties]: the work address moves to another of the mailbox's
    # addresses, so the enrollment follows the mover path (a change ticket).
    status, _ = await s.call(
        "PATCH",
        f"/Users/{user_id}",
        patch(
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "aquinlan@example.edu",
            },
            {"op": "Replace", "path": "name.familyName", "value": "Quinlan-Reyes"},
        ),
    )
    assert status in (200, 204)
    tickets = await s.tickets()
    assert [t.kind for t in tickets] == [TicketKind.ENROLL.value, TicketKind.CHANGE.value]
    assert (tickets[1].mailbox, tickets[1].previous_mailbox) == ("aquinlan@example.edu", AVERY)
    await s.h.runner.run_until_idle()
    [enrollment] = [e for e in await s.enrollments() if e.active]
    assert enrollment.mailbox == "aquinlan@example.edu"
    status, got = await s.call("GET", f"/Users/{user_id}")
    assert got["emails"][0]["value"] == "aquinlan@example.edu"
    assert got["name"]["familyName"] == "Quinlan-Reyes"

    # Update User [Single-valued properties], op in lower case: a new userName for the same
    # person (resolved by the directory object id seen before); no ticket, same enrollment.
    status, _ = await s.call(
        "PATCH",
        f"/Users/{user_id}",
        patch({"op": "replace", "path": "userName", "value": "avery.q@example.edu"}),
    )
    assert status in (200, 204)
    assert len(await s.tickets()) == 2
    status, found = await s.call(
        "GET", "/Users", params={"filter": 'userName eq "avery.q@example.edu"'}
    )
    assert found["totalResults"] == 1

    # Disable User: a removal ticket, carried out.
    status, _ = await s.call(
        "PATCH", f"/Users/{user_id}", patch({"op": "Replace", "path": "active", "value": False})
    )
    assert status in (200, 204)
    tickets = await s.tickets()
    assert tickets[-1].kind == TicketKind.REMOVE.value
    assert tickets[-1].requester_id == "syncwarden:scim"
    await s.h.runner.run_until_idle()
    assert not s.h.in_sync_group("avery")
    assert not [e for e in await s.enrollments() if e.active]
    # The user is still returned while inactive (the tutorial: only a hard delete hides it).
    status, got = await s.call("GET", f"/Users/{user_id}")
    assert (status, got["active"]) == (200, False)

    # Delete User: 204, then 404 with a SCIM error; no second removal.
    status, body = await s.call("DELETE", f"/Users/{user_id}")
    assert (status, body) == (204, None)
    status, body = await s.call("GET", f"/Users/{user_id}")
    assert (status, body["schemas"], body["status"]) == (404, [ERROR_SCHEMA], "404")
    assert len(await s.tickets()) == 3

    # Every call is audited, by token number, and the audit never holds the token.
    calls = await s.audit("scim.request")
    assert len(calls) >= 12
    assert {c.actor for c in calls} == {"scim-token:1"}
    assert all(s.token not in str(c.after) for c in calls)
    # The system requester is never sent a chat message; the person is (their instructions).
    assert s.h.notifier.to("user:syncwarden:scim") == []
    avery_id = s.h.person("avery").id.lower()
    assert s.h.notifier.to(f"user:{avery_id}", NotificationKind.INSTRUCTIONS)
    assignments = await s.audit("provisioning.assignment")
    assert {a.actor for a in assignments} == {"syncwarden:scim"}


async def test_add_op_with_a_value_object_and_active_as_a_string(s: ScimHarness) -> None:
    """Entra ID sends ``Add`` without a path, and has sent booleans as the strings "True" and
    "False" (learn.microsoft.com/entra/identity/app-provisioning/
    application-provisioning-config-problem-scim-compatibility)."""
    status, created = await s.call("POST", "/Users", user_body(AVERY))
    assert status == 201
    await s.h.runner.run_until_idle()
    status, _ = await s.call(
        "PATCH",
        f"/Users/{created['id']}",
        patch({"op": "Add", "value": {"displayName": "Avery Q", "title": "Advisor"}}),
    )
    assert status in (200, 204)
    status, _ = await s.call(
        "PATCH",
        f"/Users/{created['id']}",
        patch({"op": "Replace", "path": "active", "value": "False"}),
    )
    assert status in (200, 204)
    _, got = await s.call("GET", f"/Users/{created['id']}")
    assert (got["displayName"], got["active"]) == ("Avery Q", False)
    assert [t.kind for t in await s.tickets()] == ["enroll", "remove"]


async def test_paging_with_start_index_and_count(s: ScimHarness) -> None:
    for key in ("avery", "rowan", "sasha"):
        status, _ = await s.call("POST", "/Users", user_body(PEOPLE[key]))
        assert status == 201
    pages = []
    for start in ("1", "3"):
        status, page = await s.call("GET", "/Users", params={"startIndex": start, "count": "2"})
        assert status == 200
        assert (page["totalResults"], page["startIndex"]) == (3, int(start))
        pages.append([r["userName"] for r in page["Resources"]])
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(pages[0] + pages[1]) == sorted(PEOPLE[k] for k in ("avery", "rowan", "sasha"))


async def test_discovery_endpoints(s: ScimHarness) -> None:
    status, config = await s.call("GET", "/ServiceProviderConfig")
    assert status == 200
    assert (config["patch"]["supported"], config["filter"]["supported"]) == (True, True)
    assert config["bulk"]["supported"] is False
    status, types = await s.call("GET", "/ResourceTypes")
    assert status == 200
    assert [t["name"] for t in types["Resources"]] == ["User"]
    status, schemas = await s.call("GET", "/Schemas")
    assert status == 200
    ids = {schema["id"] for schema in schemas["Resources"]}
    assert "urn:ietf:params:scim:schemas:core:2.0:User" in ids
    status, body = await s.call("GET", "/Groups")
    assert (status, body["schemas"]) == (404, [ERROR_SCHEMA])
