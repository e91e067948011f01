"""App registrations and service principals with their secrets and certificates.

One listing request returns up to 999 objects with their credentials (``$select`` keeps the answer
small), so a tenant with thousands of apps costs a handful of requests, not one per app.

Owners are read in ``$batch`` calls of 20 ``GET /{kind}/{id}/owners`` requests, and only for the
apps the caller names (the ones about to be alerted). ``$expand=owners`` on the listing is
documented, but it gives at most 20 owners per app with no ``@odata.nextLink`` to the rest (known
issue 13635, "Some limitations apply to query parameters"), is reported to shrink listing pages
from 999 to 100, and would read every app's owners on every scan; a batch reads the few that are
needed, pages each list fully, and gives each lookup its own status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from syncwarden.connectors.errors import (
    AccessDeniedError,
    ConnectorError,
    NotFoundError,
    ThrottledError,
)
from syncwarden.connectors.graph.client import BATCH_LIMIT, BatchRequest, BatchResult, GraphClient
from syncwarden.connectors.graph.paths import UnaddressableIdError, segment

CREDENTIAL_FIELDS = "id,appId,displayName,passwordCredentials,keyCredentials"
PAGE_SIZE = "999"
# $batch calls of owner lookups in flight at once: enough to hide the round trips, few enough
# that a scan never crowds out the sync's own requests in the shared limiter.
OWNER_BATCHES_IN_FLIGHT = 4


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
class Owners:
    """An app's owners as read for an alert, or why they could not be read.

    A lookup that failed is an answer, not an exception: the expiry is what the alert is for, so
    an unreadable owner list must not hold the alert back, only be said in it.
    """

    names: tuple[str, ...] = ()
    unreadable: str | None = None


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
        return [_owner_name(item) for item in found]

    async def owners_of_many(self, kind: OwnerKind, object_ids: Iterable[str]) -> dict[str, Owners]:
        """Each app's owners, keyed by object id, read 20 to a ``$batch`` call.

        Throttled lookups are retried inside the batch after the longest ``Retry-After`` (see
        :meth:`GraphClient.batch`); a lookup that still fails, or a ``$batch`` call that fails as a
        whole, comes back as :class:`Owners` with ``unreadable`` set instead of raising.
        """
        wanted = list(dict.fromkeys(object_ids))
        found: dict[str, Owners] = {}
        requests: list[BatchRequest] = []
        for number, object_id in enumerate(wanted):
            try:
                path = f"/{kind.value}/{segment(object_id)}/owners"
            except UnaddressableIdError as error:
                found[object_id] = Owners(unreadable=_why(error))
                continue
            requests.append(BatchRequest(str(number), "GET", path))
        gate = asyncio.Semaphore(OWNER_BATCHES_IN_FLIGHT)

        async def read(chunk: list[BatchRequest]) -> list[tuple[str, Owners]]:
            async with gate:
                try:
                    results = await self._client.batch(chunk, idempotent=True)
                except ConnectorError as error:
                    return [(item.id, Owners(unreadable=_why(error))) for item in chunk]
            return [(result.id, await self._owners_from(result)) for result in results]

        chunks = [requests[at : at + BATCH_LIMIT] for at in range(0, len(requests), BATCH_LIMIT)]
        for answers in await asyncio.gather(*(read(chunk) for chunk in chunks)):
            for request_id, owners in answers:
                found[wanted[int(request_id)]] = owners
        return found

    async def _owners_from(self, result: BatchResult) -> Owners:
        """One batch answer as owners, following ``@odata.nextLink`` past the first page."""
        if result.error is not None or not result.ok:
            return Owners(unreadable=_why(result.error))
        body = result.body if isinstance(result.body, dict) else {}
        names = [_owner_name(item) for item in body.get("value") or []]
        link = body.get("@odata.nextLink")
        if isinstance(link, str):
            try:
                names.extend(_owner_name(item) for item in await self._client.collect(link))
            except ConnectorError as error:
                partly = f"only the first {len(names)} could be read, {_why(error)}"
                return Owners(tuple(names), partly)
        return Owners(tuple(names))


def _owner_name(item: dict[str, Any]) -> str:
    return str(item.get("displayName") or item.get("userPrincipalName") or item["id"])


def _why(error: ConnectorError | None) -> str:
    """Why owners could not be read, in words for IT (the details are in the log)."""
    if isinstance(error, NotFoundError):
        return "the app was not found (removed since it was listed?)"
    if isinstance(error, ThrottledError):
        return "Microsoft Graph was still throttling the lookup after the retries"
    if isinstance(error, AccessDeniedError):
        return "Syncwarden was refused reading them"
    if error is not None and error.status:
        return f"Microsoft Graph answered {error.status}"
    return "Microsoft Graph did not answer"
