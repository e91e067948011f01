"""Graph users: lookup by id or UPN, and the address-lookup filter the product relies on."""

from __future__ import annotations

from sandbox.context import Context
from sandbox.graph_core import READ_DIRECTORY_USERS, GraphRequest, GraphResponse, Route, ok, paged
from sandbox.graph_directory import (
    apply_orderby,
    apply_search,
    check_options,
    count_requested,
    directory_filter,
    filtered,
    select_and_top,
    shape,
)
from sandbox.odata import not_found, parse_select, project
from sandbox.state import USER_DEFAULT, USER_PROPERTIES

USER_TYPE = "microsoft.graph.user"
READ_USERS = (*READ_DIRECTORY_USERS, "User.ReadBasic.All")


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
        return [
            Route("GET", "/users", self.list_users, READ_USERS),
            Route("GET", "/users/{user}", self.get_user, READ_USERS),
        ]

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
        node = directory_filter(req, USER_TYPE, USER_PROPERTIES)
        select, top = select_and_top(req, USER_PROPERTIES, USER_TYPE)
        items = filtered((u.to_graph() for u in self.ctx.state.users.values()), node)
        items = apply_search(req, items)
        items = apply_orderby(req, items, ("displayName", "userPrincipalName"))
        count = len(items) if count_requested(req) else None
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
