"""A local stand-in for the Bot Framework connector service: records every request sent to it.

The bot replies to the ``serviceUrl`` of the activity it received; pointing that at this recorder
lets a test see the reply exactly as it went over the wire.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ConnectorRecorder:
    """Answers like the connector (``{"id": ...}``) and can hold replies until released."""

    requests: list[RecordedRequest] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None
    # Answers to give before the normal 200: (status, headers, body text).
    scripted: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    # Conversation members the member API knows, by Teams user id; and the lookups it answered
    # (kept apart from ``requests``, which are the bot's sends).
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.release.set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    async def start(self) -> ConnectorRecorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and len(parts) == 5 and parts[:2] == ["v3", "conversations"]:
            return self._member(parts[4])
        raw = await request.text()
        body = json.loads(raw) if raw else None
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        self.received.set()
        await self.release.wait()
        if self.scripted:
            status, headers, text = self.scripted.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        return web.json_response({"id": f"reply-{len(self.requests)}"})

    def _member(self, member_id: str) -> web.Response:
        """``GET /v3/conversations/{id}/members/{userId}`` (learn.microsoft.com, Teams platform,
        "Get single member details"): the member with ``aadObjectId``, or 404 when the user is
        not in the conversation (the error body's wording is not published; any 404 will do)."""
        self.lookups.append(member_id)
        if member_id in self.members:
            return web.json_response(self.members[member_id])
        return web.json_response(
            {"error": {"code": "NotFound", "message": "member not found"}}, status=404
        )


def message_activity(
    service_url: str, text: str = "hello", activity_id: str = "act-1"
) -> dict[str, Any]:
    """A Teams 1:1 message activity as the channel delivers it (invented people on example.edu)."""
    return {
        "type": "message",
        "id": activity_id,
        "text": text,
        "channelId": "msteams",
        "serviceUrl": service_url,
        "timestamp": "2026-11-22T09:00:00.000Z",
        "from": {
            "id": "29:staff-ada",
            "name": "Ada Lovelace",
            "aadObjectId": "0a0a0a0a-0000-4000-8000-000000000001",
        },
        "recipient": {"id": "28:syncwarden-bot", "name": "Syncwarden"},
        "conversation": {
            "id": "a:personal-ada",
            "conversationType": "personal",
            "tenantId": "sandbox-tenant",
        },
        "channelData": {"tenant": {"id": "sandbox-tenant"}},
        "locale": "en-GB",
    }
