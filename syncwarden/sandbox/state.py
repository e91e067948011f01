"""The tenant's mutable state, shared by every protocol front.

Graph and Exchange change the same group objects here, because in a real tenant they are two
views of one directory: a member added with an Exchange cmdlet shows up in Graph's member list.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from syncwarden.sandbox.odata import JsonDict

if TYPE_CHECKING:
    from syncwarden.sandbox.calendar import CalendarEvent


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """Directory timestamps: second precision with a Z, as Graph returns them."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


USER_PROPERTIES = (
    "id",
    "displayName",
    "givenName",
    "surname",
    "userPrincipalName",
    "mail",
    "proxyAddresses",
    "otherMails",
    "accountEnabled",
    "jobTitle",
    "department",
    "businessPhones",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "mailNickname",
    "usageLocation",
    "userType",
    "createdDateTime",
)
# The properties Graph v1.0 returns for a user when the request has no $select.
USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
GROUP_PROPERTIES = (
    "id",
    "displayName",
    "description",
    "groupTypes",
    "mailEnabled",
    "securityEnabled",
    "mail",
    "mailNickname",
    "proxyAddresses",
    "visibility",
    "createdDateTime",
)
APPLICATION_PROPERTIES = (
    "id",
    "appId",
    "displayName",
    "passwordCredentials",
    "keyCredentials",
    "signInAudience",
    "identifierUris",
    "createdDateTime",
    "publisherDomain",
)
SERVICE_PRINCIPAL_PROPERTIES = (
    "id",
    "appId",
    "displayName",
    "passwordCredentials",
    "keyCredentials",
    "servicePrincipalType",
    "accountEnabled",
    "appOwnerOrganizationId",
    "preferredTokenSigningKeyThumbprint",
    "servicePrincipalNames",
)


@dataclass
class User:
    id: str
    displayName: str  # noqa: N815 - Graph's own property names keep the JSON mapping obvious
    userPrincipalName: str  # noqa: N815
    givenName: str | None = None  # noqa: N815
    surname: str | None = None
    mail: str | None = None
    proxyAddresses: list[str] = field(default_factory=list)  # noqa: N815
    otherMails: list[str] = field(default_factory=list)  # noqa: N815
    accountEnabled: bool = True  # noqa: N815
    jobTitle: str | None = None  # noqa: N815
    department: str | None = None
    officeLocation: str | None = None  # noqa: N815
    mobilePhone: str | None = None  # noqa: N815
    has_mailbox: bool = True
    # A Teams licence: without one, Teams (and its Graph teamwork API) knows nothing of them.
    has_teams: bool = True
    created: dt.datetime = field(default_factory=utcnow)
    # The ``manager`` navigation property: the manager's object id, or None when nobody is set.
    manager_id: str | None = None

    def to_graph(self) -> JsonDict:
        return {
            "id": self.id,
            "displayName": self.displayName,
            "givenName": self.givenName,
            "surname": self.surname,
            "userPrincipalName": self.userPrincipalName,
            "mail": self.mail,
            "proxyAddresses": list(self.proxyAddresses),
            "otherMails": list(self.otherMails),
            "accountEnabled": self.accountEnabled,
            "jobTitle": self.jobTitle,
            "department": self.department,
            "businessPhones": [],
            "mobilePhone": self.mobilePhone,
            "officeLocation": self.officeLocation,
            "preferredLanguage": "en-US",
            "mailNickname": self.userPrincipalName.split("@", 1)[0],
            "usageLocation": "US",
            "userType": "Member",
            "createdDateTime": iso(self.created),
        }

    def addresses(self) -> set[str]:
        """Every SMTP address Exchange would resolve to this recipient, lower-cased."""
        found = {self.userPrincipalName.lower()}
        if self.mail:
            found.add(self.mail.lower())
        for proxy in self.proxyAddresses:
            if proxy.lower().startswith("smtp:"):
                found.add(proxy[5:].lower())
        return found


