"""Applications and service principals, read-only: the credential-expiry watcher's view."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import (
    READ_APPS,
    READ_DIRECTORY_USERS,
    GraphRequest,
    GraphResponse,
    Route,
    ok,
    paged,
)
from syncwarden.sandbox.graph_directory import (
    DirectoryRules,
    check_options,
    run_query,
    select_and_top,
)
from syncwarden.sandbox.graph_users import context_name, missing
from syncwarden.sandbox.odata import JsonDict, parse_select, project
from syncwarden.sandbox.state import (
    APPLICATION_PROPERTIES,
    SERVICE_PRINCIPAL_PROPERTIES,
    USER_DEFAULT,
    USER_PROPERTIES,
    Application,
    ServicePrincipal,
)

_Owned = TypeVar("_Owned", Application, ServicePrincipal)
OWNER_ROLES = tuple(sorted(set(READ_APPS) | set(READ_DIRECTORY_USERS)))
# Owners are users or service principals; $select may name properties of either.
OWNER_PROPERTIES = tuple(sorted(set(USER_PROPERTIES) | set(SERVICE_PRINCIPAL_PROPERTIES)))
APPLICATION_TYPE = "microsoft.graph.application"
SERVICE_PRINCIPAL_TYPE = "microsoft.graph.servicePrincipal"
# https://learn.microsoft.com/graph/aad-advanced-queries: applications and service principals
# sort (displayName, createdDateTime) only in advanced queries; credentials have no startsWith.
_NO_PREFIX = frozenset({"id", "createdDateTime", "passwordCredentials", "keyCredentials"})
APPLICATION_RULES = DirectoryRules(
    type_name=APPLICATION_TYPE,
    resource="Application",
    properties=APPLICATION_PROPERTIES,
    no_prefix=_NO_PREFIX,
    sort_advanced=frozenset({"displayName", "createdDateTime"}),
    suffix=frozenset(),
)
SERVICE_PRINCIPAL_RULES = DirectoryRules(
    type_name=SERVICE_PRINCIPAL_TYPE,
    resource="ServicePrincipal",
    properties=SERVICE_PRINCIPAL_PROPERTIES,
    no_prefix=_NO_PREFIX | {"accountEnabled"},
    sort_advanced=frozenset({"displayName"}),
    suffix=frozenset(),
)


class AppsFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/applications", self.list_apps, READ_APPS),
            Route("GET", "/applications/{app}", self.get_app, READ_APPS),
            Route("GET", "/applications/{app}/owners", self.app_owners, READ_APPS),
            Route("GET", "/servicePrincipals", self.list_sps, READ_APPS),
            Route("GET", "/servicePrincipals/{sp}", self.get_sp, READ_APPS),
            Route("GET", "/servicePrincipals/{sp}/owners", self.sp_owners, READ_APPS),
        ]

    def _apps(self) -> list[JsonDict]:
        domain = self.ctx.state.domains[0]
        return [a.to_graph(domain) for a in self.ctx.state.applications.values()]

    def _sps(self) -> list[JsonDict]:
        return [sp.to_graph() for sp in self.ctx.state.service_principals.values()]

    def _list(
        self, req: GraphRequest, items: list[JsonDict], rules: DirectoryRules, entity: str
    ) -> GraphResponse:
        check_options(req)
        chosen, select, top, count = run_query(req, items, rules)
        shaped = [project(i, select, rules.properties) for i in chosen]
        return ok(paged(self.ctx, req, shaped, context_name(entity, select), top=top, count=count))

    def _one(
        self,
        req: GraphRequest,
        key: str,
        items: list[JsonDict],
        props: tuple[str, ...],
        entity: str,
        type_name: str,
    ) -> GraphResponse:
        check_options(req, {"$select"})
        select = parse_select(req.query.get("$select"), props, type_name, "Request_BadRequest")
        found = next((i for i in items if i["id"].lower() == key.lower()), None)
        if found is None:
            raise missing(key)
        return ok(
            {
                "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#"
                f"{context_name(entity, select, True)}",
                **project(found, select, props),
            }
        )

    async def list_apps(self, req: GraphRequest) -> GraphResponse:
        return self._list(req, self._apps(), APPLICATION_RULES, "applications")

    async def get_app(self, req: GraphRequest) -> GraphResponse:
        return self._one(
            req,
            req.params["app"],
            self._apps(),
            APPLICATION_PROPERTIES,
            "applications",
            "microsoft.graph.application",
        )

    async def list_sps(self, req: GraphRequest) -> GraphResponse:
        return self._list(req, self._sps(), SERVICE_PRINCIPAL_RULES, "servicePrincipals")

    async def get_sp(self, req: GraphRequest) -> GraphResponse:
        return self._one(
            req,
            req.params["sp"],
            self._sps(),
            SERVICE_PRINCIPAL_PROPERTIES,
            "servicePrincipals",
            "microsoft.graph.servicePrincipal",
        )

    def _owners(
        self, req: GraphRequest, owners: Callable[[], list[str] | None], key: str
    ) -> GraphResponse:
        check_options(req, {"$select", "$top", "$skiptoken"})
        ids = owners()
        if ids is None:
            raise missing(key)
        objects = [o for i in ids if (o := self.ctx.state.directory_object(i)) is not None]
        select, top = select_and_top(req, OWNER_PROPERTIES, "microsoft.graph.directoryObject")
        shaped: list[JsonDict] = []
        for obj in objects:
            is_user = obj["@odata.type"] == "#microsoft.graph.user"
            allowed = USER_PROPERTIES if is_user else SERVICE_PRINCIPAL_PROPERTIES
            picked = [s for s in select if s in allowed] if select is not None else None
            shaped.append(project(obj, picked, USER_DEFAULT if is_user else allowed))
        return ok(paged(self.ctx, req, shaped, "directoryObjects", top=top))

    async def app_owners(self, req: GraphRequest) -> GraphResponse:
        key = req.params["app"]

        def owners() -> list[str] | None:
            app = _by_id(self.ctx.state.applications, key)
            return None if app is None else app.owners

        return self._owners(req, owners, key)

    async def sp_owners(self, req: GraphRequest) -> GraphResponse:
        key = req.params["sp"]

        def owners() -> list[str] | None:
            sp = _by_id(self.ctx.state.service_principals, key)
            return None if sp is None else sp.owners

        return self._owners(req, owners, key)


def _by_id(objects: Mapping[str, _Owned], key: str) -> _Owned | None:
    """The object with id ``key``, compared without case as Graph does; the exact key first, so
    a scan's thousand owner lookups do not each walk every app."""
    found = objects.get(key)
    if found is not None:
        return found
    return next((o for o in objects.values() if o.id.lower() == key.lower()), None)
