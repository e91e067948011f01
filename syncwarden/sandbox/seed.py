"""Loading a seed file into tenant state.

Credential dates in the seed are day offsets resolved against the start time, so expiry tests
stay meaningful whenever they run ("expires in 3 days" is always three days away).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncwarden.sandbox.calendar import CalendarEvent, apply_fields, new_event_id
from syncwarden.sandbox.state import (
    AccessPolicy,
    Application,
    Group,
    KeyCredential,
    PasswordCredential,
    ServicePrincipal,
    TeamsApp,
    TenantState,
    User,
)

DEFAULT_SEED = Path(__file__).with_name("seeds") / "default.json"
GRAPH_RESOURCE = "https://graph.microsoft.com"
EXCHANGE_RESOURCE = "https://outlook.office365.com"
BOTFRAMEWORK_RESOURCE = "https://api.botframework.com"
# The share of generated app registrations that have owners.
GENERATED_APPS_WITH_OWNERS = 0.8


@dataclass
class SeedInfo:
    """The seed as loaded, with the values tests reach for most."""

    path: Path
    raw: dict[str, Any]
    tenant_id: str
    app_secrets: dict[str, str] = field(default_factory=dict)
    app_ids: dict[str, str] = field(default_factory=dict)
    group_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)

    def secret_for(self, display_name: str) -> str:
        return self.app_secrets[self.app_ids[display_name]]


def _stable_uuid(*parts: str) -> str:
    """Ids for seed entries that omit one: stable across runs, so logs can be compared."""
    return str(uuid.UUID(hashlib.sha256("|".join(parts).encode()).hexdigest()[:32], version=4))


def _password(
    entry: dict[str, Any], owner: str, now: dt.datetime, index: int
) -> PasswordCredential:
    value = entry.get("value") or f"sbx{secrets.token_urlsafe(30)}"
    return PasswordCredential(
        keyId=entry.get("keyId") or _stable_uuid(owner, "secret", str(index)),
        displayName=entry.get("displayName"),
        start=now + dt.timedelta(days=entry.get("startDays", min(-30, entry["endDays"] - 365))),
        end=now + dt.timedelta(days=entry["endDays"]),
        secret=value,
    )


def _certificate(entry: dict[str, Any], owner: str, now: dt.datetime, index: int) -> KeyCredential:
    fake = hashlib.sha256(f"{owner}|cert|{index}".encode()).digest()
    return KeyCredential(
        keyId=entry.get("keyId") or _stable_uuid(owner, "cert", str(index)),
        displayName=entry.get("displayName"),
        start=now + dt.timedelta(days=entry.get("startDays", min(-30, entry["endDays"] - 365))),
        end=now + dt.timedelta(days=entry["endDays"]),
        usage=entry.get("usage", "Verify"),
        thumbprint_sha1=fake[:20],
        thumbprint_sha256=fake,
        public_key_pem=None,
    )


def load_seed(
    path: Path = DEFAULT_SEED, *, now: dt.datetime | None = None, extra_apps: int | None = None
) -> tuple[TenantState, SeedInfo]:
    raw: dict[str, Any] = json.loads(Path(path).read_text())
    now = now or dt.datetime.now(dt.UTC)
    tenant = raw["tenant"]
    state = TenantState(tenant_id=tenant["id"], domains=list(tenant["domains"]))
    info = SeedInfo(path=Path(path), raw=raw, tenant_id=state.tenant_id)

    for entry in raw.get("users", []):
        user = User(
            id=entry.get("id") or _stable_uuid("user", entry["userPrincipalName"]),
            displayName=entry["displayName"],
            userPrincipalName=entry["userPrincipalName"],
            givenName=entry.get("givenName"),
            surname=entry.get("surname"),
            mail=entry.get("mail"),
            proxyAddresses=list(entry.get("proxyAddresses", [])),
            otherMails=list(entry.get("otherMails", [])),
            accountEnabled=entry.get("accountEnabled", True),
            jobTitle=entry.get("jobTitle"),
            department=entry.get("department"),
            has_mailbox=entry.get("hasMailbox", True),
            has_teams=entry.get("hasTeams", True),
            created=now - dt.timedelta(days=400),
        )
        state.users[user.id] = user
        info.user_ids[user.userPrincipalName] = user.id

    for entry in raw.get("users", []):
        if entry.get("manager"):
            managed = state.users[info.user_ids[entry["userPrincipalName"]]]
            manager = state.user(entry["manager"])
            if manager is None:
                raise ValueError(f"seed user {managed.userPrincipalName!r} has an unknown manager")
            managed.manager_id = manager.id

    def member_id(ref: str) -> str:
        found = state.user(ref)
        if found is not None:
            return found.id
        return ref

    for entry in raw.get("groups", []):
        group = Group(
            id=entry.get("id") or _stable_uuid("group", entry["displayName"]),
            displayName=entry["displayName"],
            mailEnabled=entry["mailEnabled"],
            securityEnabled=entry["securityEnabled"],
            groupTypes=list(entry.get("groupTypes", [])),
            mail=entry.get("mail"),
            mailNickname=entry.get("mailNickname"),
            description=entry.get("description"),
            created=now - dt.timedelta(days=300),
        )
        state.groups[group.id] = group
        info.group_ids[group.displayName] = group.id
    for entry in raw.get("groups", []):
        group = state.groups[info.group_ids[entry["displayName"]]]
        group.members = [member_id(ref) for ref in entry.get("members", [])]
        unknown = [m for m in group.members if m not in state.users and m not in state.groups]
        if unknown:
            raise ValueError(f"seed group {group.displayName!r} has unknown members {unknown}")

    for entry in raw.get("applications", []):
        add_application(state, info, entry, now)

    for entry in raw.get("teamsApps", []):
        teams_app = TeamsApp(
            id=entry.get("id") or _stable_uuid("teamsApp", entry["externalId"]),
            externalId=entry["externalId"],
            displayName=entry["displayName"],
            distributionMethod=entry.get("distributionMethod", "organization"),
            web_application_id=entry.get("webApplicationId"),
        )
        state.teams_apps[teams_app.id] = teams_app

    for entry in raw.get("accessPolicies", []):
        state.access_policies[entry["appId"]] = AccessPolicy(entry["appId"], entry["scopeGroup"])

    for entry in raw.get("events", []):
        add_seed_event(state, entry, now)

    count = raw.get("generatedApps", 0) if extra_apps is None else extra_apps
    generate_apps(state, count, now)
    return state, info


def add_application(
    state: TenantState, info: SeedInfo, entry: dict[str, Any], now: dt.datetime
) -> Application:
    name = entry["displayName"]
    app_id = entry.get("appId") or _stable_uuid("appId", name)
    app = Application(
        id=entry.get("objectId") or _stable_uuid("application", name),
        appId=app_id,
        displayName=name,
        passwords=[_password(e, app_id, now, i) for i, e in enumerate(entry.get("secrets", []))],
        keys=[_certificate(e, app_id, now, i) for i, e in enumerate(entry.get("certificates", []))],
        owners=[u.id for ref in entry.get("owners", []) if (u := state.user(ref)) is not None],
        created=now - dt.timedelta(days=500),
    )
    sp_keys = [
        _certificate(e, app_id + "sp", now, i)
        for i, e in enumerate(entry.get("servicePrincipalCertificates", []))
    ]
    sp = ServicePrincipal(
        id=entry.get("servicePrincipalId") or _stable_uuid("sp", name),
        appId=app_id,
        displayName=name,
        tenant_id=state.tenant_id,
        keys=sp_keys,
        owners=list(app.owners),
        roles={resource: set(roles) for resource, roles in entry.get("roles", {}).items()},
    )
    state.applications[app.id] = app
    state.service_principals[sp.id] = sp
    if entry.get("exchangeRoles"):
        state.exchange_roles[app_id] = set(entry["exchangeRoles"])
    info.app_ids[name] = app_id
    if app.passwords:
        info.app_secrets[app_id] = app.passwords[-1].secret
    return app


def generate_apps(state: TenantState, count: int, now: dt.datetime) -> None:
    """Extra registrations for scale tests; deterministic so page boundaries are repeatable.

    Most of them have one to three owners drawn from the seed's people, as registrations in a
    real tenant do; the owners come from a generator of their own, so the apps and credentials
    are the same as before owners were added.
    """
    rng = random.Random(count)  # noqa: S311 - test data, not security
    owner_rng = random.Random(f"owners:{count}")  # noqa: S311 - test data, not security
    people = sorted(state.users)
    for index in range(count):
        name = f"Generated App {index:05d}"
        app_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        app = Application(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            appId=app_id,
            displayName=name,
            created=now - dt.timedelta(days=rng.randint(1, 900)),
        )
        for slot in range(rng.randint(0, 2)):
            app.passwords.append(
                _password(
                    {"endDays": rng.randint(-30, 720), "displayName": f"s{slot}"}, app_id, now, slot
                )
            )
        if rng.random() < 0.3:
            app.keys.append(_certificate({"endDays": rng.randint(-30, 720)}, app_id, now, 0))
        if people and owner_rng.random() < GENERATED_APPS_WITH_OWNERS:
            app.owners = owner_rng.sample(people, min(len(people), owner_rng.randint(1, 3)))
        state.applications[app.id] = app
        sp_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        state.service_principals[sp_id] = ServicePrincipal(
            id=sp_id,
            appId=app_id,
            displayName=name,
            tenant_id=state.tenant_id,
            owners=list(app.owners),
        )


def add_seed_event(state: TenantState, entry: dict[str, Any], now: dt.datetime) -> CalendarEvent:
    user = state.user(entry["mailbox"])
    if user is None:
        raise ValueError(f"seed event for unknown mailbox {entry['mailbox']!r}")
    day = (now + dt.timedelta(days=entry.get("startDays", 0))).date()
    hour, minute = (int(p) for p in entry.get("startTime", "09:00").split(":"))
    start = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)
    end = start + dt.timedelta(minutes=entry.get("durationMinutes", 60))
    event = CalendarEvent(id=new_event_id(), start=start, end=end, start_tz="UTC", end_tz="UTC")
    payload: dict[str, Any] = {"subject": entry["subject"], "showAs": entry.get("showAs", "busy")}
    if "location" in entry:
        payload["location"] = {"displayName": entry["location"]}
    if "recurrence" in entry:
        recurrence = json.loads(json.dumps(entry["recurrence"]))
        recurrence["range"]["startDate"] = day.isoformat()
        payload["recurrence"] = recurrence
    apply_fields(event, payload, creating=True)
    state.mailbox_events(user.id)[event.id] = event
    return event
