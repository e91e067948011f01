"""Installing Syncwarden's Teams app for a person, so the bot can write to them.

Teams lets a bot message a person only where its app is installed; approvers and requesters who
never opened Syncwarden would otherwise never get their cards. Microsoft documents the way round
("Send proactive installation messages", learn.microsoft.com/microsoftteams/platform/graph-api/
proactive-bots-and-messages/graph-proactive-bots-and-messages):

1. find the app's catalog id from its manifest id (``externalId``): the catalog generates its own
   id for an app uploaded to the organisation's catalog (``AppCatalog.Read.All``);
2. ``POST /users/{id}/teamwork/installedApps`` binding that catalog app
   (``TeamsAppInstallation.ReadWriteForUser.All``: Syncwarden's Graph app is not the bot's app,
   so the *Self* permission, which installs only the caller's own Teams app, does not do);
3. read the installation's chat (``installedApps/{id}/chat``): its id is the conversation the
   bot sends to.

:meth:`GraphTeamwork.ensure_installed` is idempotent: it looks for an installation before
installing and again after a 409 (already installed), so a repeat, a retried POST or two
deliveries at once end with the same single installation and the same chat. Refusals come back
as :mod:`connectors.errors` classes whose message says what IT must do.
"""

from __future__ import annotations

from syncwarden.connectors.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConnectorError,
    NotFoundError,
    PermissionMissingError,
    TransientError,
)
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.odata import quote
from syncwarden.connectors.graph.paths import segment

INSTALL_PERMISSION = "TeamsAppInstallation.ReadWriteForUser.All"
CATALOG_PERMISSION = "AppCatalog.Read.All"
_GRANT = (
    "add it in Entra admin center > App registrations > the Syncwarden Graph app > "
    "API permissions (application permission) and grant admin consent"
)
_UPLOAD = (
    "upload appPackage.zip (`syncwarden manifest build`) in the Teams admin center: "
    "Teams apps > Manage apps > Upload new app"
)
# Teams' wording when it has no licence for the person ("Failed to get license information for
# the user ..."); any other 403 from these calls is a missing permission.
_LICENCE_WORD = "licens"


class TeamsAppNotInCatalogError(NotFoundError):
    """The organisation's Teams app catalog has no app with Syncwarden's manifest id."""


class TeamsLicenceMissingError(AccessDeniedError):
    """Teams refuses the person: they have no Teams licence, so no app can be installed."""


class GraphTeamwork:
    def __init__(self, client: GraphClient) -> None:
        self._client = client
        # Manifest id -> catalog id. The catalog id of an app stays when a new version of the
        # package is uploaded, so it is looked up once per process (and again if it vanishes).
        self._catalog: dict[str, str] = {}

    async def catalog_app_id(self, external_app_id: str) -> str | None:
        """The catalog id of the app whose manifest id is ``external_app_id``, or None."""
        if external_app_id in self._catalog:
            return self._catalog[external_app_id]
        try:
            found = await self._client.collect(
                "appCatalogs/teamsApps",
                params={"$filter": f"externalId eq {quote(external_app_id)}"},
            )
        except AccessDeniedError as error:
            raise PermissionMissingError(
                f"Syncwarden's app lacks {CATALOG_PERMISSION}, which it needs to find its Teams "
                f"app in your organisation's app catalog; {_GRANT} ({error.message})",
                permission=CATALOG_PERMISSION,
                status=error.status,
                code=error.code,
                request_id=error.request_id,
                request=error.request,
            ) from None
        if not found:
            return None
        catalog_id = str(found[0]["id"])
        self._catalog[external_app_id] = catalog_id
        return catalog_id

    async def ensure_installed(self, user_id: str, external_app_id: str) -> str:
        """Install the Teams app ``external_app_id`` for ``user_id`` if needed; its chat id.

        Raises :class:`PermissionMissingError` (a grant IT must make),
        :class:`TeamsAppNotInCatalogError` (the app must be uploaded),
        :class:`TeamsLicenceMissingError`, :class:`NotFoundError` (no such person), or a
        retryable error (throttling, an outage) for the caller to try again later.
        """
        catalog_id = await self.catalog_app_id(external_app_id)
        if catalog_id is None:
            raise _not_in_catalog(external_app_id)
        installations = f"users/{segment(user_id)}/teamwork/installedApps"
        try:
            installation = await self._installation(installations, catalog_id)
            if installation is None:
                installation = await self._install(installations, catalog_id, external_app_id)
            chat = await self._client.get(f"{installations}/{segment(installation)}/chat")
        except AccessDeniedError as error:
            raise _refusal(error, user_id) from None
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        if not isinstance(chat_id, str) or not chat_id:
            raise TransientError(f"Graph returned no chat for {user_id}'s Teams app installation")
        return chat_id

    async def _installation(self, installations: str, catalog_id: str) -> str | None:
        """The id of the person's installation of the catalog app, or None when there is none."""
        found = await self._client.collect(
            installations,
            params={"$expand": "teamsApp", "$filter": f"teamsApp/id eq {quote(catalog_id)}"},
        )
        return str(found[0]["id"]) if found else None

    async def _install(self, installations: str, catalog_id: str, external_app_id: str) -> str:
        bind = f"{self._client.base_url}/appCatalogs/teamsApps/{segment(catalog_id)}"
        try:
            # Safe to repeat: a second install is refused as a conflict, handled below.
            await self._client.request(
                "POST", installations, json_body={"teamsApp@odata.bind": bind}, idempotent=True
            )
        except AlreadyExistsError:
            pass  # installed meanwhile (another delivery, or a retried POST): use that one
        except NotFoundError:
            # The person was just listed, so what is missing is the catalog app (removed since
            # it was looked up): forget it and say so.
            self._catalog.pop(external_app_id, None)
            raise _not_in_catalog(external_app_id) from None
        installation = await self._installation(installations, catalog_id)
        if installation is None:
            raise TransientError("the Teams app was installed but is not listed yet")
        return installation


def _not_in_catalog(external_app_id: str) -> TeamsAppNotInCatalogError:
    return TeamsAppNotInCatalogError(
        f"the Syncwarden Teams app (manifest id {external_app_id}) is not in your organisation's "
        f"app catalog; {_UPLOAD}"
    )


def _refusal(error: AccessDeniedError, user_id: str) -> ConnectorError:
    """A 403 from the installation calls: no Teams licence for the person, or no permission."""
    if _LICENCE_WORD in error.message.lower():
        return TeamsLicenceMissingError(
            f"Teams has no licence for {user_id}, so Syncwarden's app cannot be installed for "
            "them; assign them a Microsoft Teams licence (Microsoft 365 admin center > Users > "
            f"Active users > Licenses and apps) ({error.message})",
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            request=error.request,
        )
    return PermissionMissingError(
        f"Syncwarden's app lacks {INSTALL_PERMISSION}, which it needs to install its Teams app "
        f"for people who never opened it; {_GRANT} ({error.message})",
        permission=INSTALL_PERMISSION,
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        request=error.request,
    )