@dataclass
class Group:
    id: str
    displayName: str  # noqa: N815
    mailEnabled: bool  # noqa: N815
    securityEnabled: bool  # noqa: N815
    groupTypes: list[str] = field(default_factory=list)  # noqa: N815
    mail: str | None = None
    mailNickname: str | None = None  # noqa: N815
    description: str | None = None
    members: list[str] = field(default_factory=list)
    created: dt.datetime = field(default_factory=utcnow)

    @property
    def graph_read_only(self) -> bool:
        """Mail-enabled security groups and distribution lists are Exchange-mastered."""
        return self.mailEnabled and "Unified" not in self.groupTypes

    def to_graph(self) -> JsonDict:
        return {
            "id": self.id,
            "displayName": self.displayName,
            "description": self.description,
            "groupTypes": list(self.groupTypes),
            "mailEnabled": self.mailEnabled,
            "securityEnabled": self.securityEnabled,
            "mail": self.mail,
            "mailNickname": self.mailNickname,
            "proxyAddresses": [f"SMTP:{self.mail}"] if self.mail else [],
            "visibility": "Public" if "Unified" in self.groupTypes else None,
            "createdDateTime": iso(self.created),
        }


@dataclass
class PasswordCredential:
    keyId: str  # noqa: N815
    displayName: str | None  # noqa: N815
    start: dt.datetime
    end: dt.datetime
    secret: str

    def to_graph(self) -> JsonDict:
        return {
            "customKeyIdentifier": None,
            "displayName": self.displayName,
            "endDateTime": iso(self.end),
            "hint": self.secret[:3],
            "keyId": self.keyId,
            "secretText": None,
            "startDateTime": iso(self.start),
        }


@dataclass
class KeyCredential:
    keyId: str  # noqa: N815
    displayName: str | None  # noqa: N815
    start: dt.datetime
    end: dt.datetime
    usage: str
    thumbprint_sha1: bytes
    thumbprint_sha256: bytes
    public_key_pem: bytes | None

    def to_graph(self) -> JsonDict:
        return {
            "customKeyIdentifier": base64.b64encode(self.thumbprint_sha1).decode(),
            "displayName": self.displayName,
            "endDateTime": iso(self.end),
            "key": None,
            "keyId": self.keyId,
            "startDateTime": iso(self.start),
            "type": "AsymmetricX509Cert",
            "usage": self.usage,
        }


@dataclass
class Application:
    id: str
    appId: str  # noqa: N815
    displayName: str  # noqa: N815
    passwords: list[PasswordCredential] = field(default_factory=list)
    keys: list[KeyCredential] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    created: dt.datetime = field(default_factory=utcnow)

    def to_graph(self, domain: str) -> JsonDict:
        return {
            "id": self.id,
            "appId": self.appId,
            "displayName": self.displayName,
            "passwordCredentials": [p.to_graph() for p in self.passwords],
            "keyCredentials": [k.to_graph() for k in self.keys],
            "signInAudience": "AzureADMyOrg",
            "identifierUris": [],
            "createdDateTime": iso(self.created),
            "publisherDomain": domain,
        }


@dataclass
class ServicePrincipal:
    id: str
    appId: str  # noqa: N815
    displayName: str  # noqa: N815
    tenant_id: str
    passwords: list[PasswordCredential] = field(default_factory=list)
    keys: list[KeyCredential] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    roles: dict[str, set[str]] = field(default_factory=dict)

    def to_graph(self) -> JsonDict:
        return {
            "id": self.id,
            "appId": self.appId,
            "displayName": self.displayName,
            "passwordCredentials": [p.to_graph() for p in self.passwords],
            "keyCredentials": [k.to_graph() for k in self.keys],
            "servicePrincipalType": "Application",
            "accountEnabled": True,
            "appOwnerOrganizationId": self.tenant_id,
            "preferredTokenSigningKeyThumbprint": (
                self.keys[0].thumbprint_sha1.hex().upper()
                if any(k.usage == "Sign" for k in self.keys)
                else None
            ),
            "servicePrincipalNames": [self.appId],
        }


