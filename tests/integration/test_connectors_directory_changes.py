"""Directory changes read through the real Graph client against the sandbox tenant."""

from __future__ import annotations

import pytest

from syncwarden.connectors.errors import DeltaExpiredError, NotFoundError
from syncwarden.connectors.graph.directory_changes import (
    DeltaRestartRequiredError,
    GraphDirectoryChanges,
)
from syncwarden.connectors.ports import Removal
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox import directory_admin as admin
from syncwarden.sandbox.server import SandboxTenant

AVERY = "4e478660-48cd-4008-8a06-4a1af03026a1"
CASEY = "d7dd6da8-9922-4e7b-a3f4-e479fb95fd01"
KAI = "2d8848ff-7e7a-48df-a788-75de66d59318"
SASHA = "26bfae02-06a3-4dd2-97eb-b5ba2f1427a0"
MAIL_ENABLED = "36210e13-4d7d-4472-8af4-8892765df8ff"
SECURITY = "bc490a5b-597c-4082-babe-7ef541eb3972"
NESTED = "e30ddc5e-31d9-4641-a74b-b60860aa8982"


@pytest.fixture
def changes(m365: Microsoft365) -> GraphDirectoryChanges:
    return GraphDirectoryChanges(m365.graph)


def graph_requests(tenant: SandboxTenant) -> list[str]:
    return [f"{r.method} {r.path}" for r in tenant.requests]


async def test_first_round_reads_everyone_and_a_steady_round_is_one_request(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    tenant.state.directory_delta.page_size = 3
    first = await changes.user_changes()
    assert {c.id for c in first.changes} == set(tenant.state.users)
    assert first.requests > 1
    avery = next(c for c in first.changes if c.id == AVERY)
    assert avery.primary_smtp == "avery.quinlan@example.edu"
    assert avery.account_enabled is True
    tenant.clear_requests()
    steady = await changes.user_changes(first.delta_link)
    assert steady.changes == ()
    assert steady.requests == 1
    assert graph_requests(tenant) == ["GET /users/delta"]
    assert steady.delta_link != first.delta_link


async def test_leavers_and_movers_show_up(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    link = (await changes.user_changes()).delta_link
    admin.set_enabled(tenant.state, AVERY, False)
    admin.soft_delete(tenant.state, KAI)
    admin.hard_delete(tenant.state, SASHA)
    admin.change_primary_address(tenant.state, CASEY, "casey.l@example.org")
    round_ = await changes.user_changes(link)
    found = {c.id: c for c in round_.changes}
    assert found[AVERY].account_enabled is False and found[AVERY].removed is None
    assert found[KAI].removed is Removal.SOFT
    assert found[SASHA].removed is Removal.HARD
    assert found[CASEY].primary_smtp == "casey.l@example.org"
    assert found[CASEY].mail == "casey.l@example.org"
    admin.restore(tenant.state, KAI)
    back = await changes.user_changes(round_.delta_link)
    assert [(c.id, c.removed) for c in back.changes] == [(KAI, None)]


async def test_manual_membership_changes_show_up_in_the_group_delta(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    first = await changes.member_changes(MAIL_ENABLED)
    assert AVERY in first.added
    tenant.clear_requests()
    steady = await changes.member_changes(MAIL_ENABLED, first.delta_link)
    assert (steady.added, steady.removed, steady.requests) == (frozenset(), frozenset(), 1)
    admin.add_member_by_hand(tenant.state, "calendar-sync@example.edu", SASHA)
    admin.remove_member_by_hand(tenant.state, MAIL_ENABLED, AVERY)
    moved = await changes.member_changes(MAIL_ENABLED, steady.delta_link)
    assert moved.added == {SASHA}
    assert moved.removed == {AVERY}


async def test_a_large_group_is_merged_across_pages(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    tenant.state.directory_delta.member_page_size = 1
    first = await changes.member_changes(SECURITY)
    assert first.requests >= 2
    assert first.added == {KAI}  # the nested group is not a person
    assert await changes.member_ids(SECURITY) == {KAI}


async def test_member_ids_follow_next_links(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    for index in range(1203):
        user = tenant.add_user(userPrincipalName=f"person{index}@example.edu")
        tenant.state.add_members(tenant.state.groups[MAIL_ENABLED], [user.id])
    tenant.clear_requests()
    ids = await changes.member_ids(MAIL_ENABLED)
    assert len(ids) == 1203 + 3
    assert sum(1 for r in tenant.requests if r.path.endswith("/members")) == 2


@pytest.mark.parametrize("expiry", ["bad_request", "gone", "resync_required"])
async def test_an_expired_link_is_a_typed_start_over(
    changes: GraphDirectoryChanges, tenant: SandboxTenant, expiry: str
) -> None:
    tenant.state.directory_delta.expiry = expiry  # type: ignore[assignment]
    users = (await changes.user_changes()).delta_link
    members = (await changes.member_changes(SECURITY)).delta_link
    tenant.state.directory_delta_tokens.clear()
    with pytest.raises(DeltaRestartRequiredError) as raised:
        await changes.user_changes(users)
    assert isinstance(raised.value, DeltaExpiredError)
    with pytest.raises(DeltaRestartRequiredError):
        await changes.member_changes(SECURITY, members)
    again = await changes.user_changes()
    assert {c.id for c in again.changes} == set(tenant.state.users)


async def test_an_expired_page_token_is_a_start_over_too(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    tenant.add_fault(
        r"/users/delta$",
        status=400,
        code="Directory_ExpiredPageToken",
        message="The specified page token value has expired and can no longer be included in "
        "your request.",
        count=1,
    )
    with pytest.raises(DeltaRestartRequiredError):
        await changes.user_changes()


async def test_manager_or_none(changes: GraphDirectoryChanges, tenant: SandboxTenant) -> None:
    manager = await changes.manager_of(AVERY)
    assert manager is not None and manager.id == CASEY and manager.is_user
    assert await changes.manager_of(CASEY) is None
    admin.soft_delete(tenant.state, AVERY)
    with pytest.raises(NotFoundError):
        await changes.manager_of(AVERY)


async def test_background_reads_ask_for_low_throttle_priority(
    changes: GraphDirectoryChanges, tenant: SandboxTenant
) -> None:
    seen: list[str | None] = []
    original = tenant.pipeline.dispatch

    async def spy(req):  # type: ignore[no-untyped-def]
        seen.append(req.headers.get("x-ms-throttle-priority"))
        return await original(req)

    tenant.pipeline.dispatch = spy  # type: ignore[method-assign]
    await changes.user_changes()
    await changes.manager_of(AVERY)
    assert seen and set(seen) == {"low"}
