"""Events in people's mailboxes: tagged creates, updates, deletes, views and delta rounds.

Every event Syncwarden creates carries a single-value extended property holding the source
appointment id. That tag is how we recognise our own events (no echo back into the scheduling
system) and find them again after losing a link. Creates also carry a ``transactionId`` so that a
retried POST cannot make a duplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncwarden.connectors.errors import DuplicateTransactionError, NotFoundError
from syncwarden.connectors.graph.client import BatchRequest, BatchResult, DeltaResult, GraphClient
from syncwarden.connectors.graph.odata import quote
from syncwarden.connectors.graph.paths import segment

# Our own namespace GUID for extended properties; never change it (existing events carry it).
SOURCE_ID_PROPERTY = "String {4f6b2a1e-8c3d-4e5f-9a7b-1c2d3e4f5a6b} Name SyncwardenSourceId"
_EXPAND_TAG = f"singleValueExtendedProperties($filter=id eq {quote(SOURCE_ID_PROPERTY)})"


def graph_time(moment: datetime) -> str:
    """ISO 8601 with offset, as Graph's calendarView expects; naive times are refused."""
    if moment.tzinfo is None:
        raise ValueError("calendar times must be timezone-aware")
    return moment.isoformat()


def source_id_of(event: dict[str, Any]) -> str | None:
    """The source appointment id our tag carries, or None for events we did not create."""
    for prop in event.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == SOURCE_ID_PROPERTY.lower():
            value = prop.get("value")
            return value if isinstance(value, str) else None
    return None


