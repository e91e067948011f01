"""App registrations and service principals with their secrets and certificates.

One listing request returns up to 999 objects with their credentials (``$select`` keeps the answer
small), so a tenant with thousands of apps costs a handful of requests, not one per app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.paths import segment

CREDENTIAL_FIELDS = "id,appId,displayName,passwordCredentials,keyCredentials"
PAGE_SIZE = "999"


class CredentialKind(StrEnum):
    SECRET = "secret"  # noqa: S105 - a kind of credential, not a credential
    CERTIFICATE = "certificate"


class OwnerKind(StrEnum):
    APPLICATION = "applications"
    SERVICE_PRINCIPAL = "servicePrincipals"


@dataclass(frozen=True)
class AppCredential:
    kind: CredentialKind
    key_id: str
    display_name: str | None
    hint: str | None
    thumbprint: str | None
    usage: str | None
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class AppWithCredentials:
    object_id: str
    app_id: str
    display_name: str
    owner_kind: OwnerKind
    credentials: tuple[AppCredential, ...]


def parse_graph_datetime(value: Any) -> datetime | None:
    """Graph timestamps are ISO 8601 in UTC with a ``Z``; anything unparseable becomes None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def credentials_from_graph(data: dict[str, Any]) -> tuple[AppCredential, ...]:
    found: list[AppCredential] = []
    for secret in data.get("passwordCredentials") or []:
        found.append(
            AppCredential(
                kind=CredentialKind.SECRET,
                key_id=str(secret.get("keyId")),
                display_name=secret.get("displayName"),
                hint=secret.get("hint"),
                thumbprint=None,
                usage=None,
                start=parse_graph_datetime(secret.get("startDateTime")),
                end=parse_graph_datetime(secret.get("endDateTime")),
            )
        )
    for key in data.get("keyCredentials") or []:
        found.append(
            AppCredential(
                kind=CredentialKind.CERTIFICATE,
                key_id=str(key.get("keyId")),
                display_name=key.get("displayName"),
                hint=None,
                thumbprint=key.get("customKeyIdentifier"),
                usage=key.get("usage"),
                start=parse_graph_datetime(key.get("startDateTime")),
                end=parse_graph_datetime(key.get("endDateTime")),
            )
        )
    return tuple(found)


class GraphApplications:
    def __init__(self, client: GraphClient) -> None:
        self._client = client

    async def list_with_credentials(self, kind: OwnerKind) -> list[AppWithCredentials]:
        found = await self._client.collect(
            kind.value, params={"$select": CREDENTIAL_FIELDS, "$top": PAGE_SIZE}
        )
        return [
            AppWithCredentials(
                object_id=item["id"],
                app_id=item.get("appId") or "",
                display_name=item.get("displayName") or "",
                owner_kind=kind,
                credentials=credentials_from_graph(item),
            )
            for item in found
        ]

    async def owners(self, kind: OwnerKind, object_id: str) -> list[str]:
        """Display names (or UPNs) of an app's owners, for the alert card."""
        # Owner lists are short; no $select, since owners may be users or service principals.
        found = await self._client.collect(f"{kind.value}/{segment(object_id)}/owners")
        return [
            item.get("displayName") or item.get("userPrincipalName") or item["id"] for item in found
        ]
