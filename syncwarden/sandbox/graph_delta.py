"""Directory delta queries: ``GET /users/delta`` and ``GET /groups/delta``.

Each round keeps a snapshot of what it returned (only the ``$select``-ed properties, and for
groups the members) behind an opaque token; the next round diffs the directory against it. That
is how Graph behaves as its pages describe it (delta-query-overview, delta-query-users,
delta-query-groups, user-delta, group-delta):

- query options are given once; ``@odata.nextLink`` / ``@odata.deltaLink`` carry them after;
- only selected properties are tracked: a change to another one does not bring the user back;
- a soft-deleted user comes as ``{"id", "@removed": {"reason": "changed"}}``, a permanently
  deleted one with reason ``deleted``, a restored one as a plain object;
- ``Prefer: return=minimal`` returns only the properties that changed (``null`` when cleared);
- ``$deltatoken=latest`` answers only a deltaLink;
- ``$filter`` takes ``id eq '…'`` joined by ``or`` only, at most 50 ids; ``$top`` is ignored;
- ``members@delta`` lists current members on the first round, then additions (plain) and
  removals (``@removed``); a large group's members are split over pages, the group repeated;
  a soft-deleted user keeps its memberships here until it is deleted for good.

Unknown tokens are answered as ``DirectoryDeltaSettings.expiry`` says.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import GraphRequest, GraphResponse, ok
from syncwarden.sandbox.odata import (
    Compare,
    FilterError,
    GraphError,
    JsonDict,
    Literal,
    Logical,
    Node,
    Path,
    parse_filter,
    parse_select,
    unsupported_query,
)
from syncwarden.sandbox.state import (
    GROUP_PROPERTIES,
    USER_DEFAULT,
    USER_PROPERTIES,
    Group,
    TenantState,
)

ALLOWED_OPTIONS = frozenset({"$select", "$filter", "$deltatoken", "$skiptoken", "$top"})
MAX_FILTER_IDS = 50
EXPIRED_MESSAGE = (
    "The sync state generation is not found. The delta token is expired and data must be "
    "synchronized again."
)
RESYNC_MESSAGE = "The delta token is no longer valid. The application must reset the sync state."
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"


@dataclass(frozen=True)
class UsersRound:
    """What a users/delta round handed out: the tracked properties of each user it knows."""

    select: tuple[str, ...]
    ids: frozenset[str] | None
    active: dict[str, JsonDict]
    soft_deleted: frozenset[str]


@dataclass(frozen=True)
class GroupsRound:
    """What a groups/delta round handed out: each group's properties and members."""

    select: tuple[str, ...]
    track_members: bool
    ids: frozenset[str] | None
    groups: dict[str, JsonDict]
    members: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Pending:
    """The rest of a round still to be paged out, and the round that ends it."""

    pages: list[list[JsonDict]]
    done: UsersRound | GroupsRound


def _options(req: GraphRequest) -> dict[str, str]:
    lowered = {name.lower(): value for name, value in req.query.items()}
    for name in lowered:
        if name.startswith("$") and name not in ALLOWED_OPTIONS:
            raise unsupported_query(f"The query option '{name}' is not supported with delta.")
    return lowered


def _filter_ids(raw: str | None) -> frozenset[str] | None:
    """``id eq 'a' or id eq 'b'``; anything else is 400 ``Request_UnsupportedQuery``."""
    if raw is None:
        return None
    try:
        node = parse_filter(raw)
    except FilterError as exc:
        raise unsupported_query() from exc
    ids: list[str] = []

    def collect(part: Node) -> None:
        if isinstance(part, Logical) and part.op == "or":
            collect(part.left)
            collect(part.right)
            return
        if (
            isinstance(part, Compare)
            and part.op == "eq"
            and isinstance(part.left, Path)
            and part.left.segments == ("id",)
            and isinstance(part.right, Literal)
            and isinstance(part.right.value, str)
        ):
            ids.append(part.right.value.lower())
            return
        raise unsupported_query()

    collect(node)
    if len(set(ids)) > MAX_FILTER_IDS:
        raise unsupported_query(
            f"There is a limit of {MAX_FILTER_IDS} filtered objects; {len(set(ids))} were given."
        )
    return frozenset(ids)


def _keep(object_id: str, ids: frozenset[str] | None) -> bool:
    return ids is None or object_id.lower() in ids


def _removed(object_id: str, reason: str, odata_type: str | None = None) -> JsonDict:
    item: JsonDict = {"@odata.type": odata_type} if odata_type else {}
    return {**item, "id": object_id, "@removed": {"reason": reason}}


def _render(object_id: str, props: Mapping[str, Any], old: Mapping[str, Any] | None) -> JsonDict:
    """All tracked properties that are set; with ``old`` (return=minimal) only changed ones."""
    if old is None:
        return {"id": object_id, **{k: v for k, v in props.items() if v is not None}}
    return {"id": object_id, **{k: v for k, v in props.items() if old.get(k) != v}}


