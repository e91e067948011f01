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
from syncwarden.sandbox.graph_directory import DirectoryRules, check_options, run_query, shape
from syncwarden.sandbox.odata import not_found, parse_select, project
from syncwarden.sandbox.state import USER_DEFAULT, USER_PROPERTIES

USER_TYPE = "microsoft.graph.user"
READ_USERS = (*READ_DIRECTORY_USERS, "User.ReadBasic.All")
# From the user table of https://learn.microsoft.com/graph/aad-advanced-queries: these three are
# indexed only in the advanced store; these have no startsWith; displayName and
# userPrincipalName sort by default, createdDateTime only in advanced queries.
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
