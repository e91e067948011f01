"""Teams apps for people: the app catalog, personal-scope installations and the 1:1 chat.

Teams lets a bot write to a person only where its app is installed. For someone who never opened
the app, Microsoft documents installing it for them through Graph ("Proactive installation of
apps using Graph API to send messages", learn.microsoft.com/microsoftteams/platform/graph-api/
proactive-bots-and-messages/graph-proactive-bots-and-messages): find the app's catalog id by its
manifest id (``appCatalogs/teamsApps?$filter=externalId eq '…'``), ``POST
/users/{id}/teamwork/installedApps`` with ``teamsApp@odata.bind``, then read the chat the
installation opened (``installedApps/{id}/chat``). Each answer here is pinned by
``tests/contract/test_teamwork_contract.py`` with its source.

Installation ids are what Graph's examples show: base64 of ``{user id}##{catalog app id}``, so
one person has at most one installation of an app and its id is stable.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import (
    GraphRequest,
    GraphResponse,
    Route,
    graph_url,
    json_body,
    ok,
)
from syncwarden.sandbox.graph_directory import check_options
from syncwarden.sandbox.graph_users import missing
from syncwarden.sandbox.odata import (
    Compare,
    Evaluator,
    FilterError,
    GraphError,
    JsonDict,
    Literal,
    Logical,
    Not,
    Path,
    bad_request,
    parse_filter,
    walk,
)
from syncwarden.sandbox.state import TeamsApp, TeamsAppInstallation, User, iso

# The permissions tables of appcatalogs-list-teamsapps, userteamwork-post-installedapps,
# userteamwork-list-installedapps and userscopeteamsappinstallation-get-chat (application rows).
READ_CATALOG = ("AppCatalog.Read.All", "AppCatalog.ReadWrite.All")
INSTALL_SELF = "TeamsAppInstallation.ReadWriteSelfForUser.All"
INSTALL_ANY = "TeamsAppInstallation.ReadWriteForUser.All"
WRITE_INSTALLATIONS = (INSTALL_SELF, INSTALL_ANY)
READ_INSTALLATIONS = ("TeamsAppInstallation.ReadForUser.All", *WRITE_INSTALLATIONS)
TEAMS_APP_PROPERTIES = frozenset({"id", "externalId", "displayName", "distributionMethod"})
BIND_KEY = "teamsApp@odata.bind"
# Teams' refusal for a person it has no licence for (public issue reports of Teams Graph calls:
# OfficeDev/microsoft-teams-apps-requestateam#355, microsoftgraph/msgraph-sdk-powershell#1270).
NO_LICENCE = (
    "Failed to get license information for the user. Ensure user has a valid Office365 license "
    "assigned to them."
)


def installation_id(user_id: str, app_id: str) -> str:
    return base64.b64encode(f"{user_id}##{app_id}".encode()).decode()


def chat_id(user_id: str, app: TeamsApp) -> str:
    """A personal chat id in the shape of the get-chat page's example (``19:…_{user}@unq…``)."""
    return f"19:{app.externalId}_{user_id}@unq.gbl.spaces"


class TeamworkFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        installed = "/users/{user}/teamwork/installedApps"
        return [
            Route("GET", "/appCatalogs/teamsApps", self.list_catalog, READ_CATALOG),
            Route("GET", installed, self.list_installed, READ_INSTALLATIONS),
            Route("POST", installed, self.install, WRITE_INSTALLATIONS),
            Route("GET", f"{installed}/{{installation}}/chat", self.get_chat, READ_INSTALLATIONS),
        ]

    # ------------------------------------------------------------ the catalog

    async def list_catalog(self, req: GraphRequest) -> GraphResponse:
        check_options(req, {"$filter"})
        apps = [a.to_graph() for a in self.ctx.state.teams_apps.values()]
        chosen = _filtered(apps, req.query.get("$filter"), prefix=())
        return ok(
            {
                "@odata.context": f"{graph_url(self.ctx)}/$metadata#appCatalogs/teamsApps",
                "value": chosen,
            }
        )

    # ------------------------------------------------------------ installations

    def _person(self, req: GraphRequest) -> User:
        user = self.ctx.state.user(req.params["user"])
        if user is None:
            raise missing(req.params["user"])
        if not user.has_teams:
            raise GraphError(403, "Forbidden", NO_LICENCE)
        return user

    def _installations(self, user: User) -> list[TeamsAppInstallation]:
        return self.ctx.state.teams_installations.setdefault(user.id, [])

    async def list_installed(self, req: GraphRequest) -> GraphResponse:
        check_options(req, {"$filter", "$expand"})
        expand = _expansions(req.query.get("$expand"))
        user = self._person(req)
        rows: list[JsonDict] = []
        for found in self._installations(user):
            app = self.ctx.state.teams_apps.get(found.app_id)
            if app is not None:
                rows.append({"id": found.id, "teamsApp": app.to_graph()})
        chosen = _filtered(rows, req.query.get("$filter"), prefix=("teamsApp",))
        shaped = [
            {"id": row["id"], **({"teamsApp": row["teamsApp"]} if "teamsApp" in expand else {})}
            for row in chosen
        ]
        context = f"users('{user.id}')/teamwork/installedApps"
        return ok({"@odata.context": f"{graph_url(self.ctx)}/$metadata#{context}", "value": shaped})

    async def install(self, req: GraphRequest) -> GraphResponse:
        body = json_body(req)
        bind = body.get(BIND_KEY)
        if not isinstance(bind, str) or not bind:
            raise bad_request(f"The '{BIND_KEY}' property is required.", "BadRequest")
        app_key = bind.rstrip("/").rsplit("/", 1)[-1].strip("()'")
        user = self._person(req)
        app = self.ctx.state.teams_apps.get(app_key)
        if app is None:
            raise GraphError(404, "NotFound", f"The Teams app '{app_key}' was not found.")
        roles = set(req.claims.get("roles") or [])
        if INSTALL_ANY not in roles and app.web_application_id != req.app_id:
            # The Self permission installs only the Teams app whose manifest names the caller.
            raise GraphError(
                403,
                "Forbidden",
                f"AAD App Id '{req.app_id}' is not allowed to manage the Teams App '{app.id}'",
            )
        installations = self._installations(user)
        if any(i.app_id == app.id for i in installations):
            raise GraphError(409, "Conflict", "App is already installed for the user.")
        installations.append(
            TeamsAppInstallation(
                id=installation_id(user.id, app.id),
                user_id=user.id,
                app_id=app.id,
                chat_id=chat_id(user.id, app),
            )
        )
        return GraphResponse(201, None)

    async def get_chat(self, req: GraphRequest) -> GraphResponse:
        check_options(req, {"$select"})
        user = self._person(req)
        wanted = req.params["installation"]
        found = next((i for i in self._installations(user) if i.id == wanted), None)
        if found is None:
            raise GraphError(404, "NotFound", f"The app installation '{wanted}' was not found.")
        created = iso(found.created)
        return ok(
            {
                "@odata.context": f"{graph_url(self.ctx)}/$metadata#chats/$entity",
                "id": found.chat_id,
                "topic": None,
                "createdDateTime": created,
                "lastUpdatedDateTime": created,
                "chatType": "oneOnOne",
                "tenantId": self.ctx.state.tenant_id,
                "webUrl": f"https://teams.microsoft.com/l/chat/{found.chat_id}/0",
            }
        )


def _expansions(raw: str | None) -> set[str]:
    """``$expand`` on installations: teamsApp and teamsAppDefinition are the navigations."""
    if raw is None:
        return set()
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = names - {"teamsApp", "teamsAppDefinition"}
    if unknown:
        name = sorted(unknown)[0]
        raise bad_request(
            f"Could not find a property named '{name}' on type "
            "'microsoft.graph.teamsAppInstallation'.",
            "BadRequest",
        )
    return names


def _filtered(
    items: Sequence[JsonDict], raw: str | None, *, prefix: tuple[str, ...]
) -> list[JsonDict]:
    """Items matching ``$filter``: eq, ne, and, or and not over a teamsApp's properties.

    The list-teamsapps page allows "Equal, not-equal, and, or, and not" on any teamsApp field;
    installations filter on the same fields through their ``teamsApp`` navigation.
    """
    if raw is None:
        return list(items)
    try:
        tree = parse_filter(raw)
    except FilterError as error:
        raise bad_request(f"Invalid filter clause: {error}", "BadRequest") from None
    for node in walk(tree):
        if isinstance(node, Path):
            _check_path(node.segments, prefix)
        elif not isinstance(node, Compare | Logical | Not | Literal):
            raise bad_request("Invalid filter clause: unsupported operation.", "BadRequest")
        elif isinstance(node, Compare) and node.op not in {"eq", "ne"}:
            raise bad_request("Invalid filter clause: unsupported operator.", "BadRequest")
    evaluator = Evaluator()
    return [item for item in items if evaluator.test(tree, item, {})]


def _check_path(segments: Iterable[str], prefix: tuple[str, ...]) -> None:
    parts = tuple(segments)
    if parts[: len(prefix)] != prefix or len(parts) != len(prefix) + 1:
        raise bad_request(
            f"Invalid filter clause: '{'/'.join(parts)}' cannot be filtered on.", "BadRequest"
        )
    if parts[-1] not in TEAMS_APP_PROPERTIES:
        raise bad_request(
            f"Could not find a property named '{parts[-1]}' on type 'microsoft.graph.teamsApp'.",
            "BadRequest",
        )