def _minimal(req: GraphRequest) -> bool:
    prefer = ",".join(req.headers.getall("Prefer", [])).lower()
    return "return=minimal" in prefer.replace(" ", "")


class DirectoryDelta:
    """The two delta functions; server-side rounds live in ``state.directory_delta_tokens``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def state(self) -> TenantState:
        return self.ctx.state

    # ------------------------------------------------------------ tokens and pages

    def _expired(self, resource: str) -> GraphError:
        style = self.state.directory_delta.expiry
        if style == "gone":
            location = f"{self.ctx.base_url}/v1.0/{resource}/delta?$deltatoken="
            return GraphError(410, "resyncRequired", RESYNC_MESSAGE, {"Location": location})
        if style == "resync_required":
            return GraphError(400, "resyncRequired", RESYNC_MESSAGE)
        return GraphError(400, "syncStateNotFound", EXPIRED_MESSAGE)

    def _lookup(self, kind: str, token: str, resource: str) -> Any:
        found = self.state.directory_delta_tokens.get(token)
        if found is None or found[0] != kind or found[1] != resource:
            raise self._expired(resource)
        return found[2]

    def _page(self, resource: str, pending: Pending) -> GraphResponse:
        tokens = self.state.directory_delta_tokens
        link = f"{self.ctx.base_url}/v1.0/{resource}/delta"
        body: JsonDict = {"@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#{resource}"}
        first, rest = (pending.pages[0], pending.pages[1:]) if pending.pages else ([], [])
        token = secrets.token_urlsafe(24)
        if rest:
            tokens[token] = ("skip", resource, Pending(rest, pending.done))
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}"
        else:
            tokens[token] = ("delta", resource, pending.done)
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token}"
        body["value"] = first
        return ok(body)

    def expire(self) -> int:
        count = len(self.state.directory_delta_tokens)
        self.state.directory_delta_tokens.clear()
        return count

    # ------------------------------------------------------------ users

    def _users_now(self, done: UsersRound) -> UsersRound:
        active: dict[str, JsonDict] = {}
        for user in self.state.users.values():
            if _keep(user.id, done.ids):
                graph = user.to_graph()
                active[user.id] = {name: graph[name] for name in done.select}
        soft = frozenset(i for i in self.state.deleted_users if _keep(i, done.ids))
        return UsersRound(done.select, done.ids, active, soft)

    def _user_pages(self, items: list[JsonDict]) -> list[list[JsonDict]]:
        size = max(1, self.state.directory_delta.page_size)
        return [items[i : i + size] for i in range(0, len(items), size)] or [[]]

    async def users(self, req: GraphRequest) -> GraphResponse:
        options = _options(req)
        if "$skiptoken" in options:
            return self._page("users", self._lookup("skip", options["$skiptoken"], "users"))
        token = options.get("$deltatoken")
        if token is not None and token.lower() != "latest":
            before: UsersRound = self._lookup("delta", token, "users")
            after = self._users_now(before)
            changes = self._user_changes(before, after, _minimal(req))
            return self._page("users", Pending(self._user_pages(changes), after))
        select = parse_select(
            options.get("$select"), USER_PROPERTIES, "microsoft.graph.user", "Request_BadRequest"
        )
        chosen = tuple(dict.fromkeys(["id", *(select or USER_DEFAULT)]))
        start = self._users_now(
            UsersRound(chosen, _filter_ids(options.get("$filter")), {}, frozenset())
        )
        if token is not None:  # $deltatoken=latest: sync from now, no data
            return self._page("users", Pending([[]], start))
        items = [_render(i, props, None) for i, props in start.active.items()]
        return self._page("users", Pending(self._user_pages(items), start))

    @staticmethod
    def _user_changes(before: UsersRound, after: UsersRound, minimal: bool) -> list[JsonDict]:
        items: list[JsonDict] = []
        for user_id, props in after.active.items():
            old = before.active.get(user_id)
            if old != props:
                items.append(_render(user_id, props, old if minimal else None))
        for user_id in [*before.active, *before.soft_deleted]:
            if user_id in after.active:
                continue
            if user_id in after.soft_deleted:
                if user_id in before.active:
                    items.append(_removed(user_id, "changed"))
            else:
                items.append(_removed(user_id, "deleted"))
        return items

    # ------------------------------------------------------------ groups

    def _members_seen(self, group: Group) -> dict[str, str]:
        """Members as group delta counts them: soft-deleted users included."""
        state = self.state
        seen: dict[str, str] = {}
        for member_id in group.members:
            if member_id in state.users:
                seen[member_id] = USER_TYPE
            elif member_id in state.groups:
                seen[member_id] = GROUP_TYPE
            elif member_id in state.service_principals:
                seen[member_id] = "#microsoft.graph.servicePrincipal"
        for user_id, deleted in state.deleted_users.items():
            if group.id in deleted.groups:
                seen[user_id] = USER_TYPE
        return seen

    def _exists(self, object_id: str) -> bool:
        s = self.state
        return any(
            object_id in known
            for known in (s.users, s.deleted_users, s.groups, s.service_principals)
        )

    def _groups_now(self, done: GroupsRound) -> GroupsRound:
        groups: dict[str, JsonDict] = {}
        members: dict[str, dict[str, str]] = {}
        report_deleted = self.state.directory_delta.report_deleted_members
        for group in self.state.groups.values():
            if not _keep(group.id, done.ids):
                continue
            graph = group.to_graph()
            groups[group.id] = {name: graph[name] for name in done.select}
            seen = self._members_seen(group) if done.track_members else {}
            if not report_deleted:
                # The reported bug: a member deleted for good is never reported as removed.
                for member_id, kind in done.members.get(group.id, {}).items():
                    if member_id not in seen and not self._exists(member_id):
                        seen[member_id] = kind
            members[group.id] = seen
        return GroupsRound(done.select, done.track_members, done.ids, groups, members)

    def _group_pages(self, entries: list[tuple[JsonDict, list[JsonDict]]]) -> list[list[JsonDict]]:
        """Split members@delta in slices, repeating the group, and fill pages up to the sizes."""
        settings = self.state.directory_delta
        slice_size = max(1, settings.member_page_size)
        units: list[tuple[JsonDict, int]] = []
        for head, members in entries:
            if not members:
                units.append((head, 0))
                continue
            for start in range(0, len(members), slice_size):
                part = members[start : start + slice_size]
                units.append(({**head, "members@delta": part}, len(part)))
        pages: list[list[JsonDict]] = []
        current: list[JsonDict] = []
        weight = 0
        for unit, size in units:
            full = len(current) >= settings.page_size or (weight + size > slice_size and current)
            if full:
                pages.append(current)
                current, weight = [], 0
            current.append(unit)
            weight += size
        pages.append(current)
        return pages

    async def groups(self, req: GraphRequest) -> GraphResponse:
        options = _options(req)
        if "$skiptoken" in options:
            return self._page("groups", self._lookup("skip", options["$skiptoken"], "groups"))
        token = options.get("$deltatoken")
        if token is not None and token.lower() != "latest":
            before: GroupsRound = self._lookup("delta", token, "groups")
            after = self._groups_now(before)
            entries = self._group_changes(before, after, _minimal(req))
            return self._page("groups", Pending(self._group_pages(entries), after))
        select = parse_select(
            options.get("$select"),
            (*GROUP_PROPERTIES, "members"),
            "microsoft.graph.group",
            "Request_BadRequest",
        )
        names = list(select) if select is not None else [*GROUP_PROPERTIES, "members"]
        track = "members" in names
        chosen = tuple(dict.fromkeys(["id", *(n for n in names if n != "members")]))
        start = self._groups_now(
            GroupsRound(chosen, track, _filter_ids(options.get("$filter")), {}, {})
        )
        if token is not None:
            return self._page("groups", Pending([[]], start))
        entries = [
            (_render(gid, props, None), _member_entries(start.members[gid].items(), None))
            for gid, props in start.groups.items()
        ]
        return self._page("groups", Pending(self._group_pages(entries), start))

    @staticmethod
    def _group_changes(
        before: GroupsRound, after: GroupsRound, minimal: bool
    ) -> list[tuple[JsonDict, list[JsonDict]]]:
        entries: list[tuple[JsonDict, list[JsonDict]]] = []
        for gid, props in after.groups.items():
            old_props = before.groups.get(gid)
            old_members = before.members.get(gid)
            new_members = after.members[gid]
            if old_props == props and old_members == new_members:
                continue
            if old_props is None:
                entries.append((_render(gid, props, None), _member_entries(new_members.items())))
                continue
            head = _render(gid, props, old_props if minimal else None)
            added = [(m, t) for m, t in new_members.items() if m not in (old_members or {})]
            gone = [(m, t) for m, t in (old_members or {}).items() if m not in new_members]
            entries.append((head, _member_entries(added, gone)))
        for gid in before.groups:
            if gid not in after.groups:
                entries.append((_removed(gid, "deleted"), []))
        return entries


def _member_entries(
    added: Iterable[tuple[str, str]], removed: Iterable[tuple[str, str]] | None = None
) -> list[JsonDict]:
    entries: list[JsonDict] = [{"@odata.type": kind, "id": mid} for mid, kind in added]
    entries += [_removed(mid, "deleted", kind) for mid, kind in removed or ()]
    return entries
