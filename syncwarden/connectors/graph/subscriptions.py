"""Graph change-notification subscriptions for mailboxes' events.

Graph decides how long a subscription lives (for events, at most a few days) and says so in its
answer; callers must store the granted ``expirationDateTime`` and renew before it, not assume the
one they asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from syncwarden.connectors.errors import NotFoundError
from syncwarden.connectors.graph.applications import parse_graph_datetime
from syncwarden.connectors.graph.calendar import graph_time
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.paths import segment


@dataclass(frozen=True)
class Subscription:
    id: str
    resource: str
    expires_at: datetime | None
    notification_url: str = ""


class GraphSubscriptions:
    def __init__(self, client: GraphClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        resource: str,
        notification_url: str,
        client_state: str,
        expires_at: datetime,
        change_type: str = "created,updated,deleted",
        lifecycle_url: str | None = None,
    ) -> Subscription:
        body = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": graph_time(expires_at),
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url
        response = await self._client.request("POST", "subscriptions", json_body=body)
        return _subscription(response.body)

    async def list_all(self) -> list[Subscription]:
        """Every subscription this app holds (app-only tokens list the app's own)."""
        return [_subscription(item) for item in await self._client.collect("subscriptions")]

    async def renew(self, subscription_id: str, expires_at: datetime) -> Subscription:
        response = await self._client.request(
            "PATCH",
            f"subscriptions/{segment(subscription_id)}",
            json_body={"expirationDateTime": graph_time(expires_at)},
        )
        return _subscription(response.body)

    async def delete(self, subscription_id: str) -> bool:
        try:
            await self._client.request("DELETE", f"subscriptions/{segment(subscription_id)}")
        except NotFoundError:
            return False
        return True


def _subscription(body: dict[str, str]) -> Subscription:
    return Subscription(
        id=body["id"],
        resource=body.get("resource", ""),
        expires_at=parse_graph_datetime(body.get("expirationDateTime")),
        notification_url=body.get("notificationUrl", ""),
    )
