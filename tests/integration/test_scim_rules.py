"""The SCIM door's rules: who may knock (tokens, TLS, rate, size), the pilot cap, and what an
assignment means next to the Teams door (one enrollment, removal and re-activation, approvers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.scim.catch_up import UnassignedCatchUp
from syncwarden.scim.tokens import ScimTokens
from syncwarden.web import create_app
from syncwarden.workflow_wiring import build_workflows
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Ticket
from tests.support.m365 import sandbox_settings
from tests.support.scim import (
    ERROR_SCHEMA,
    ScimHarness,
    WebClient,
    patch,
    scim_harness,
    user_body,
)
from tests.support.workflow import PEOPLE, Harness

pytestmark = pytest.mark.postgres

AVERY, ROWAN, SASHA = PEOPLE["avery"], PEOPLE["rowan"], PEOPLE["sasha"]
DEACTIVATE = patch({"op": "Replace", "path": "active", "value": False})
ACTIVATE = patch({"op": "Replace", "path": "active", "value": True})


@pytest.fixture
async def s(h: Harness) -> AsyncIterator[ScimHarness]:
    async with scim_harness(h) as harness:
        yield harness


def is_scim_error(status: int, body: object, wanted: int) -> bool:
    return (
        status == wanted
        and isinstance(body, dict)
        and body.get("schemas") == [ERROR_SCHEMA]
        and body.get("status") == str(wanted)
        and bool(body.get("detail"))
    )


# ---------------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", "Basic c2NpbTpzY2lt", "bearer  "],
)
async def test_a_missing_or_bad_token_is_401_and_changes_nothing(
    s: ScimHarness, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in [
        ("POST", "/Users", user_body(AVERY)),
        ("GET", "/Users", None),
        ("PATCH", "/Users/anything", DEACTIVATE),
        ("DELETE", "/Users/anything", None),
    ]:
        status, answer = await s.call(method, path, body, headers=headers)
        assert is_scim_error(status, answer, 401), (method, answer)
    assert (await s.scim_users(), await s.tickets()) == ([], [])
    refused = await s.audit("scim.request")
    assert [r.actor for r in refused] == ["scim:unauthenticated"] * 4
    assert [r.after["status"] for r in refused if r.after] == [401] * 4


async def test_the_401_names_the_bearer_scheme(s: ScimHarness) -> None:
    response = await s.client.get("/scim/v2/Users")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"].startswith("application/scim+json")


async def test_tokens_rotate_with_two_valid_at_once(s: ScimHarness) -> None:
    tokens = ScimTokens(s.h.sessions)
    first = s.token
    second = (await tokens.new()).secret
    for token in (first, second):  # both work while Entra ID is being given the new one
        status, _ = await s.call("GET", "/Users", headers={"Authorization": f"Bearer {token}"})
        assert status == 200
    third = await tokens.new()
    assert third.revoked == (1,), "a third token revokes the oldest"
    assert await s.tokens_valid() == 2
    status, body = await s.call("GET", "/Users", headers={"Authorization": f"Bearer {first}"})
    assert is_scim_error(status, body, 401)
    assert await tokens.revoke(2)
    assert not await tokens.revoke(2), "revoking twice says so"
    status, _ = await s.call("GET", "/Users", headers={"Authorization": f"Bearer {second}"})
    assert status == 401
    status, _ = await s.call("GET", "/Users", headers={"Authorization": f"Bearer {third.secret}"})
    assert status == 200
    stored = str([t for t in await tokens.listing()])
    assert third.secret not in stored


async def test_only_https_in_production(h: Harness) -> None:
    async with scim_harness(h, https_only=True) as s:
        status, body = await s.call("GET", "/Users")
        assert is_scim_error(status, body, 403)
        assert "HTTPS" in body["detail"]
        # Behind the TLS-terminating reverse proxy, which says so.
        status, _ = await s.call("GET", "/Users", headers={**s.auth, "X-Forwarded-Proto": "https"})
        assert status == 200


async def test_each_client_is_rate_limited(h: Harness) -> None:
    now = [0.0]
    async with scim_harness(h, requests_per_minute=3, monotonic=lambda: now[0]) as s:
        for _ in range(3):
            assert (await s.call("GET", "/Users"))[0] == 200
        response = await s.client.get("/scim/v2/Users", headers=s.auth)
        assert response.status == 429
        assert int(response.headers["Retry-After"]) == 20
        assert response.headers["Content-Type"].startswith("application/scim+json")
        now[0] += 20.0
        assert (await s.call("GET", "/Users"))[0] == 200


async def test_guessing_tokens_is_rate_limited_per_address(h: Harness) -> None:
    now = [0.0]
    async with scim_harness(h, requests_per_minute=3, monotonic=lambda: now[0]) as s:
        statuses = [
            (await s.call("GET", "/Users", headers={"Authorization": f"Bearer guess-{n}"}))[0]
            for n in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        refused = await s.audit("scim.request")
        assert [r.after["status"] for r in refused if r.after] == statuses


async def test_bodies_over_the_limit_are_refused(h: Harness) -> None:
    async with scim_harness(h, max_body_bytes=2048) as s:
        body = user_body(AVERY)
        body["displayName"] = "x" * 4096
        status, answer = await s.call("POST", "/Users", body)
        assert is_scim_error(status, answer, 413)
        assert await s.scim_users() == []


# ---------------------------------------------------------------------------------- meaning


async def test_the_pilot_cap_refuses_further_creates_until_raised(h: Harness) -> None:
    async with scim_harness(h, pilot_cap=2) as s:
        ids = []
        for upn in (AVERY, ROWAN):
            status, created = await s.call("POST", "/Users", user_body(upn))
            assert status == 201
            ids.append(created["id"])
        status, body = await s.call("POST", "/Users", user_body(SASHA))
        assert is_scim_error(status, body, 403)
        assert "pilot" in body["detail"] and "SYNCWARDEN_SCIM__PILOT_CAP" in body["detail"]
        assert {t.subject_upn for t in await s.tickets()} == {AVERY, ROWAN}
        # An inactive user does not count; re-activating one beyond the cap is refused too.
        assert (await s.call("PATCH", f"/Users/{ids[0]}", DEACTIVATE))[0] in (200, 204)
        assert (await s.call("POST", "/Users", user_body(SASHA)))[0] == 201
        status, body = await s.call("PATCH", f"/Users/{ids[0]}", ACTIVATE)
        assert is_scim_error(status, body, 403)
    async with scim_harness(h, pilot_cap=3) as raised:
        status, _ = await raised.call("PATCH", f"/Users/{ids[0]}", ACTIVATE)
        assert status in (200, 204)


async def test_deactivate_removes_and_reactivate_enrolls_again(s: ScimHarness) -> None:
    status, created = await s.call("POST", "/Users", user_body(SASHA))
    assert status == 201
    await s.h.runner.run_until_idle()
    assert s.h.in_sync_group("sasha")

    assert (await s.call("PATCH", f"/Users/{created['id']}", DEACTIVATE))[0] in (200, 204)
    await s.h.runner.run_until_idle()
    assert not s.h.in_sync_group("sasha")
    assert not [e for e in await s.enrollments() if e.active]

    assert (await s.call("PATCH", f"/Users/{created['id']}", ACTIVATE))[0] in (200, 204)
    await s.h.runner.run_until_idle()
    assert s.h.in_sync_group("sasha")
    tickets = await s.tickets()
    assert [(t.kind, t.status) for t in tickets] == [
        (TicketKind.ENROLL.value, TicketStatus.COMPLETED.value),
        (TicketKind.REMOVE.value, TicketStatus.COMPLETED.value),
        (TicketKind.ENROLL.value, TicketStatus.COMPLETED.value),
    ]
    assert len([e for e in await s.enrollments() if e.active]) == 1


async def test_delete_of_an_active_user_opens_a_removal(s: ScimHarness) -> None:
    _, created = await s.call("POST", "/Users", user_body(ROWAN))
    await s.h.runner.run_until_idle()
    assert (await s.call("DELETE", f"/Users/{created['id']}"))[0] == 204
    assert [t.kind for t in await s.tickets()] == ["enroll", "remove"]
    await s.h.runner.run_until_idle()
    assert not s.h.in_sync_group("rowan")


async def test_a_person_enrolled_through_teams_and_scim_is_one_enrollment(
    s: ScimHarness,
) -> None:
    rowan, casey = s.h.person("rowan"), s.h.person("casey")
    asked = await s.h.service.request_enrollment(rowan, justification="advising")
    assert asked.ticket is not None
    decided = await s.h.service.decide(asked.ticket.ref, casey, approve=True)
    assert decided.ok
    await s.h.runner.run_until_idle()

    status, created = await s.call("POST", "/Users", user_body(ROWAN))
    assert status == 201
    assert len(await s.tickets()) == 1, "already enrolled: the assignment opens nothing"
    [enrollment] = await s.enrollments()
    assert enrollment.active
    [assignment] = await s.audit("provisioning.assignment")
    assert assignment.after is not None and "already enrolled" in assignment.after["outcome"]
    assert assignment.actor == "syncwarden:scim"

    # Unassigned in Entra ID: the Teams enrollment is removed, and the audit says by whom.
    assert (await s.call("PATCH", f"/Users/{created['id']}", DEACTIVATE))[0] in (200, 204)
    removal = (await s.tickets())[-1]
    assert (removal.kind, removal.requester_name) == ("remove", "Entra ID provisioning")
    await s.h.runner.run_until_idle()
    assert not [e for e in await s.enrollments() if e.active]
    created_rows = await s.audit("ticket.created.remove")
    assert [r.actor for r in created_rows] == ["syncwarden:scim"]


async def test_with_the_approve_decision_approvers_still_decide(h: Harness) -> None:
    async with scim_harness(h, decision="approve") as s:
        status, _ = await s.call("POST", "/Users", user_body(SASHA))
        assert status == 201
        [ticket] = await s.tickets()
        assert ticket.status == TicketStatus.AWAITING_APPROVAL.value
        casey = h.person("casey")
        asks = h.notifier.to(f"user:{casey.id.lower()}", NotificationKind.APPROVAL_REQUESTED)
        assert len(asks) == 1
        assert not h.in_sync_group("sasha")


async def test_unassigned_before_the_approvers_decide_withdraws_the_request(h: Harness) -> None:
    async with scim_harness(h, decision="approve") as s:
        _, created = await s.call("POST", "/Users", user_body(SASHA))
        assert (await s.call("PATCH", f"/Users/{created['id']}", DEACTIVATE))[0] in (200, 204)
        [ticket] = await s.tickets()
        assert ticket.status == TicketStatus.CANCELLED.value
        await h.runner.run_until_idle()
        assert not h.in_sync_group("sasha")
        assert await s.enrollments() == []


async def test_someone_not_in_the_directory_is_stored_and_audited_without_a_ticket(
    s: ScimHarness,
) -> None:
    status, created = await s.call("POST", "/Users", user_body("nobody.here@example.edu"))
    assert status == 201 and created["userName"] == "nobody.here@example.edu"
    assert await s.tickets() == []
    [assignment] = await s.audit("provisioning.assignment")
    assert assignment.after is not None
    assert "nobody named nobody.here@example.edu" in assignment.after["outcome"]


async def test_a_taken_user_name_is_a_uniqueness_conflict(s: ScimHarness) -> None:
    assert (await s.call("POST", "/Users", user_body(AVERY)))[0] == 201
    status, body = await s.call("POST", "/Users", user_body(AVERY.upper()))
    assert is_scim_error(status, body, 409)
    assert body["scimType"] == "uniqueness"
    assert len(await s.tickets()) == 1


# ---------------------------------------------------------------------------------- wiring


async def test_serve_wires_the_door_only_when_enabled(
    migrated_engine: AsyncEngine, tenant: SandboxTenant
) -> None:
    """As ``syncwarden serve`` builds it: off by default, on with SYNCWARDEN_SCIM__ENABLED and
    the workflow, HTTPS-only in production."""
    from syncwarden.server import scim_endpoint

    group = {"sync_group_id": tenant.seed.group_ids["Calendar Sync"]}
    sessions = session_factory(migrated_engine)
    off = sandbox_settings(tenant, graph=group)
    on = sandbox_settings(
        tenant, graph=group, scim={"enabled": True}, bot={"public_host": "sync.example.edu"}
    )
    m365 = build_microsoft365(on)
    try:
        workflows = build_workflows(on, sessions, m365)
        assert workflows is not None
        assert scim_endpoint(off, sessions, workflows) is None
        assert scim_endpoint(on, sessions, None) is None, "no tickets without the workflow"
        endpoint = scim_endpoint(on, sessions, workflows)
        assert endpoint is not None
        await BuiltinScheduling(sessions, writes_mappings=True).upsert_profile(
            Profile("prof-avery", "Avery", AVERY)
        )
        client: WebClient = TestClient(
            TestServer(create_app(on, migrated_engine, scim=endpoint), host="127.0.0.1")
        )
        await client.start_server()
        try:
            token = (await ScimTokens(sessions).new()).secret
            response = await client.post(
                "/scim/v2/Users",
                json=user_body(AVERY),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status == 201, await response.text()
            created = await response.json()
            assert response.headers["Location"] == (
                f"https://sync.example.edu/scim/v2/Users/{created['id']}"
            )
        finally:
            await client.close()
        async with sessions() as session:
            [ticket] = (await session.scalars(select(Ticket))).all()
        assert (ticket.requester_id, ticket.status) == (
            "syncwarden:scim",
            TicketStatus.PROVISIONING.value,
        )
    finally:
        await m365.aclose()


async def test_when_the_directory_fails_nothing_is_stored_and_entra_id_retries(
    s: ScimHarness,
) -> None:
    """A 503 SCIM error, so the provisioning service sends the same create again later."""
    s.h.tenant.add_fault("/users", status=403, code="Authorization_RequestDenied", message="no")
    status, body = await s.call("POST", "/Users", user_body(SASHA))
    assert is_scim_error(status, body, 503), body
    assert "directory could not be reached" in body["detail"]
    assert (await s.scim_users(), await s.tickets()) == ([], [])
    s.h.tenant.clear_faults()
    assert (await s.call("POST", "/Users", user_body(SASHA)))[0] == 201
    assert len(await s.tickets()) == 1


async def test_an_unassignment_while_the_enrollment_is_under_way_is_carried_out_after_it(
    s: ScimHarness,
) -> None:
    """Entra ID sends the unassignment once; it came while the enrollment's steps were still to
    run, so it could only be recorded. The catch-up opens the removal once they are done."""
    catch_up = UnassignedCatchUp(s.h.sessions, s.intake)
    status, created = await s.call("POST", "/Users", user_body(SASHA))
    assert status == 201
    assert (await s.call("PATCH", f"/Users/{created['id']}", DEACTIVATE))[0] in (200, 204)
    assert [t.kind for t in await s.tickets()] == ["enroll"], "the enrollment is under way"
    assert "0 removals opened" in await catch_up.run(), "nothing while a ticket is open"

    await s.h.runner.run_until_idle()
    assert s.h.in_sync_group("sasha")
    assert "1 removals opened" in await catch_up.run()
    await s.h.runner.run_until_idle()
    assert not s.h.in_sync_group("sasha")
    assert [(t.kind, t.requester_id) for t in await s.tickets()] == [
        ("enroll", "syncwarden:scim"),
        ("remove", "syncwarden:scim"),
    ]
    assert "0 removals opened" in await catch_up.run(), "owed once, opened once"
    assert [a.action for a in await s.audit("provisioning.caught_up")] == ["provisioning.caught_up"]
