"""People and groups in Entra ID, through Graph.

Membership writes are idempotent by our handling: adding someone who is already a member, or
removing someone who is not, reports ``changed=False`` instead of failing, so a provisioning step
can be repeated after a crash without special cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syncwarden.connectors.errors import (
    AlreadyExistsError,
    BadRequestError,
    ConnectorError,
    MailboxAccessDeniedError,
    MailboxNotEnabledError,
    NotFoundError,
    TransientError,
)
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.odata import address_filter, quote
from syncwarden.connectors.graph.paths import segment
from syncwarden.connectors.ports import (
    DirectoryGroup,
    DirectoryUser,
    GroupKind,
    GroupMember,
    MembershipChange,
)

USER_FIELDS = "id,displayName,userPrincipalName,mail,accountEnabled,proxyAddresses,otherMails"
GROUP_FIELDS = "id,displayName,groupTypes,mailEnabled,securityEnabled,mail,mailNickname"
MEMBER_FIELDS = "id,displayName,userPrincipalName,mail"
MAX_MEMBERS_PER_PATCH = 20
PAGE_SIZE = "999"
_MISSING_PHRASE = "do not exist"


class AmbiguousAddressError(ConnectorError):
    """Several directory users claim the same address."""


def classify_group(
    group_types: Sequence[str], mail_enabled: bool, security_enabled: bool
) -> GroupKind:
    """The kind of a group, which decides whether Graph or Exchange changes its membership."""
    if any(kind.lower() == "unified" for kind in group_types):
        return GroupKind.MICROSOFT_365
    if mail_enabled and security_enabled:
        return GroupKind.MAIL_ENABLED_SECURITY
    if mail_enabled:
        return GroupKind.DISTRIBUTION
    return GroupKind.SECURITY


def user_from_graph(data: dict[str, Any]) -> DirectoryUser:
    return DirectoryUser(
        id=data["id"],
        display_name=data.get("displayName") or "",
        user_principal_name=data.get("userPrincipalName") or "",
        mail=data.get("mail"),
        account_enabled=bool(data.get("accountEnabled", True)),
        proxy_addresses=tuple(data.get("proxyAddresses") or ()),
        other_mails=tuple(data.get("otherMails") or ()),
    )


def group_from_graph(data: dict[str, Any]) -> DirectoryGroup:
    return DirectoryGroup(
        id=data["id"],
        display_name=data.get("displayName") or "",
        kind=classify_group(
            data.get("groupTypes") or [],
            bool(data.get("mailEnabled")),
            bool(data.get("securityEnabled")),
        ),
        mail=data.get("mail"),
        mail_nickname=data.get("mailNickname"),
    )


def member_from_graph(data: dict[str, Any]) -> GroupMember:
    return GroupMember(
        id=data["id"],
        display_name=data.get("displayName"),
        user_principal_name=data.get("userPrincipalName"),
        mail=data.get("mail"),
        odata_type=data.get("@odata.type", "#microsoft.graph.user"),
    )


class GraphDirectory:
    def __init__(self, client: GraphClient) -> None:
        self._client = client

    async def get_user(self, id_or_upn: str) -> DirectoryUser:
        """By object id or UPN; any other address is a 404 here (use find_user_by_address)."""
        data = await self._client.get(
            f"users/{segment(id_or_upn)}", params={"$select": USER_FIELDS}
        )
        return user_from_graph(data)

    async def find_user_by_address(self, address: str) -> DirectoryUser | None:
        """The one user with this address in any form, or None; several matches are an error."""
        cleaned = address.strip()
        if "@" not in cleaned or any(ch.isspace() or ord(ch) < 32 for ch in cleaned):
            return None
        found = await self._client.collect(
            "users",
            params={"$filter": address_filter(cleaned), "$select": USER_FIELDS, "$top": "5"},
        )
        users = {item["id"]: user_from_graph(item) for item in found}
        if len(users) > 1:
            names = ", ".join(sorted(user.user_principal_name for user in users.values()))
            raise AmbiguousAddressError(f"the address {cleaned} belongs to several people: {names}")
        return next(iter(users.values()), None)

    async def has_mailbox(self, user_id: str) -> bool:
        """Ask for one event id: only a REST-enabled Exchange Online mailbox can answer.

        A 403 ``ErrorAccessDenied`` still proves the mailbox exists: the application access policy
        keeps us out until the person joins the sync group, which is what enrollment is for.
        """
        try:
            await self._client.get(
                f"users/{segment(user_id)}/events",
                params={"$select": "id", "$top": "1"},
                mailbox=user_id,
            )
        except MailboxAccessDeniedError:
            return True
        except (MailboxNotEnabledError, NotFoundError):
            return False
        return True

    async def find_group_by_name(self, display_name: str) -> list[DirectoryGroup]:
        found = await self._client.collect(
            "groups",
            params={"$filter": f"displayName eq {quote(display_name)}", "$select": GROUP_FIELDS},
        )
        return [group_from_graph(item) for item in found]

    async def get_group(self, group_id: str) -> DirectoryGroup:
        data = await self._client.get(
            f"groups/{segment(group_id)}", params={"$select": GROUP_FIELDS}
        )
        return group_from_graph(data)

    async def members(self, group_id: str, *, transitive: bool = False) -> list[GroupMember]:
        relation = "transitiveMembers" if transitive else "members"
        found = await self._client.collect(
            f"groups/{segment(group_id)}/{relation}",
            params={"$select": MEMBER_FIELDS, "$top": PAGE_SIZE},
        )
        return [member_from_graph(item) for item in found]

    async def is_member(self, group_id: str, user_id: str) -> bool:
        async for page in self._client.pages(
            f"groups/{segment(group_id)}/members", params={"$select": "id", "$top": PAGE_SIZE}
        ):
            if any(item.get("id", "").lower() == user_id.lower() for item in page):
                return True
        return False

    async def add_member(self, group_id: str, user_id: str) -> MembershipChange:
        try:
            await self._client.request(
                "POST",
                f"groups/{segment(group_id)}/members/$ref",
                json_body={"@odata.id": self._client.directory_object_url(user_id)},
                idempotent=True,  # a repeated add answers "already exists", which we accept
            )
        except AlreadyExistsError:
            return MembershipChange(user_id, changed=False, path="graph")
        except BadRequestError as error:
            raise _replication_delay(error) from None
        return MembershipChange(user_id, changed=True, path="graph")

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> list[MembershipChange]:
        """Add up to 20 people per request; falls back to one at a time if any is already a member.

        One bad member fails Graph's whole PATCH, and nothing is applied, so the fallback is safe.
        """
        changes: list[MembershipChange] = []
        for start in range(0, len(user_ids), MAX_MEMBERS_PER_PATCH):
            chunk = list(user_ids[start : start + MAX_MEMBERS_PER_PATCH])
            binds = [self._client.directory_object_url(user_id) for user_id in chunk]
            try:
                await self._client.request(
                    "PATCH", f"groups/{segment(group_id)}", json_body={"members@odata.bind": binds}
                )
            except (AlreadyExistsError, BadRequestError) as error:
                if isinstance(error, BadRequestError) and _MISSING_PHRASE not in error.message:
                    raise
                changes.extend([await self.add_member(group_id, user_id) for user_id in chunk])
                continue
            changes.extend(
                MembershipChange(user_id, changed=True, path="graph") for user_id in chunk
            )
        return changes

    async def remove_member(self, group_id: str, user_id: str) -> MembershipChange:
        """Remove one member (always through ``/$ref``: without it Graph deletes the user).

        Graph answers a non-member with the same 404 ``Request_ResourceNotFound`` naming the
        *group* that a missing group gets, so a 404 is "not a member" only once the group is
        known to exist; a deleted sync group must not look like a successful removal.
        """
        try:
            await self._client.request(
                "DELETE", f"groups/{segment(group_id)}/members/{segment(user_id)}/$ref"
            )
        except NotFoundError:
            await self._client.get(f"groups/{segment(group_id)}", params={"$select": "id"})
            return MembershipChange(user_id, changed=False, path="graph")
        except BadRequestError as error:
            if _MISSING_PHRASE in error.message.lower():
                return MembershipChange(user_id, changed=False, path="graph")
            raise
        return MembershipChange(user_id, changed=True, path="graph")


def _replication_delay(error: BadRequestError) -> ConnectorError:
    """A just-created group or user can be briefly unknown to the replica that served us."""
    if _MISSING_PHRASE in error.message.lower():
        return TransientError(
            f"the directory does not know this object yet (replication delay): {error.message}",
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            request=error.request,
        )
    return error