@dataclass
class TeamsApp:
    """An app in the tenant's Teams app catalog.

    ``id`` is the catalog's own id; ``externalId`` is the id in the app's manifest (for a bot
    app, its Microsoft App ID), which is how a caller finds its app in the catalog.
    """

    id: str
    externalId: str  # noqa: N815
    displayName: str  # noqa: N815
    distributionMethod: str = "organization"  # noqa: N815
    # The Entra app named in the manifest's webApplicationInfo: the app the *Self* installation
    # permissions let install this Teams app (and no other).
    web_application_id: str | None = None

    def to_graph(self) -> JsonDict:
        return {
            "id": self.id,
            "externalId": self.externalId,
            "displayName": self.displayName,
            "distributionMethod": self.distributionMethod,
        }


@dataclass
class TeamsAppInstallation:
    """A Teams app installed in one person's personal scope, and the 1:1 chat it opened."""

    id: str
    user_id: str
    app_id: str
    chat_id: str
    created: dt.datetime = field(default_factory=utcnow)


@dataclass
class AccessPolicy:
    """An Exchange application access policy (RestrictAccess) for one app."""

    app_id: str
    scope_group_id: str
    # When ``propagated`` is not None Graph answers from that snapshot instead of live
    # membership: the time a real policy change takes to reach every mailbox server.
    propagated: set[str] | None = None


@dataclass
class DeletedUser:
    """A soft-deleted user in ``/directory/deletedItems``, restorable for 30 days.

    ``groups`` keeps the groups the user belonged to: a restored user is "also restored to any
    groups they were a member of" (user-delete page), and group delta goes on counting them as
    members until they are deleted for good (delta-query-groups page).
    """

    user: User
    deleted: dt.datetime
    groups: list[str] = field(default_factory=list)


DeltaExpiry = Literal["bad_request", "gone", "resync_required"]


@dataclass
class DirectoryDeltaSettings:
    """How the sandbox answers ``users/delta`` and ``groups/delta``; tests change these.

    Page sizes are the server's choice in Graph (``$top`` is ignored on directory delta), so
    they are settings here. ``expiry`` picks one of the documented answers to a token that is
    no longer known: 400 ``syncStateNotFound`` (the Microsoft 365 Developer blog, July 2020),
    410 Gone with a ``Location`` header (delta-query-overview, "Synchronization reset") or 400
    ``resyncRequired`` (Graph's error code list). ``report_deleted_members`` False reproduces
    the reported bug where a permanently deleted member never shows as removed in group delta
    (microsoft-graph-docs#14708).
    """

    page_size: int = 200
    member_page_size: int = 100
    expiry: DeltaExpiry = "bad_request"
    report_deleted_members: bool = True


EventListener = Callable[[str, str, str], None]


