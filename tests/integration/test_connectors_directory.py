"""People, groups and membership writes against the sandbox tenant, through the real connectors."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from syncwarden.connectors.errors import (
    BadRequestError,
    ConnectorError,
    CredentialError,
    NotFoundError,
    PermissionMissingError,
)
from syncwarden.connectors.exchange.client import MEMBERSHIP_ROLE, ExchangeAdminClient
from syncwarden.connectors.groups import MembershipRefusedError, SyncGroupMembership
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.ports import GroupKind
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from tests.support.m365 import M365Factory

MAIL_ENABLED = "Calendar Sync"
SYNC_GROUP_ADDRESS = "calendar-sync@example.edu"
MEMBERSHIP_ROLE_NAME = "Security Group Creation and Membership"
PLAIN = "Calendar Sync (Graph)"


def group_id(tenant: SandboxTenant, name: str) -> str:
    return tenant.seed.group_ids[name]


async def test_user_by_upn_and_by_id(m365: Microsoft365, tenant: SandboxTenant) -> None:
    by_upn = await m365.directory.get_user("blake.okonkwo-reyes@example.edu")
    by_id = await m365.directory.get_user(by_upn.id)
    assert by_id == by_upn
    assert by_upn.account_enabled


async def test_other_addresses_are_not_found_by_get_but_by_lookup(m365: Microsoft365) -> None:
    user = await m365.directory.get_user("blake.okonkwo-reyes@example.edu")
    secondary = next(p.split(":", 1)[1] for p in user.proxy_addresses if p.startswith("smtp:"))
    with pytest.raises(NotFoundError):
        await m365.directory.get_user(secondary)
    assert await m365.directory.find_user_by_address(secondary.upper()) == user
    assert await m365.directory.find_user_by_address("nobody@example.edu") is None
    assert await m365.directory.find_user_by_address("not an address") is None


async def test_other_mails_match_too(m365: Microsoft365, tenant: SandboxTenant) -> None:
    found = [u for u in tenant.seed.raw["users"] if u.get("otherMails")]
    assert found, "the default seed should have someone with otherMails"
    person = found[0]
    user = await m365.directory.find_user_by_address(person["otherMails"][0])
    assert user is not None
    assert user.user_principal_name == person["userPrincipalName"]


async def test_group_kinds_decide_the_write_path(m365: Microsoft365, tenant: SandboxTenant) -> None:
    mail_enabled = await m365.directory.get_group(group_id(tenant, MAIL_ENABLED))
    plain = await m365.directory.get_group(group_id(tenant, PLAIN))
    assert mail_enabled.kind is GroupKind.MAIL_ENABLED_SECURITY
    assert plain.kind is GroupKind.SECURITY


async def test_transitive_members_include_nested_groups(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    direct = {m.id for m in await m365.directory.members(group_id(tenant, PLAIN))}
    transitive = {
        m.id for m in await m365.directory.members(group_id(tenant, PLAIN), transitive=True)
    }
    nested_member = tenant.seed.user_ids["jules.moreau-kim@example.edu"]
    assert nested_member not in direct
    assert nested_member in transitive


async def test_graph_add_and_remove_are_idempotent(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    gid = group_id(tenant, PLAIN)
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, gid)
    assert await membership.write_path() == "graph"
    first = await membership.add_member(user)
    again = await membership.add_member(user)
    assert (first.changed, again.changed) == (True, False)
    assert await membership.is_member(user)
    assert tenant.group_member_ids(gid).count(user.id) == 1
    removed = await membership.remove_member(user)
    removed_again = await membership.remove_member(user)
    assert (removed.changed, removed_again.changed) == (True, False)
    assert user.id not in tenant.group_member_ids(gid)


async def test_removing_from_a_deleted_group_is_an_error_not_a_success(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    """Graph answers "not a member" and "no such group" with the same 404; only the first is
    a removal that already happened."""
    gid = group_id(tenant, PLAIN)
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    del tenant.state.groups[gid]
    with pytest.raises(NotFoundError):
        await m365.directory.remove_member(gid, user.id)


async def test_mail_enabled_group_goes_through_exchange_and_is_idempotent(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    gid = group_id(tenant, MAIL_ENABLED)
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, gid)
    assert await membership.write_path() == "exchange"
    tenant.clear_requests()
    first = await membership.add_member(user)
    again = await membership.add_member(user)
    assert (first.path, first.changed, again.changed) == ("exchange", True, False)
    assert user.id in tenant.group_member_ids(gid)
    assert await membership.is_member(user), "Graph reads see the member Exchange added"
    writes = [r for r in tenant.requests if r.method != "GET"]
    assert writes, "the adds must have been sent"
    assert all("InvokeCommand" in r.path for r in writes), "no membership write may go to Graph"
    assert (await membership.remove_member(user)).changed
    assert not (await membership.remove_member(user)).changed


async def test_graph_refuses_writes_to_mail_enabled_groups(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    with pytest.raises(BadRequestError, match="mail-enabled"):
        await m365.directory.add_member(group_id(tenant, MAIL_ENABLED), user.id)


async def test_batch_add_falls_back_when_one_is_already_a_member(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    gid = group_id(tenant, PLAIN)
    ids = [
        tenant.seed.user_ids[u] for u in ("sasha.verhoeven@example.edu", "rowan.ibarra@example.edu")
    ]
    already = tenant.seed.user_ids["kai.nakamura-ellis@example.edu"]
    changes = await m365.directory.add_members(gid, [*ids, already])
    assert [c.changed for c in changes] == [True, True, False]
    assert set(ids) <= set(tenant.group_member_ids(gid))


async def test_missing_graph_permission_is_explained(
    m365_factory: M365Factory, tenant: SandboxTenant
) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    # Consent for reading groups but not for changing them: the write must name what is missing.
    tenant.revoke_role(app_id, "https://graph.microsoft.com", "GroupMember.ReadWrite.All")
    tenant.grant_role(app_id, "https://graph.microsoft.com", "GroupMember.Read.All")
    m365 = await m365_factory()
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, group_id(tenant, PLAIN))
    with pytest.raises(MembershipRefusedError, match=r"GroupMember\.ReadWrite\.All"):
        await membership.add_member(user)


async def test_missing_exchange_role_is_explained(
    m365_factory: M365Factory, tenant: SandboxTenant
) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.revoke_role(app_id, "https://outlook.office365.com", "Exchange.ManageAsApp")
    m365 = await m365_factory()
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, group_id(tenant, MAIL_ENABLED))
    with pytest.raises(MembershipRefusedError, match=r"Exchange\.ManageAsApp"):
        await membership.add_member(user)


def exchange_calls(tenant: SandboxTenant) -> list[int | None]:
    return [r.status for r in tenant.requests if r.path.endswith("/InvokeCommand")]


@pytest.mark.parametrize("granted", [None, "Recipient Management"])
async def test_a_missing_exchange_role_is_named_and_not_mistaken_for_a_stale_token(
    m365: Microsoft365, tenant: SandboxTenant, granted: str | None
) -> None:
    """Without the role Exchange refuses the cmdlet (401) or hides the bypass switch (400)."""
    app_id = tenant.seed.app_ids["Syncwarden"]
    tenant.exchange.remove_role(app_id, "Security Group Creation and Membership")
    if granted:
        tenant.exchange.assign_role(app_id, granted)
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, group_id(tenant, MAIL_ENABLED))
    tenant.clear_requests()
    with pytest.raises(MembershipRefusedError) as refused:
        await membership.add_member(user)
    assert isinstance(refused.value, PermissionMissingError)
    assert refused.value.permission == MEMBERSHIP_ROLE
    assert "Security Group Creation and Membership" in str(refused.value)
    assert "Recipient Management" not in (refused.value.permission or "")
    assert exchange_calls(tenant) == [401 if granted is None else 400], "sent once, no retry"
    assert user.id not in tenant.group_member_ids(group_id(tenant, MAIL_ENABLED))


class StaleFirstTokens:
    """A token provider whose first token is one Exchange rejects; it counts invalidations."""

    def __init__(self, tenant: SandboxTenant) -> None:
        self._tenant = tenant
        self._stale = True
        self.invalidated = 0

    async def get_token(self, scope: str) -> str:
        if self._stale:
            return "not-a-valid-token"
        app_id = self._tenant.seed.app_ids["Syncwarden"]
        return self._tenant.mint_access_token(app_id, "https://outlook.office365.com")

    def invalidate(self, scope: str) -> None:
        self.invalidated += 1
        self._stale = False


def exchange_client(
    m365: Microsoft365, tenant: SandboxTenant, tokens: StaleFirstTokens
) -> ExchangeAdminClient:
    return ExchangeAdminClient(
        m365.http,
        tokens,
        base_url=m365.endpoints.exchange_base_url,
        scope=m365.endpoints.exchange_scope,
        tenant_id=tenant.tenant_id,
        limiter=ConcurrencyLimiter(global_limit=4),
    )


async def test_a_rejected_token_is_refreshed_once_but_a_missing_role_is_not(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    tokens = StaleFirstTokens(tenant)
    client = exchange_client(m365, tenant, tokens)
    tenant.clear_requests()
    assert await client.add_group_member(SYNC_GROUP_ADDRESS, "sasha.verhoeven@example.edu")
    assert (tokens.invalidated, exchange_calls(tenant)) == (1, [401, 200])

    tenant.exchange.remove_role(tenant.seed.app_ids["Syncwarden"], MEMBERSHIP_ROLE_NAME)
    tenant.clear_requests()
    with pytest.raises(PermissionMissingError):
        await client.remove_group_member(SYNC_GROUP_ADDRESS, "sasha.verhoeven@example.edu")
    assert (tokens.invalidated, exchange_calls(tenant)) == (1, [401])


@pytest.mark.parametrize("status", [429, 503, 504])
async def test_exchange_throttling_is_retried_after_the_wait_it_asks_for(
    m365: Microsoft365, tenant: SandboxTenant, status: int
) -> None:
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, group_id(tenant, MAIL_ENABLED))
    await membership.group()
    tenant.clear_requests()
    tenant.exchange.throttle(status, retry_after="0", count=2)
    change = await membership.add_member(user)
    assert change.changed
    assert exchange_calls(tenant) == [status, status, 200]
    assert tenant.group_member_ids(group_id(tenant, MAIL_ENABLED)).count(user.id) == 1


async def test_a_redirect_from_exchange_is_an_error_not_a_success(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    user = await m365.directory.get_user("sasha.verhoeven@example.edu")
    membership = SyncGroupMembership(m365.directory, m365.exchange, group_id(tenant, MAIL_ENABLED))
    await membership.group()
    tenant.clear_requests()
    tenant.add_fault(r"/InvokeCommand$", status=302, code="Found", message="moved", count=1)
    with pytest.raises(ConnectorError, match="redirect"):
        await membership.add_member(user)
    assert exchange_calls(tenant) == [302]
    assert user.id not in tenant.group_member_ids(group_id(tenant, MAIL_ENABLED))


async def test_exchange_warnings_are_logged(m365: Microsoft365, tenant: SandboxTenant) -> None:
    tenant.exchange.add_warning("Add-DistributionGroupMember", "The group is being migrated.")
    with capture_logs() as logs:
        assert await m365.exchange.add_group_member(
            "calendar-sync@example.edu", "sasha.verhoeven@example.edu"
        )
        assert not await m365.exchange.remove_group_member(
            "calendar-sync@example.edu", "kai.nakamura-ellis@example.edu"
        )
    warned = [entry for entry in logs if entry["event"] == "exchange.warnings"]
    assert warned == [
        {
            "event": "exchange.warnings",
            "log_level": "warning",
            "cmdlet": "Add-DistributionGroupMember",
            "warnings": ["The group is being migrated."],
        }
    ]


async def test_wrong_secret_is_a_clear_credential_error(m365_factory: M365Factory) -> None:
    m365 = await m365_factory(graph={"client_secret": "Wr0ng-secret-value-for-the-sandbox"})
    with pytest.raises(CredentialError, match="client secret is wrong"):
        await m365.directory.get_user("sasha.verhoeven@example.edu")


async def test_access_policy_check(m365: Microsoft365, tenant: SandboxTenant) -> None:
    app_id = tenant.seed.app_ids["Syncwarden"]
    inside = "avery.quinlan@example.edu"  # a member of the mail-enabled Calendar Sync group
    outside = "sasha.verhoeven@example.edu"
    assert await m365.exchange.test_application_access_policy(inside, app_id)
    assert not await m365.exchange.test_application_access_policy(outside, app_id)


async def test_mailbox_presence(m365: Microsoft365, tenant: SandboxTenant) -> None:
    assert await m365.directory.has_mailbox(tenant.seed.user_ids["avery.quinlan@example.edu"])
    assert not await m365.directory.has_mailbox(tenant.seed.user_ids["harper.osei@example.edu"])
    outside_policy = tenant.seed.user_ids["sasha.verhoeven@example.edu"]
    assert await m365.directory.has_mailbox(outside_policy), (
        "403 from the access policy still means a mailbox"
    )


async def test_removing_someone_exchange_cannot_resolve_is_not_a_member_but_a_lost_group_fails(
    m365: Microsoft365,
) -> None:
    """Harper has no mailbox and no address: Exchange answers ``Couldn't find object`` for her
    (ManagementObjectNotFoundException naming the member), and someone who is no recipient is
    in no group, so the removal has nothing to do. Naming a group that is not there still fails:
    that is a wrong setting, not a finished removal."""
    assert not await m365.exchange.remove_group_member(
        SYNC_GROUP_ADDRESS, "harper.osei@example.edu"
    )
    with pytest.raises(NotFoundError):
        await m365.exchange.remove_group_member(
            "no-such-group@example.edu", "sasha.verhoeven@example.edu"
        )
