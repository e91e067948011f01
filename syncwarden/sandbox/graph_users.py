"""Graph users: lookup by id or UPN, and the address-lookup filter the product relies on."""

from __future__ import annotations

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import (
    READ_DIRECTORY_USERS,
    GraphRequest,
    GraphResponse,
    Route,
    ok,
    paged,
)
from syncwarden.sandbox.graph_delta import DirectoryDelta
from syncwarden.sandbox.graph_directory import (
    DirectoryRules,
    check_options,
    run_query,
    select_and_top,
    shape,
)
from syncwarden.sandbox.odata import not_found, parse_select, project
from syncwarden.sandbox.state import USER_DEFAULT, USER_PROPERTIES, iso

USER_TYPE = "microsoft.graph.user"
READ_USERS = (*READ_DIRECTORY_USERS, "User.ReadBasic.All")
# From the user table of https://learn.microsoft.com/graph/aad-advanced-queries: these three are
# indexed only in the advanced store; these have no startsWith; displayName and
# userPrincipalName sort by default, createdDateTime only in advanced queries.
DELETED_USER_PROPERTIES = (*USER_PROPERTIES, "deletedDateTime")
# user-list-manager: "Returns 404 Not Found" when no manager is assigned, with this text (public
# issue reports quoting the product team, e.g. microsoftgraph/aspnet-snippets-sample#6).
NO_MANAGER = "manager"
USER_RULES = DirectoryRules(
    type_name=USER_TYPE,
    resource="User",
    properties=USER_PROPERTIES,
    advanced_eq=frozenset({"mobilePhone", "officeLocation", "preferredLanguage"}),
    no_prefix=frozenset(
        {"accountEnabled", "businessPhones", "createdDateTime", "id", "jobTitle", "userType"}
    ),
    sort_default=frozenset({"displayName", "userPrincipalName"}),
    sort_advanced=frozenset({"createdDateTime"}),
)


def missing(key: str) -> Exception:
    return not_found(
        f"Resource '{key}' does not exist or one of its queried reference-property objects are "
        "not present."
    )


def context_name(entity_set: str, select: list[str] | None, single: bool = False) -> str:
    suffix = f"({','.join(select)})" if select else ""
    return f"{entity_set}{suffix}{'/$entity' if single else ''}"


class UsersFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        delta = DirectoryDelta(self.ctx)
        return [
            Route("GET", "/users", self.list_users, READ_USERS),
            # Before /users/{user}, which would otherwise take "delta" for a user key.
            Route("GET", "/users/delta", delta.users, READ_DIRECTORY_USERS),
            Route("GET", "/users/microsoft.graph.delta", delta.users, READ_DIRECTORY_USERS),
            Route("GET", "/users/{user}", self.get_user, READ_USERS),
            Route("GET", "/users/{user}/manager", self.manager, READ_DIRECTORY_USERS),
            Route(
                "GET",
                "/directory/deletedItems/microsoft.graph.user",
                self.deleted_users,
                READ_DIRECTORY_USERS,
            ),
            Route("GET", "/directory/deletedItems/{item}", self.deleted_item, READ_DIRECTORY_USERS),
        ]

    async def manager(self, req: GraphRequest) -> GraphResponse:
        """``GET /users/{id}/manager``: the manager as a directoryObject, or 404 naming
        'manager' when none is set (or the manager is no longer an active user)."""
        check_options(req, {"$select", "$expand"})
        select = parse_select(
            req.query.get("$select"), USER_PROPERTIES, USER_TYPE, "Request_BadRequest"
        )
        user = self.ctx.state.user(req.params["user"])
        if user is None:
            raise missing(req.params["user"])
        manager = self.ctx.state.users.get(user.manager_id or "")
        if manager is None:
            raise missing(NO_MANAGER)
        return ok(
            {
                "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#directoryObjects/$entity",
                "@odata.type": "#microsoft.graph.user",
                **project(manager.to_graph(), select, USER_DEFAULT),
            }
        )

    def _deleted_graph(self) -> dict[str, dict[str, object]]:
        return {
            user_id: {**d.user.to_graph(), "deletedDateTime": iso(d.deleted)}
            for user_id, d in self.ctx.state.deleted_users.items()
        }

    async def deleted_users(self, req: GraphRequest) -> GraphResponse:
        """``GET /directory/deletedItems/microsoft.graph.user`` (the cast is required)."""
        check_options(req, {"$select", "$top", "$skiptoken"})
        select, top = select_and_top(req, DELETED_USER_PROPERTIES, USER_TYPE)
        items = shape(list(self._deleted_graph().values()), select, USER_DEFAULT)
        context = "directory/deletedItems/microsoft.graph.user"
        return ok(paged(self.ctx, req, items, context, top=top))

    async def deleted_item(self, req: GraphRequest) -> GraphResponse:
        """``GET /directory/deletedItems/{id}``: 200 while soft-deleted, then 404."""
        check_options(req, {"$select"})
        select = parse_select(
            req.query.get("$select"), DELETED_USER_PROPERTIES, USER_TYPE, "Request_BadRequest"
        )
        found = self._deleted_graph().get(req.params["item"].lower()) or self._deleted_graph().get(
            req.params["item"]
        )
        if found is None:
            raise missing(req.params["item"])
        return ok(
            {
                "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#directoryObjects/$entity",
                "@odata.type": "#microsoft.graph.user",
                **project(found, select, (*USER_DEFAULT, "deletedDateTime")),
            }
        )

    async def get_user(self, req: GraphRequest) -> GraphResponse:
        check_options(req, {"$select", "$expand"})
        select = parse_select(
            req.query.get("$select"), USER_PROPERTIES, USER_TYPE, "Request_BadRequest"
        )
        user = self.ctx.state.user(req.params["user"])
        if user is None:
            raise missing(req.params["user"])
        body = {
            "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#"
            f"{context_name('users', select, True)}",
            **project(user.to_graph(), select, USER_DEFAULT),
        }
        return ok(body)

    async def list_users(self, req: GraphRequest) -> GraphResponse:
        check_options(req)
        users = (u.to_graph() for u in self.ctx.state.users.values())
        items, select, top, count = run_query(req, users, USER_RULES)
        return ok(
            paged(
                self.ctx,
                req,
                shape(items, select, USER_DEFAULT),
                context_name("users", select),
                top=top,
                count=count,
            )
        )