@dataclass
class TenantState:
    tenant_id: str
    domains: list[str]
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    applications: dict[str, Application] = field(default_factory=dict)
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)
    access_policies: dict[str, AccessPolicy] = field(default_factory=dict)
    # Exchange RBAC, apart from the Entra app role Exchange.ManageAsApp: the management roles and
    # role groups each app (by appId) is assigned inside Exchange Online. The token only gets an
    # app through the door; these decide which cmdlets and parameters it may use.
    exchange_roles: dict[str, set[str]] = field(default_factory=dict)
    events: dict[str, dict[str, CalendarEvent]] = field(default_factory=dict)
    # The Teams app catalog by catalog id, and each person's personal-scope installations.
    teams_apps: dict[str, TeamsApp] = field(default_factory=dict)
    teams_installations: dict[str, list[TeamsAppInstallation]] = field(default_factory=dict)
    # Soft-deleted users by id; a hard delete removes them from here too.
    deleted_users: dict[str, DeletedUser] = field(default_factory=dict)
    directory_delta: DirectoryDeltaSettings = field(default_factory=DirectoryDeltaSettings)
    # Server-side state behind directory delta tokens (owned by ``graph_delta``).
    directory_delta_tokens: dict[str, Any] = field(default_factory=dict)
    change_seq: int = 0
    change_log: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    listeners: list[EventListener] = field(default_factory=list)

    # ------------------------------------------------------------ directory lookups

    def user(self, key: str) -> User | None:
        """By object id or UPN, and nothing else: Graph's /users/{key} rule."""
        if key in self.users:
            return self.users[key]
        lowered = key.lower()
        for user in self.users.values():
            if user.id.lower() == lowered or user.userPrincipalName.lower() == lowered:
                return user
        return None

    def recipient(self, key: str) -> User | None:
        """By id, UPN or any SMTP address: how Exchange resolves a -Member value."""
        found = self.user(key)
        if found is not None:
            return found
        lowered = key.lower()
        for user in self.users.values():
            if lowered in user.addresses():
                return user
        return None

    def group(self, key: str) -> Group | None:
        return self.groups.get(key) or next(
            (g for g in self.groups.values() if g.id.lower() == key.lower()), None
        )

    def exchange_group(self, key: str) -> Group | None:
        """A mail-enabled group by id, name, alias or address; others are not recipients."""
        lowered = key.lower()
        for group in self.groups.values():
            if not group.mailEnabled:
                continue
            names = {group.id.lower(), group.displayName.lower()}
            if group.mail:
                names.add(group.mail.lower())
            if group.mailNickname:
                names.add(group.mailNickname.lower())
            if lowered in names:
                return group
        return None

    def service_principal_for(self, app_id: str) -> ServicePrincipal | None:
        return next((sp for sp in self.service_principals.values() if sp.appId == app_id), None)

    def application_for(self, app_id: str) -> Application | None:
        return next((a for a in self.applications.values() if a.appId == app_id), None)

    def directory_object(self, object_id: str) -> JsonDict | None:
        if object_id in self.users:
            return {"@odata.type": "#microsoft.graph.user", **self.users[object_id].to_graph()}
        if object_id in self.groups:
            return {"@odata.type": "#microsoft.graph.group", **self.groups[object_id].to_graph()}
        if object_id in self.service_principals:
            sp = self.service_principals[object_id]
            return {"@odata.type": "#microsoft.graph.servicePrincipal", **sp.to_graph()}
        return None

    # ------------------------------------------------------------ membership

    def add_members(self, group: Group, member_ids: Iterable[str]) -> None:
        # A set beside the ordered list: checking the list for each added id made a bulk add
        # quadratic in the group's size.
        present = set(group.members)
        for member_id in member_ids:
            if member_id not in present:
                present.add(member_id)
                group.members.append(member_id)

    def remove_member(self, group: Group, member_id: str) -> bool:
        if member_id not in group.members:
            return False
        group.members.remove(member_id)
        return True

    def transitive_members(self, group: Group) -> list[str]:
        """Members of the group and of the groups nested in it, each once, in the order met."""
        return list(self._walk_members(group))

    def is_transitive_member(self, group: Group, member_id: str) -> bool:
        """Whether ``member_id`` is in the group or a nested one; stops at the first sight."""
        return any(found == member_id for found in self._walk_members(group))

    def _walk_members(self, group: Group) -> Iterator[str]:
        """Breadth first, each id once, each nested group entered once (cycles end)."""
        seen: set[str] = set()
        pending = deque(group.members)
        entered = {group.id}
        while pending:
            member_id = pending.popleft()
            if member_id in seen:
                continue
            seen.add(member_id)
            yield member_id
            nested = self.groups.get(member_id)
            if nested is not None and nested.id not in entered:
                entered.add(nested.id)
                pending.extend(nested.members)

    # ------------------------------------------------------------ mailbox access

    def mailbox_allowed(self, app_id: str, user_id: str, *, live: bool = False) -> bool:
        policy = self.access_policies.get(app_id)
        if policy is None:
            return True
        if not live and policy.propagated is not None:
            return user_id in policy.propagated
        scope = self.groups.get(policy.scope_group_id)
        return scope is not None and self.is_transitive_member(scope, user_id)

    # ------------------------------------------------------------ calendar

    def mailbox_events(self, user_id: str) -> dict[str, CalendarEvent]:
        return self.events.setdefault(user_id, {})

    def record_change(self, user_id: str, event_id: str, change_type: str) -> None:
        self.change_seq += 1
        self.change_log.setdefault(user_id, []).append((self.change_seq, event_id))
        for listener in list(self.listeners):
            listener(user_id, event_id, change_type)

    def summary(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "users": len(self.users),
            "groups": len(self.groups),
            "applications": len(self.applications),
            "service_principals": len(self.service_principals),
        }
