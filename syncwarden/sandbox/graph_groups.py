"""Graph groups and membership writes, including the refusals that push us to Exchange.

Mail-enabled security groups and distribution lists are mastered in Exchange; Graph refuses
every membership write on them, which is why the product needs the Exchange path at all.
"""

from __future__ import annotations

import re
from typing import Any

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import (
    READ_GROUPS,
    WRITE_MEMBERS,
    GraphRequest,
    GraphResponse,
    Route,
    json_body,
    no_content,
    ok,
    paged,
)
from syncwarden.sandbox.graph_delta import DirectoryDelta
from syncwarden.sandbox.graph_directory import (
    DirectoryRules,
    advanced_enabled,
    advanced_query,
    check_options,
    run_query,
)
from syncwarden.sandbox.graph_users import context_name, missing
from syncwarden.sandbox.odata import GraphError, JsonDict, bad_request, parse_select, project
from syncwarden.sandbox.state import GROUP_PROPERTIES, USER_DEFAULT, USER_PROPERTIES, Group

GROUP_TYPE = "microsoft.graph.group"
DIRECTORY_OBJECT_TYPE = "microsoft.graph.directoryObject"
# https://learn.microsoft.com/graph/aad-advanced-queries: groups sort by displayName by default;
# booleans, dates and ids have no startsWith; endsWith exists for mail and proxyAddresses only.
GROUP_RULES = DirectoryRules(
    type_name=GROUP_TYPE,
    resource="Group",
    properties=GROUP_PROPERTIES,
    no_prefix=frozenset({"id", "mailEnabled", "securityEnabled", "createdDateTime", "visibility"}),
    sort_default=frozenset({"displayName"}),
)
MEMBER_RULES = DirectoryRules(
    type_name=DIRECTORY_OBJECT_TYPE,
    resource="DirectoryObject",
    properties=tuple(sorted(set(USER_PROPERTIES) | set(GROUP_PROPERTIES))),
    sort_advanced=frozenset({"displayName"}),
)
MAIL_ENABLED_REFUSAL = "Cannot Update a mail-enabled security groups and or distribution list."
ALREADY_EXISTS = (
    "One or more added object references already exist for the following modified properties: "
    "'members'."
)
MAX_BIND = 20
_REF = re.compile(
    r"^https://[^/]+(?:/[^/]+)*?/v1\.0/(?:directoryObjects|users|groups|servicePrincipals)/"
    r"(?P<id>[0-9a-fA-F-]{36})$"
)


def reference_id(value: Any) -> str:
    if not isinstance(value, str) or (match := _REF.match(value)) is None:
        raise bad_request(f"Invalid object identifier '{value}'.")
    return match.group("id").lower()


class GroupsFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        delta = DirectoryDelta(self.ctx)
        return [
            Route("GET", "/groups", self.list_groups, READ_GROUPS),
            # Before /groups/{group}, which would otherwise take "delta" for a group id.
            Route("GET", "/groups/delta", delta.groups, READ_GROUPS),
            Route("GET", "/groups/microsoft.graph.delta", delta.groups, READ_GROUPS),
            Route("GET", "/groups/{group}", self.get_group, READ_GROUPS),
            Route("PATCH", "/groups/{group}", self.patch_group, WRITE_MEMBERS),
            Route("GET", "/groups/{group}/members", self.members, READ_GROUPS),
            Route("GET", "/groups/{group}/transitiveMembers", self.transitive, READ_GROUPS),
            Route("POST", "/groups/{group}/members/$ref", self.add_ref, WRITE_MEMBERS),
            Route(
                "DELETE", "/groups/{group}/members/{member}/$ref", self.remove_ref, WRITE_MEMBERS
            ),
            Route(
                "DELETE", "/groups/{group}/members/{member}", self.remove_without_ref, WRITE_MEMBERS
            ),
        ]

    def group(self, key: str) -> Group:
        group = self.ctx.state.group(key)
        if group is None:
            raise missing(key)
        return group

    async def get_group(self, req: GraphRequest) -> GraphResponse:
        check_options(req, {"$select", "$expand"})
        select = parse_select(
            req.query.get("$select"), GROUP_PROPERTIES, GROUP_TYPE, "Request_BadRequest"
        )
        group = self.group(req.params["group"])
        return ok(
            {
                "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#"
                f"{context_name('groups', select, True)}",
                **project(group.to_graph(), select, GROUP_PROPERTIES),
            }
        )

    async def list_groups(self, req: GraphRequest) -> GraphResponse:
        check_options(req)
        groups = (g.to_graph() for g in self.ctx.state.groups.values())
        items, select, top, count = run_query(req, groups, GROUP_RULES)
        shaped = [project(i, select, GROUP_PROPERTIES) for i in items]
        return ok(
            paged(self.ctx, req, shaped, context_name("groups", select), top=top, count=count)
        )

    async def members(self, req: GraphRequest) -> GraphResponse:
        group = self.group(req.params["group"])
        return self._member_page(req, group.members)

    async def transitive(self, req: GraphRequest) -> GraphResponse:
        group = self.group(req.params["group"])
        return self._member_page(req, self.ctx.state.transitive_members(group))

    def _member_page(self, req: GraphRequest, ids: list[str]) -> GraphResponse:
        """Members lists accept $filter, $search and $orderby only as advanced queries
        (https://learn.microsoft.com/graph/api/group-list-members)."""
        check_options(req)
        needs_advanced = any(name in req.query for name in ("$filter", "$orderby"))
        if needs_advanced and not advanced_query(req):
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "Filter or sort on members requires ConsistencyLevel: eventual and $count=true.",
            )
        if "$search" in req.query and not advanced_enabled(req):
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "Request with $search query parameter only works through MSGraph with a special "
                "request header: 'ConsistencyLevel: eventual'",
            )
        objects = [o for i in ids if (o := self.ctx.state.directory_object(i)) is not None]
        chosen, select, top, count = run_query(req, objects, MEMBER_RULES)
        shaped: list[JsonDict] = []
        for obj in chosen:
            is_user = obj["@odata.type"] == "#microsoft.graph.user"
            allowed = USER_PROPERTIES if is_user else GROUP_PROPERTIES
            picked = [s for s in select if s in allowed] if select is not None else None
            shaped.append(project(obj, picked, USER_DEFAULT if is_user else GROUP_PROPERTIES))
        return ok(paged(self.ctx, req, shaped, "directoryObjects", top=top, count=count))

    def _writable(self, group: Group) -> None:
        if group.graph_read_only:
            raise bad_request(MAIL_ENABLED_REFUSAL)

    def _existing(self, object_id: str) -> str:
        state = self.ctx.state
        for known in (state.users, state.groups, state.service_principals):
            for key in known:
                if key.lower() == object_id:
                    return key
        raise missing(object_id)

    def _allowed_member(self, group: Group, member: str) -> None:
        """Which object kinds a group may contain (the groups-allowed-member-types table on
        https://learn.microsoft.com/graph/api/group-post-members); the refusal's exact text is
        not published."""
        if member == group.id:
            raise bad_request("A group cannot be a member of itself.")
        nested = self.ctx.state.groups.get(member)
        unified = "Unified" in group.groupTypes
        if nested is not None and ("Unified" in nested.groupTypes or unified):
            raise bad_request(
                "Microsoft 365 groups cannot be members of groups, and cannot contain groups."
            )
        if unified and member in self.ctx.state.service_principals:
            raise bad_request("Service principals cannot be members of Microsoft 365 groups.")

    async def add_ref(self, req: GraphRequest) -> GraphResponse:
        group = self.group(req.params["group"])
        body = json_body(req)
        self._writable(group)
        member = self._existing(reference_id(body.get("@odata.id")))
        if member in group.members:
            raise bad_request(ALREADY_EXISTS)
        self._allowed_member(group, member)
        self.ctx.state.add_members(group, [member])
        return no_content()

    def _member_of(self, group: Group, member_id: str) -> str:
        """The member's stored id; a non-member is 404 naming the group, as Graph answers."""
        lowered = member_id.lower()
        match = next((m for m in group.members if m.lower() == lowered), None)
        if match is None:
            raise missing(group.id)
        return match

    async def remove_ref(self, req: GraphRequest) -> GraphResponse:
        group = self.group(req.params["group"])
        self._writable(group)
        member = self._member_of(group, req.params["member"])
        self.ctx.state.remove_member(group, member)
        return no_content()

    async def remove_without_ref(self, req: GraphRequest) -> GraphResponse:
        """Without ``/$ref`` the URL addresses the member object itself: Graph deletes that object
        when the app may manage its kind, and answers 403 otherwise (the caution on
        https://learn.microsoft.com/graph/api/group-delete-members)."""
        group = self.group(req.params["group"])
        member = self._member_of(group, req.params["member"])
        state = self.ctx.state
        if member in state.users:
            needed = {"User.ReadWrite.All"}
        elif member in state.groups:
            needed = {"Group.ReadWrite.All"}
        else:
            needed = {"Application.ReadWrite.All"}
        if not set(req.claims.get("roles") or []) & needed:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        state.users.pop(member, None)
        state.groups.pop(member, None)
        state.service_principals.pop(member, None)
        for other in state.groups.values():
            state.remove_member(other, member)
        return no_content()

    async def patch_group(self, req: GraphRequest) -> GraphResponse:
        group = self.group(req.params["group"])
        body = json_body(req)
        other = {k for k in body if k != "members@odata.bind"}
        roles = set(req.claims.get("roles") or [])
        if other and not roles & {"Group.ReadWrite.All", "Directory.ReadWrite.All"}:
            raise GraphError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        for name in other:
            if name not in ("displayName", "description"):
                raise bad_request(
                    f"Property '{name}' is read-only or not supported by the sandbox for PATCH."
                )
        binds = body.get("members@odata.bind")
        new_members: list[str] = []
        if binds is not None:
            self._writable(group)
            if not isinstance(binds, list):
                raise bad_request("members@odata.bind must be an array of object URLs.")
            if len(binds) > MAX_BIND:
                raise bad_request(
                    f"The request contains {len(binds)} references; at most {MAX_BIND} object "
                    "references can be added in one request."
                )
            for ref in binds:
                member = self._existing(reference_id(ref))
                if member in group.members or member in new_members:
                    raise bad_request(ALREADY_EXISTS)
                self._allowed_member(group, member)
                new_members.append(member)
        for name in other:
            setattr(group, name, body[name])
        self.ctx.state.add_members(group, new_members)
        return no_content()
