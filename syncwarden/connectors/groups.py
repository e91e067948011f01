"""Membership of the sync group through whichever service can change it.

The group's kind is looked up once: security and Microsoft 365 groups are changed through Graph,
mail-enabled security groups (and distribution lists) through Exchange Online, because Graph
refuses to write them. When a write is refused for lack of rights, the error says which
permission or role the app registration is missing, so IT can fix it without a support ticket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from syncwarden.connectors.errors import (
    AccessDeniedError,
    AuthenticationError,
    BadRequestError,
    PermissionMissingError,
)
from syncwarden.connectors.exchange.client import MEMBERSHIP_ROLE, ExchangeAdminClient
from syncwarden.connectors.graph.directory import GraphDirectory
from syncwarden.connectors.ports import DirectoryGroup, DirectoryUser, GroupMember, MembershipChange

GRAPH_WRITE_HINT = (
    "the app registration needs the Microsoft Graph application permission "
    "GroupMember.ReadWrite.All, with admin consent"
)
GRAPH_WRITE_PERMISSION = "Microsoft Graph application permission GroupMember.ReadWrite.All"
EXCHANGE_APP_PERMISSION = "Office 365 Exchange Online application permission Exchange.ManageAsApp"
EXCHANGE_WRITE_HINT = (
    f"the app registration needs the {EXCHANGE_APP_PERMISSION} (with admin consent) and, inside "
    f"Exchange Online, the {MEMBERSHIP_ROLE}: -BypassSecurityGroupManagerCheck needs one of them "
    "(Recipient Management is not enough)"
)


class MembershipRefusedError(PermissionMissingError):
    """A membership change was refused; the message and ``permission`` name what is missing."""


class SyncGroupMembership:
    """The :class:`connectors.ports.GroupMembership` port for one configured group."""

    def __init__(
        self, directory: GraphDirectory, exchange: ExchangeAdminClient | None, group_id: str
    ) -> None:
        self._directory = directory
        self._exchange = exchange
        self._group_id = group_id
        self._group: DirectoryGroup | None = None
        self._lock = asyncio.Lock()

    async def group(self) -> DirectoryGroup:
        """The sync group as Graph describes it; fetched once, then remembered."""
        async with self._lock:
            if self._group is None:
                self._group = await self._directory.get_group(self._group_id)
            return self._group

    async def write_path(self) -> str:
        """``graph`` or ``exchange``: which service this group's membership is changed through."""
        return "graph" if (await self.group()).kind.writable_through_graph else "exchange"

    async def add_member(self, user: DirectoryUser) -> MembershipChange:
        group = await self.group()
        if group.kind.writable_through_graph:
            return await self._graph_write(self._directory.add_member(group.id, user.id))
        exchange, identity = self._exchange_target(group)
        changed = await self._exchange_write(
            exchange.add_group_member(identity, user.user_principal_name)
        )
        return MembershipChange(user.id, changed=changed, path="exchange")

    async def remove_member(self, user: DirectoryUser) -> MembershipChange:
        group = await self.group()
        if group.kind.writable_through_graph:
            return await self._graph_write(self._directory.remove_member(group.id, user.id))
        exchange, identity = self._exchange_target(group)
        changed = await self._exchange_write(
            exchange.remove_group_member(identity, user.user_principal_name)
        )
        return MembershipChange(user.id, changed=changed, path="exchange")

    async def is_member(self, user: DirectoryUser) -> bool:
        # Graph can read every kind of group, and reads need no Exchange role.
        return await self._directory.is_member(self._group_id, user.id)

    async def members(self) -> Sequence[GroupMember]:
        return await self._directory.members(self._group_id)

    def _exchange_target(self, group: DirectoryGroup) -> tuple[ExchangeAdminClient, str]:
        if self._exchange is None:
            raise MembershipRefusedError(
                f"the sync group '{group.display_name}' is mail-enabled, so only Exchange Online "
                "can change its membership, and Exchange is not configured"
            )
        return self._exchange, group.mail or group.id

    async def _graph_write(self, call: Awaitable[MembershipChange]) -> MembershipChange:
        try:
            return await call
        except AccessDeniedError as error:
            raise self._refused(error, GRAPH_WRITE_HINT, GRAPH_WRITE_PERMISSION) from None
        except BadRequestError as error:
            if "mail-enabled" in error.message.lower():
                self._group = None  # the group changed kind since we looked; look again next time
            raise

    async def _exchange_write(self, call: Awaitable[bool]) -> bool:
        try:
            return await call
        except PermissionMissingError as error:
            # Exchange named what its own RBAC refused: the role, not the app permission.
            permission = error.permission or MEMBERSHIP_ROLE
            hint = (
                f"the app's service principal needs the {permission}, assigned in Exchange "
                "Online (Exchange admin center > Roles > Admin roles), not in the app registration"
            )
            raise self._refused(error, hint, permission) from None
        except (AccessDeniedError, AuthenticationError) as error:
            raise self._refused(
                error, EXCHANGE_WRITE_HINT, f"{EXCHANGE_APP_PERMISSION} and {MEMBERSHIP_ROLE}"
            ) from None

    def _refused(
        self, error: AccessDeniedError | AuthenticationError, hint: str, permission: str
    ) -> MembershipRefusedError:
        return MembershipRefusedError(
            f"changing the sync group's membership was refused: {hint} ({error.message})",
            permission=permission,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            request=error.request,
        )
