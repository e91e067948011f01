"""What changed in the directory, read cheaply: users delta, one group's membership delta.

A steady round with nothing changed costs one request per delta (the stored deltaLink answers an
empty page with a new link). Query options go on the first request only; the links Graph hands
back carry them (user-delta). Reads are background work, so they ask Graph to throttle them
before interactive calls with ``x-ms-throttle-priority: low`` (the "Priority" section of
https://learn.microsoft.com/graph/throttling; it does not change the limits).

A stored link the service no longer knows is answered in more than one documented way: 400
``syncStateNotFound`` (the Microsoft 365 Developer blog on token lifetimes), "a 40X-series
error" with such a code (delta-query-overview), 410 Gone with a ``Location`` that is the initial
query again ("Synchronization reset"), ``resyncRequired`` (Graph's error list), and, in the
middle of paging, 400 ``Directory_ExpiredPageToken`` (public client code). Every one becomes
:class:`DeltaRestartRequiredError`: drop the link, run a full round, and compare it with what is
stored, because a full round does not report what was deleted while the link was dead. The
``Location`` is not followed: it is the same initial query this module builds itself.

Group delta is not trusted alone to find leavers: public issues report permanently deleted
members missing from ``members@delta`` (microsoft-graph-docs#14708), and soft-deleted users stay
members there by design. Users delta is the leaver signal, :meth:`member_ids` the ground truth.
"""

from __future__ import annotations

from syncwarden.connectors.errors import ConnectorError, DeltaExpiredError, NotFoundError
from syncwarden.connectors.graph.client import DeltaResult, GraphClient
from syncwarden.connectors.graph.directory_items import (
    USER_TYPE,
    member_entries,
    merge_user_changes,
    object_id,
)
from syncwarden.connectors.graph.odata import quote
from syncwarden.connectors.graph.paths import segment
from syncwarden.connectors.ports import Manager, MembershipDeltaRound, UserDeltaRound

USER_DELTA_FIELDS = "id,displayName,accountEnabled,mail,proxyAddresses,userPrincipalName"
GROUP_DELTA_FIELDS = "id,members"
MANAGER_FIELDS = "id,displayName,mail,userPrincipalName"
PAGE_SIZE = "999"
LOW_PRIORITY = {"x-ms-throttle-priority": "low"}
# Error codes (lower case) that mean "this link is dead, start over", beside the ones every
# delta shares (``connectors.graph.error_mapping``) and any 410.
_PAGE_EXPIRED_CODES = frozenset({"directory_expiredpagetoken"})
_NO_MANAGER = "'manager'"


class DeltaRestartRequiredError(DeltaExpiredError):
    """The stored delta link is no longer valid: start a full round and reconcile against it."""


def _restart(error: ConnectorError) -> DeltaRestartRequiredError:
    return DeltaRestartRequiredError(
        f"the directory no longer knows this delta link ({error.code or error.status}); "
        "start a full round",
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        request=error.request,
    )


class GraphDirectoryChanges:
    """Implements :class:`connectors.ports.DirectoryChanges` over Graph."""

    def __init__(self, client: GraphClient, *, background: bool = True) -> None:
        self._client = client
        self._headers = LOW_PRIORITY if background else {}

    async def _round(self, start: str, link: str | None, params: dict[str, str]) -> DeltaResult:
        try:
            return await self._client.delta(
                link or start, params=None if link else params, headers=self._headers
            )
        except DeltaExpiredError as error:
            raise _restart(error) from None
        except ConnectorError as error:
            if (error.code or "").lower() in _PAGE_EXPIRED_CODES or error.status == 410:
                raise _restart(error) from None
            raise

    async def user_changes(self, delta_link: str | None = None) -> UserDeltaRound:
        """One users/delta round from ``delta_link``, or a first (full) round without one."""
        result = await self._round("users/delta", delta_link, {"$select": USER_DELTA_FIELDS})
        return UserDeltaRound(merge_user_changes(result.items), result.delta_link, result.requests)

    async def users_from_now(self) -> str:
        """A deltaLink that starts now, without reading anyone (``$deltaToken=latest``)."""
        result = await self._round(
            "users/delta", None, {"$select": USER_DELTA_FIELDS, "$deltaToken": "latest"}
        )
        return result.delta_link

    async def member_changes(
        self, group_id: str, delta_link: str | None = None
    ) -> MembershipDeltaRound:
        """One membership round for ``group_id`` (users only; nested groups are left out)."""
        wanted = object_id({"id": group_id})
        result = await self._round(
            "groups/delta",
            delta_link,
            {"$filter": f"id eq {quote(wanted)}", "$select": GROUP_DELTA_FIELDS},
        )
        added, removed, group_removed = member_entries(result.items, wanted)
        both = frozenset(added) & frozenset(removed)
        return MembershipDeltaRound(
            added=frozenset(added) - both,
            removed=frozenset(removed) - both,
            uncertain=both,
            delta_link=result.delta_link,
            requests=result.requests,
            group_removed=group_removed,
        )

    async def member_ids(self, group_id: str) -> frozenset[str]:
        """The group's direct user members, read in full (first runs and periodic ground truth).

        Plain ``/members`` (no cast, no ConsistencyLevel: the advanced-query index may lag) with
        ``$top=999``, following every nextLink; the type is told apart locally.
        """
        found: set[str] = set()
        async for page in self._client.pages(
            f"groups/{segment(group_id)}/members",
            params={"$select": "id", "$top": PAGE_SIZE},
            headers=self._headers,
        ):
            for item in page:
                kind = item.get("@odata.type") if isinstance(item, dict) else None
                if not isinstance(kind, str) or kind.lower() == USER_TYPE.lower():
                    found.add(object_id(item))
        return frozenset(found)

    async def manager_of(self, user_id: str) -> Manager | None:
        """The user's manager, or None when none is set.

        Graph answers "no manager" with the same 404 ``Request_ResourceNotFound`` as "no such
        user", told apart only by the resource the message names ('manager'). A 404 that does
        not name it is checked against the user: still there means no manager; gone raises.
        """
        try:
            data = await self._client.get(
                f"users/{segment(user_id)}/manager",
                params={"$select": MANAGER_FIELDS},
                headers=self._headers,
            )
        except NotFoundError as error:
            if _NO_MANAGER not in error.message:
                await self._client.get(
                    f"users/{segment(user_id)}", params={"$select": "id"}, headers=self._headers
                )
            return None
        kind = data.get("@odata.type") if isinstance(data, dict) else None
        return Manager(
            id=object_id(data),
            display_name=data.get("displayName"),
            mail=data.get("mail"),
            user_principal_name=data.get("userPrincipalName"),
            is_user=not isinstance(kind, str) or kind.lower() == USER_TYPE.lower(),
        )