class GraphCalendar:
    def __init__(self, client: GraphClient) -> None:
        self._client = client

    async def create_event(
        self, mailbox: str, event: dict[str, Any], *, source_id: str, transaction_id: str
    ) -> dict[str, Any]:
        body = {
            **event,
            "transactionId": transaction_id,
            "singleValueExtendedProperties": [{"id": SOURCE_ID_PROPERTY, "value": source_id}],
        }
        try:
            response = await self._client.request(
                "POST",
                f"users/{segment(mailbox)}/events",
                json_body=body,
                mailbox=mailbox,
                idempotent=True,
            )
        except DuplicateTransactionError as duplicate:
            # Made by an earlier attempt (a retry after a lost answer, or a crashed run).
            existing = await self._event_of_transaction(
                mailbox, duplicate, source_id, transaction_id
            )
            if existing is None:
                raise
            return existing
        created: dict[str, Any] = response.body
        return created

    async def _event_of_transaction(
        self,
        mailbox: str,
        duplicate: DuplicateTransactionError,
        source_id: str,
        transaction_id: str,
    ) -> dict[str, Any] | None:
        if duplicate.existing_event_id:
            try:
                found: dict[str, Any] = await self._client.get(
                    f"users/{segment(mailbox)}/events/{segment(duplicate.existing_event_id)}",
                    mailbox=mailbox,
                )
                return found
            except NotFoundError:
                return None
        tagged = await self.find_by_source_id(mailbox, source_id)
        return next((e for e in tagged if e.get("transactionId") == transaction_id), None)

    async def update_event(
        self, mailbox: str, event_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        response = await self._client.request(
            "PATCH",
            f"users/{segment(mailbox)}/events/{segment(event_id)}",
            json_body=changes,
            mailbox=mailbox,
        )
        updated: dict[str, Any] = response.body
        return updated

    async def delete_event(self, mailbox: str, event_id: str) -> bool:
        """Delete; False when the event was already gone (a repeated delete is not an error)."""
        try:
            await self._client.request(
                "DELETE", f"users/{segment(mailbox)}/events/{segment(event_id)}", mailbox=mailbox
            )
        except NotFoundError:
            return False
        return True

    async def find_by_source_id(self, mailbox: str, source_id: str) -> list[dict[str, Any]]:
        tag_filter = (
            "singleValueExtendedProperties/Any(ep: ep/id eq "
            f"{quote(SOURCE_ID_PROPERTY)} and ep/value eq {quote(source_id)})"
        )
        return await self._client.collect(
            f"users/{segment(mailbox)}/events",
            params={"$filter": tag_filter, "$expand": _EXPAND_TAG},
            mailbox=mailbox,
        )

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        return await self._client.collect(
            f"users/{segment(mailbox)}/calendarView",
            params={
                "startDateTime": graph_time(start),
                "endDateTime": graph_time(end),
                "$expand": _EXPAND_TAG,
                "$top": "500",
            },
            mailbox=mailbox,
        )

    async def tagged_events(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Events between ``start`` and ``end`` that carry our tag (series masters included)."""
        seen: dict[str, dict[str, Any]] = {}
        for event in await self.calendar_view(mailbox, start, end):
            if source_id_of(event) is None:
                continue
            key = event.get("seriesMasterId") or event["id"]
            seen.setdefault(key, {**event, "id": key})
        return list(seen.values())

    async def write_batch(self, mailbox: str, requests: list[BatchRequest]) -> list[BatchResult]:
        """Writes for one mailbox in unordered ``$batch`` calls (Graph runs 4 at a time)."""
        return await self._client.batch(requests, mailbox=mailbox, idempotent=True)

    async def existing(self, mailbox: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Which of ``event_ids`` still exist, read in batches; a 404 means deleted.

        Delta cannot tell a deleted event from one moved out of its window (both come as
        ``@removed``), and a full round does not list events outside it; this read can.
        """
        requests = [
            BatchRequest(
                f"g{index}", "GET", f"/users/{segment(mailbox)}/events/{segment(event_id)}"
            )
            for index, event_id in enumerate(event_ids)
        ]
        found: dict[str, dict[str, Any]] = {}
        results = await self._client.batch(requests, mailbox=mailbox, idempotent=True)
        for event_id, result in zip(event_ids, results, strict=True):
            if result.status == 404:
                continue  # only a 404 means deleted; anything unclear must not cause a re-create
            if result.ok:
                found[event_id] = result.body if isinstance(result.body, dict) else {}
            elif result.error is not None:
                raise result.error
        return found

    async def delta(
        self,
        mailbox: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        delta_link: str | None = None,
    ) -> DeltaResult:
        """A full round of ``calendarView/delta``: from a stored link, or a new window.

        Delta accepts no ``$select``/``$filter``; page size is set with ``Prefer``.
        """
        headers = {"Prefer": "odata.maxpagesize=200"}
        if delta_link is not None:
            return await self._client.delta(delta_link, headers=headers, mailbox=mailbox)
        if start is None or end is None:
            raise ValueError("a first delta round needs a start and an end")
        return await self._client.delta(
            f"users/{segment(mailbox)}/calendarView/delta",
            params={"startDateTime": graph_time(start), "endDateTime": graph_time(end)},
            headers=headers,
            mailbox=mailbox,
        )


def create_request(
    request_id: str, mailbox: str, event: dict[str, Any], *, source_id: str, transaction_id: str
) -> BatchRequest:
    """A ``$batch`` item creating a tagged event; the transaction id makes a repeat harmless."""
    body = {
        **event,
        "transactionId": transaction_id,
        "singleValueExtendedProperties": [{"id": SOURCE_ID_PROPERTY, "value": source_id}],
    }
    return BatchRequest(request_id, "POST", f"/users/{segment(mailbox)}/events", body)


def update_request(
    request_id: str, mailbox: str, event_id: str, changes: dict[str, Any]
) -> BatchRequest:
    return BatchRequest(
        request_id, "PATCH", f"/users/{segment(mailbox)}/events/{segment(event_id)}", changes
    )


def delete_request(request_id: str, mailbox: str, event_id: str) -> BatchRequest:
    return BatchRequest(
        request_id, "DELETE", f"/users/{segment(mailbox)}/events/{segment(event_id)}"
    )
