"""``syncwarden doctor``: prove the configuration works against the real tenant, item by item.

Calendar sync fails in ways that are silent until someone's appointments go missing: a permission
never consented, a group id copied wrong, a mailbox outside the access policy. The doctor asks
each outside party the question that production will ask, with a fresh token, and prints what it
found and the one thing to do about it. A check that cannot run because an earlier one failed is
reported as skipped with the reason, so the first failure is the one to fix.

It lives in the composition room because it touches everything: settings, the database, Graph,
Exchange, the Teams channel references and the bot's own credential.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.bot.conversations import ChannelRole, ConversationStore
from syncwarden.connectors.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConnectorError,
    MailboxAccessDeniedError,
    MailboxNotEnabledError,
    NotFoundError,
    PermissionMissingError,
)
from syncwarden.connectors.exchange.client import MEMBERSHIP_ROLE
from syncwarden.connectors.graph.teamwork import CATALOG_PERMISSION, INSTALL_PERMISSION
from syncwarden.connectors.ports import DirectoryGroup, DirectoryUser, GroupKind
from syncwarden.connectors.tokens import granted_roles
from syncwarden.core.settings import Settings, find_problems
from syncwarden.m365 import Microsoft365
from syncwarden.migrate import migration_status
from syncwarden.workflow_wiring import BotTokens
from syncwarden.workflows.roster import Roster

GRAPH_ROLES = (
    "User.Read.All",
    "GroupMember.ReadWrite.All",
    "Application.Read.All",
    "Calendars.ReadWrite",
    # Installing the Teams app for people who never opened it, so their cards reach them.
    INSTALL_PERMISSION,
    CATALOG_PERMISSION,
)
# The Entra app role that lets a token into Exchange Online's admin API at all. What the app may do
# there is decided by Exchange's own roles, checked separately ("exchange group access").
EXCHANGE_APP_ROLE = "Exchange.ManageAsApp"
EXCHANGE_ROLE_HOW = (
    "in the Exchange admin center open Roles > Admin roles and add the app's service principal "
    "to a role group that has it (New-ServicePrincipal first, if Exchange does not know the app)"
)
GRANT_HOW = (
    "in the Entra admin center open App registrations > the Syncwarden app > API permissions, "
    "add the application permission and grant admin consent"
)


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One item of the checklist: what was checked, what was found, and what to do if it failed."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None

    @property
    def passed(self) -> bool:
        """Skipped items do not fail the run: they are skipped only behind a failure or as n/a."""
        return self.verdict is not Verdict.FAIL

    def line(self) -> str:
        text = f"{self.verdict.value.upper():4}  {self.name}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> int:
        return sum(1 for check in self.checks if not check.passed)


def passed(name: str, detail: str) -> Check:
    return Check(name, Verdict.PASS, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Verdict.FAIL, detail, fix)


def skipped(name: str, why: str) -> Check:
    return Check(name, Verdict.SKIP, why)


@dataclass
class _Findings:
    """What earlier checks learned that later ones build on."""

    database_ok: bool = False
    graph_ok: bool = False
    group: DirectoryGroup | None = None
    exchange_ok: bool = False
    test_user: DirectoryUser | None = None
    checks: list[Check] = field(default_factory=list)


class Doctor:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        m365: Microsoft365 | None,
        bot_tokens: BotTokens,
        *,
        check_timeout_seconds: float = 30.0,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sessions = sessions
        self._m365 = m365
        self._bot_tokens = bot_tokens
        self._timeout = check_timeout_seconds

    async def run(self) -> DoctorReport:
        found = _Findings()
        steps: list[Callable[[_Findings], Awaitable[Check | None]]] = [
            self._configuration,
            self._database,
            self._graph_token,
            self._graph_roles,
            self._sync_group,
            self._exchange_token,
            self._exchange_group_access,
            self._test_mailbox,
            self._access_policy,
            self._approvers,
            self._it_admins,
            self._channel(ChannelRole.IT),
            self._channel(ChannelRole.APPROVALS),
            self._bot_credentials,
            self._teams_app,
        ]
        for step in steps:
            try:
                check = await asyncio.wait_for(step(found), self._timeout)
            except TimeoutError:
                check = failed(
                    step.__name__.strip("_").replace("_", " "),
                    f"no answer within {self._timeout:g} seconds",
                    "check the network path to Microsoft 365 (proxy, firewall) and try again",
                )
            if check is not None:
                found.checks.append(check)
        return DoctorReport(tuple(found.checks))

    # -- local -----------------------------------------------------------------------------

    async def _configuration(self, found: _Findings) -> Check:
        problems = find_problems(self._settings)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return failed(
                "settings",
                f"{problems[0]}{more}",
                "run `syncwarden config check` to list every problem and fix each setting",
            )
        return passed("settings", f"complete for {self._settings.mode.value} mode")

    async def _database(self, found: _Findings) -> Check:
        try:
            status = await migration_status(self._engine)
        except (OSError, SQLAlchemyError, asyncpg.PostgresError) as error:
            return failed(
                "database",
                f"cannot connect ({type(error).__name__})",
                "check that the server is running and SYNCWARDEN_DATABASE__URL is right",
            )
        if not status.is_current:
            return failed(
                "database",
                f"schema is at revision {status.current or 'none'}, the code needs {status.head}",
                "run `syncwarden migrate` (serve also migrates at start)",
            )
        found.database_ok = True
        return passed("database", f"reachable, schema at revision {status.head}")

    # -- Graph -----------------------------------------------------------------------------

    async def _graph_token(self, found: _Findings) -> Check:
        m365 = self._m365
        if m365 is None:
            return failed(
                "graph token",
                "no Graph app is configured",
                "set SYNCWARDEN_GRAPH__TENANT_ID, SYNCWARDEN_GRAPH__CLIENT_ID and a credential",
            )
        scope = m365.endpoints.graph_scope
        try:
            m365.tokens.invalidate(scope)
            await m365.tokens.get_token(scope)
        except ConnectorError as error:
            return failed("graph token", str(error), _credential_fix("SYNCWARDEN_GRAPH__"))
        found.graph_ok = True
        return passed("graph token", f"acquired for app {self._settings.graph.client_id}")

    async def _graph_roles(self, found: _Findings) -> Check:
        if not found.graph_ok or self._m365 is None:
            return skipped("graph permissions", "needs a Graph token")
        token = await self._m365.tokens.get_token(self._m365.endpoints.graph_scope)
        return _roles_check("graph permissions", granted_roles(token), GRAPH_ROLES)

    async def _sync_group(self, found: _Findings) -> Check:
        name = "sync group"
        group_id = self._settings.graph.sync_group_id
        if not group_id:
            return failed(
                name,
                "no sync group is configured",
                "set SYNCWARDEN_GRAPH__SYNC_GROUP_ID to the object id of the calendar-sync group",
            )
        if not found.graph_ok or self._m365 is None:
            return skipped(name, "needs a Graph token")
        try:
            group = await self._m365.directory.get_group(group_id)
        except NotFoundError:
            return failed(
                name,
                f"no group with id {group_id} in the tenant",
                "copy the group's Object ID from Entra admin center > Groups into "
                "SYNCWARDEN_GRAPH__SYNC_GROUP_ID",
            )
        except ConnectorError as error:
            return failed(name, str(error), f"grant GroupMember.ReadWrite.All: {GRANT_HOW}")
        if group.kind is GroupKind.DISTRIBUTION:
            return failed(
                name,
                f"'{group.display_name}' is a distribution list, which cannot scope mailbox access",
                "use a mail-enabled security group (or a security group with RBAC for "
                "Applications) and set its id",
            )
        found.group = group
        path = "Graph" if group.kind.writable_through_graph else "Exchange Online"
        return passed(
            name,
            f"'{group.display_name}' ({group.kind.value.replace('_', ' ')}); members are added "
            f"through {path}",
        )

    # -- Exchange --------------------------------------------------------------------------

    def _exchange_needed(self, found: _Findings) -> bool:
        return found.group is not None and not found.group.kind.writable_through_graph

    async def _exchange_token(self, found: _Findings) -> Check | None:
        name = "exchange token"
        if self._m365 is None or not found.graph_ok:
            return skipped(name, "needs a working Graph app first")
        scope = self._m365.endpoints.exchange_scope
        try:
            self._m365.tokens.invalidate(scope)
            token = await self._m365.tokens.get_token(scope)
        except ConnectorError as error:
            if not self._exchange_needed(found):
                return skipped(name, f"not needed for this group, and not available ({error})")
            return failed(name, str(error), _credential_fix("SYNCWARDEN_GRAPH__"))
        roles = granted_roles(token)
        if EXCHANGE_APP_ROLE in roles:
            found.exchange_ok = True
            return passed(name, f"acquired, with {EXCHANGE_APP_ROLE}")
        if not self._exchange_needed(found):
            return skipped(
                name, f"not needed: the group is written through Graph ({EXCHANGE_APP_ROLE} absent)"
            )
        return failed(
            name,
            f"the token lacks {EXCHANGE_APP_ROLE}, which a mail-enabled group needs",
            f"add Office 365 Exchange Online > {EXCHANGE_APP_ROLE}: {GRANT_HOW}; the app also "
            f"needs the {MEMBERSHIP_ROLE} inside Exchange Online",
        )

    async def _exchange_group_access(self, found: _Findings) -> Check | None:
        """Prove the app may change the group's membership, without changing it.

        Exchange checks the caller's Exchange roles before it runs a cmdlet: a cmdlet none of them
        grants is refused, and so is a parameter none of them grants. So both membership cmdlets
        are sent as production sends them (with -BypassSecurityGroupManagerCheck), for a member
        that cannot exist (an address in the reserved .invalid domain): with the right role the
        answer is "couldn't find object" and nothing changes; without it, the refusal names the
        role. The two attempts show as failed commands in Exchange's admin audit log.
        """
        name = "exchange group access"
        if not self._exchange_needed(found):
            return None
        if not found.exchange_ok or self._m365 is None or found.group is None:
            return skipped(name, "needs an Exchange token")
        identity = found.group.mail or found.group.id
        probe = f"syncwarden-doctor-{uuid.uuid4().hex[:12]}@probe.invalid"
        for cmdlet in ("Add-DistributionGroupMember", "Remove-DistributionGroupMember"):
            try:
                await self._m365.exchange.invoke(
                    cmdlet,
                    {
                        "Identity": identity,
                        "Member": probe,
                        "BypassSecurityGroupManagerCheck": True,
                    },
                )
            except PermissionMissingError as error:
                permission = error.permission or MEMBERSHIP_ROLE
                return failed(
                    name,
                    f"Exchange Online refuses {cmdlet} for this app: {error.message}",
                    f"assign the app the {permission}: {EXCHANGE_ROLE_HOW}",
                )
            except NotFoundError as error:
                if probe.lower() not in error.message.lower():
                    return failed(
                        name,
                        f"Exchange Online cannot find the group '{identity}' ({error.message})",
                        "check that the sync group is a mail-enabled security group Exchange "
                        "Online knows (Get-DistributionGroup) and that its address is right",
                    )
            except (AccessDeniedError, AuthenticationError) as error:
                return failed(
                    name,
                    str(error),
                    f"add Office 365 Exchange Online > {EXCHANGE_APP_ROLE} ({GRANT_HOW}) and "
                    f"assign the app the {MEMBERSHIP_ROLE}: {EXCHANGE_ROLE_HOW}",
                )
            except ConnectorError as error:
                return failed(
                    name, str(error), "check the Exchange Online service health and retry"
                )
        return passed(
            name,
            "Exchange Online lets this app add and remove members with "
            "-BypassSecurityGroupManagerCheck (checked without changing the group)",
        )

    # -- the test mailbox ------------------------------------------------------------------

    async def _test_mailbox(self, found: _Findings) -> Check:
        name = "test mailbox"
        address = self._settings.graph.test_mailbox
        if not address:
            return failed(
                name,
                "no test mailbox is configured, so mailbox access is unproven",
                "set SYNCWARDEN_GRAPH__TEST_MAILBOX to the address of someone in the sync group",
            )
        if not found.graph_ok or self._m365 is None:
            return skipped(name, "needs a Graph token")
        try:
            user = await self._m365.directory.find_user_by_address(address)
        except ConnectorError as error:
            return failed(name, str(error), f"grant User.Read.All: {GRANT_HOW}")
        if user is None:
            return failed(
                name, f"nobody in the directory has the address {address}", _TEST_MAILBOX_FIX
            )
        found.test_user = user
        try:
            await self._m365.graph.get(
                f"users/{user.id}/events", params={"$select": "id", "$top": "1"}, mailbox=user.id
            )
        except MailboxAccessDeniedError:
            return failed(
                name,
                f"Exchange refuses access to {address}'s mailbox (ErrorAccessDenied)",
                "make sure the person is in the sync group and the access policy is scoped to "
                "that group; a new policy or member can take up to an hour to apply",
            )
        except MailboxNotEnabledError:
            return failed(name, f"{address} has no Exchange Online mailbox", _TEST_MAILBOX_FIX)
        except AccessDeniedError as error:
            return failed(name, str(error), f"grant Calendars.ReadWrite: {GRANT_HOW}")
        except ConnectorError as error:
            return failed(name, str(error), "check Microsoft 365 service health and retry")
        return passed(name, f"{address}'s calendar can be read")

    async def _access_policy(self, found: _Findings) -> Check:
        name = "access policy"
        user = found.test_user
        if user is None or self._m365 is None:
            return skipped(name, "needs the test mailbox")
        if not found.exchange_ok:
            return skipped(
                name,
                f"Test-ApplicationAccessPolicy needs {EXCHANGE_APP_ROLE}; the mailbox read above "
                "stands in for it",
            )
        app_id = self._settings.graph.client_id or ""
        try:
            granted = await self._m365.exchange.test_application_access_policy(
                user.primary_smtp or user.user_principal_name, app_id
            )
        except PermissionMissingError as error:
            return failed(
                name,
                f"Exchange Online refuses Test-ApplicationAccessPolicy: {error.message}",
                f"assign the app the {error.permission}: {EXCHANGE_ROLE_HOW}",
            )
        except ConnectorError as error:
            return failed(name, str(error), "check the Exchange Online service health and retry")
        if not granted:
            return failed(
                name,
                f"Test-ApplicationAccessPolicy says Denied for {user.user_principal_name}",
                "add the person to the sync group, or scope the policy to the sync group: "
                "New-ApplicationAccessPolicy -AccessRight RestrictAccess "
                "-PolicyScopeGroupId <group>",
            )
        return passed(
            name, f"Test-ApplicationAccessPolicy says Granted for {user.user_principal_name}"
        )

    # -- people and places -----------------------------------------------------------------

    async def _approvers(self, found: _Findings) -> Check:
        return await self._people(
            found,
            "approvers",
            lambda roster: roster.approvers(),
            self._settings.approvals.approvers_group_id,
            "SYNCWARDEN_APPROVALS__APPROVERS_GROUP_ID or SYNCWARDEN_APPROVALS__APPROVERS",
        )

    async def _it_admins(self, found: _Findings) -> Check:
        return await self._people(
            found,
            "IT admins",
            lambda roster: roster.it_admins(),
            self._settings.approvals.it_admins_group_id,
            "SYNCWARDEN_APPROVALS__IT_ADMINS_GROUP_ID or SYNCWARDEN_APPROVALS__IT_ADMINS",
        )

    async def _people(
        self,
        found: _Findings,
        name: str,
        resolve: Callable[[Roster], Awaitable[frozenset[str]]],
        group_id: str | None,
        setting: str,
    ) -> Check:
        if not found.graph_ok or self._m365 is None:
            return skipped(name, "needs a Graph token")
        roster = Roster(self._m365.directory, self._settings.approvals)
        try:
            people = await resolve(roster)
        except NotFoundError:
            return failed(name, f"no group with id {group_id}", f"correct {setting}")
        except ConnectorError as error:
            return failed(name, str(error), f"grant GroupMember.ReadWrite.All: {GRANT_HOW}")
        if not people:
            return failed(
                name, "nobody resolves", f"set {setting} to people or a group with members"
            )
        return passed(name, f"{len(people)} {'person' if len(people) == 1 else 'people'}")

    def _channel(self, role: ChannelRole) -> Callable[[_Findings], Awaitable[Check]]:
        label = "IT channel" if role is ChannelRole.IT else "approvals channel"
        phrase = "alerts" if role is ChannelRole.IT else "approvals"

        async def check(found: _Findings) -> Check:
            if not found.database_ok:
                return skipped(label, "needs the database")
            ref = await ConversationStore(self._sessions).for_role(role)
            if ref is None:
                return failed(
                    label,
                    "not set, so its messages wait in the outbox",
                    f"in the Teams channel, say '@Syncwarden use this channel for {phrase}'",
                )
            return passed(label, f"set ({ref.conversation_id.split(';')[0]})")

        check.__name__ = f"_{label.replace(' ', '_')}"
        return check

    async def _bot_credentials(self, found: _Findings) -> Check:
        name = "bot credentials"
        if self._bot_tokens.anonymous:
            if self._settings.is_production:
                return failed(
                    name,
                    "no bot app is configured",
                    "set SYNCWARDEN_BOT__APP_ID, SYNCWARDEN_BOT__TENANT_ID and a credential",
                )
            return skipped(name, "anonymous Bot Framework traffic (sandbox mode only)")
        try:
            await self._bot_tokens.bot_token(fresh=True)
        except ConnectorError as error:
            return failed(name, str(error), _credential_fix("SYNCWARDEN_BOT__"))
        return passed(name, f"Bot Framework token acquired for app {self._settings.bot.app_id}")

    async def _teams_app(self, found: _Findings) -> Check:
        """The Teams app is in the organisation's catalog, so it can be installed for people.

        Graph installs only apps in the organisation's catalog (or the Teams Store), found by
        the manifest id, which is the bot's app id. Skipped when that cannot be asked: no Graph
        token, no bot app id, or no permission to read the catalog (named above).
        """
        name = "teams app"
        bot_app_id = self._settings.bot.app_id
        if not found.graph_ok or self._m365 is None:
            return skipped(name, "needs a Graph token")
        if not bot_app_id:
            return skipped(name, "no bot app id is configured, so there is no app to look for")
        try:
            catalog_id = await self._m365.teamwork.catalog_app_id(bot_app_id)
        except PermissionMissingError as error:
            return skipped(name, f"cannot read the app catalog without {error.permission}")
        except ConnectorError as error:
            return failed(name, str(error), "check Microsoft 365 service health and retry")
        if catalog_id is None:
            return failed(
                name,
                f"no app with manifest id {bot_app_id} in your organisation's Teams app catalog, "
                "so Syncwarden cannot install it for people who never opened it",
                "run `syncwarden manifest build` and upload appPackage.zip in the Teams admin "
                "center (Teams apps > Manage apps > Upload new app)",
            )
        return passed(name, f"in the organisation's app catalog (catalog id {catalog_id})")


_TEST_MAILBOX_FIX = (
    "set SYNCWARDEN_GRAPH__TEST_MAILBOX to the address of a licensed person in the sync group"
)


def _credential_fix(prefix: str) -> str:
    return (
        f"check {prefix}TENANT_ID, {prefix}{'APP_ID' if 'BOT' in prefix else 'CLIENT_ID'} and "
        "the credential (certificate, managed identity or secret) against the app registration"
    )


def _roles_check(name: str, roles: frozenset[str], needed: tuple[str, ...]) -> Check:
    missing = [role for role in needed if role not in roles]
    if missing:
        return failed(
            name,
            f"missing {', '.join(missing)}",
            f"add Microsoft Graph > {', '.join(missing)}: {GRANT_HOW}",
        )
    return passed(name, ", ".join(needed))
