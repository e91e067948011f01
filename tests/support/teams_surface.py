"""Syncwarden wired as ``serve`` wires it, talked to over HTTP the way Teams talks to it.

A test of the Teams surface needs both halves of the conversation: what people send (activities
posted to ``POST /api/messages``) and everything the bot sends back, whether as the answer of the
turn or later through the outbox (approval cards, decisions, set-up instructions, failures, IT's
status lines). Here both halves go over the wire: the web app, the Agents SDK, the dialogue, the
workflow, the outbox and Teams delivery are the production ones, the sandbox tenant plays
Microsoft 365, and a :class:`ConnectorRecorder` plays the Bot Framework connector that receives
every reply and proactive message. Only the step runner and the outbox dispatcher are stepped by
the test (:meth:`TeamsSurface.settle`) instead of by their background loops, so a test looks at
exact moments and never sleeps.

Teams' people are the sandbox tenant's (:data:`tests.support.workflow.PEOPLE`); each writes from a
1:1 chat ``a:<key>``, and IT has given two channels their roles, as the README tells it to.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.core.settings import Settings
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.web import create_app
from syncwarden.workflow_wiring import Workflows, build_teams_delivery, build_workflows
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from tests.support.m365 import sandbox_settings
from tests.support.recorder import ConnectorRecorder, RecordedRequest, message_activity
from tests.support.workflow import PEOPLE, SYNC_GROUP

WebClient = TestClient[web.Request, web.Application]
BOT_ID = "28:syncwarden-bot"
BOT_NAME = "Syncwarden"
IT_CHANNEL = "19:it-general@thread.tacv2"
APPROVALS_CHANNEL = "19:it-approvals@thread.tacv2"
CARD = "application/vnd.microsoft.card.adaptive"


def display_name(key: str) -> str:
    """The sandbox's display name of person ``key`` ("avery" -> "Avery Quinlan")."""
    return PEOPLE[key].split("@")[0].replace(".", " ").title()


def chat(key: str) -> str:
    """The id of the 1:1 chat between person ``key`` and the bot."""
    return f"a:{key}"


@dataclass(frozen=True)
class Post:
    """One message the bot sent to the connector: where, and what (text and/or a card)."""

    method: str
    conversation: str
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")

    @property
    def card(self) -> dict[str, Any] | None:
        for attachment in self.body.get("attachments") or []:
            if attachment.get("contentType") == CARD:
                content: dict[str, Any] = attachment["content"]
                return content
        return None

    @property
    def headline(self) -> str:
        """The card's first line (its title or IT's status line), or the message's text."""
        card = self.card
        if card is None:
            return self.text
        first: dict[str, Any] = next((e for e in card["body"] if e.get("type") == "TextBlock"), {})
        return str(first.get("text", ""))

    def fact(self, title: str) -> str | None:
        """The value of the card's fact ``title`` (e.g. "Mailbox"), if it has one."""
        for element in (self.card or {}).get("body", []):
            for fact in element.get("facts", []):
                if fact.get("title") == title:
                    return str(fact.get("value"))
        return None

    def action_data(self, verb: str) -> dict[str, Any]:
        """What Teams sends for a click on the card's ``verb`` button with its inputs as shown:
        the action's own data and every input's current value under its id."""
        card = self.card
        assert card is not None, f"no card in {self.body}"
        action = next(a for a in card.get("actions", []) if a.get("verb") == verb)
        data: dict[str, Any] = dict(action.get("data", {}))
        for element in card["body"]:
            if str(element.get("type", "")).startswith("Input.") and "id" in element:
                data[element["id"]] = element.get("value", "")
        return data


def answered(invoke: dict[str, Any]) -> Post:
    """A card click's answer (the card shown in place of the clicked one) as a :class:`Post`."""
    assert invoke.get("type") == CARD, f"the click was answered without a card: {invoke}"
    return Post("INVOKE", "", {"attachments": [{"contentType": CARD, "content": invoke["value"]}]})


def _post_of(request: RecordedRequest) -> Post | None:
    """The bot's message in a connector request (``/v3/conversations/{id}/activities[/...]``)."""
    parts = request.path.strip("/").split("/")
    if len(parts) < 4 or parts[:2] != ["v3", "conversations"] or parts[3] != "activities":
        return None
    if not isinstance(request.body, dict):
        return None
    return Post(request.method, parts[2], request.body)


@dataclass
class TeamsSurface:
    """People talking to Syncwarden over ``/api/messages``, and what it sends back."""

    client: WebClient
    recorder: ConnectorRecorder
    tenant: SandboxTenant
    m365: Microsoft365
    workflows: Workflows
    dispatcher: OutboxDispatcher
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def aad_id(self, key: str) -> str:
        return self.tenant.seed.user_ids[PEOPLE[key]]

    def mark(self) -> int:
        """A point in the conversation; ``posts(since=...)`` shows what the bot sent after it."""
        return len(self.recorder.requests)

    def posts(self, conversation: str | None = None, *, since: int = 0) -> list[Post]:
        """Every new message (POST) the bot sent, to ``conversation`` or anywhere."""
        found = [_post_of(request) for request in self.recorder.requests[since:]]
        return [
            post
            for post in found
            if post is not None
            and post.method == "POST"
            and (conversation is None or post.conversation == conversation)
        ]

    def updates(self, *, since: int = 0) -> list[Post]:
        """Every card the bot updated in place (PUT), anywhere."""
        found = [_post_of(request) for request in self.recorder.requests[since:]]
        return [post for post in found if post is not None and post.method == "PUT"]

    def texts(self, conversation: str, *, since: int = 0) -> list[str]:
        return [post.text for post in self.posts(conversation, since=since) if post.card is None]

    def _activity(self, key: str, conversation: str | None, text: str | None) -> dict[str, Any]:
        activity = message_activity(
            self.recorder.url, text or "", activity_id=f"act-{next(self._ids)}"
        )
        activity["from"] = {
            "id": f"29:{key}",
            "name": display_name(key),
            "aadObjectId": self.aad_id(key),
        }
        if conversation is None:
            activity["conversation"] = {
                "id": chat(key),
                "conversationType": "personal",
                "tenantId": self.tenant.tenant_id,
            }
        else:
            activity["conversation"] = {
                "id": conversation,
                "conversationType": "channel",
                "isGroup": True,
                "tenantId": self.tenant.tenant_id,
            }
        activity["channelData"] = {"tenant": {"id": self.tenant.tenant_id}}
        activity["recipient"] = {"id": BOT_ID, "name": BOT_NAME}
        return activity

    async def say(self, key: str, text: str, *, channel: str | None = None) -> list[Post]:
        """Person ``key`` writes ``text`` in their 1:1 chat (or, @mentioning the bot, in
        ``channel``); the bot's answers in that conversation during the turn."""
        if channel is not None:
            text = f"<at>{BOT_NAME}</at> {text}"
        activity = self._activity(key, channel, text)
        if channel is not None:
            activity["entities"] = [
                {
                    "type": "mention",
                    "text": f"<at>{BOT_NAME}</at>",
                    "mentioned": {"id": BOT_ID, "name": BOT_NAME},
                }
            ]
        before = self.mark()
        response = await self.client.post("/api/messages", json=activity)
        assert response.status in (200, 201, 202), await response.text()
        return self.posts(channel or chat(key), since=before)

    async def answer(self, key: str, text: str, *, channel: str | None = None) -> Post:
        """The one answer of the bot to person ``key`` writing ``text``."""
        [answer] = await self.say(key, text, channel=channel)
        return answer

    async def click(
        self,
        key: str,
        verb: str,
        data: dict[str, Any],
        *,
        channel: str | None = None,
        card_id: str = "card-1",
    ) -> dict[str, Any]:
        """Person ``key`` presses the Action.Execute button ``verb`` carrying ``data`` (in their
        1:1 chat, or in ``channel``); the invoke's answer (``{"statusCode", "type", "value"}``)."""
        activity = self._activity(key, channel, None)
        activity.update(
            type="invoke",
            name="adaptiveCard/action",
            text=None,
            replyToId=card_id,
            value={
                "action": {"type": "Action.Execute", "verb": verb, "data": {"verb": verb, **data}},
                "trigger": "manual",
            },
        )
        response = await self.client.post("/api/messages", json=activity)
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        assert body["statusCode"] == 200, body
        return body

    async def settle(self) -> list[Post]:
        """Let the background work catch up: run every due provisioning step and deliver every
        due outbox message, until neither has anything left. The messages it sent."""
        before = self.mark()
        while True:
            ran = await self.workflows.runner.run_until_idle()
            sent = await self.dispatcher.dispatch_due()
            if not ran and not sent:
                return self.posts(since=before)


def _settings(tenant: SandboxTenant, approvals: dict[str, Any], **more: Any) -> Settings:
    groups = tenant.seed.group_ids
    return sandbox_settings(
        tenant,
        graph={"sync_group_id": groups[SYNC_GROUP]},
        approvals={
            "approvers_group_id": groups["Calendar Sync Approvers"],
            "it_admins_group_id": groups["IT Admins"],
            **approvals,
        },
        **more,
    )


@asynccontextmanager
async def teams_surface(
    engine: AsyncEngine,
    tenant: SandboxTenant,
    *,
    approvals: dict[str, Any] | None = None,
    **settings_sections: Any,
) -> AsyncIterator[TeamsSurface]:
    """Syncwarden serving ``/api/messages`` on a local port, with every sandbox person's
    scheduling profile loaded, the approvers and IT in a chat with the bot, and IT's two channels
    set up (``IT_CHANNEL`` for status lines and failures, ``APPROVALS_CHANNEL`` for approvals).
    ``approvals`` overrides approval settings (``auto_approve_it_on_behalf``, say), and other
    keywords whole settings sections (``reconcile={...}``)."""
    settings = _settings(tenant, approvals or {}, **settings_sections)
    sessions = session_factory(engine)
    async with AsyncExitStack() as stack:
        recorder = await ConnectorRecorder().start()
        stack.push_async_callback(recorder.close)
        m365 = build_microsoft365(settings)
        stack.push_async_callback(m365.aclose)
        teams_http = httpx.AsyncClient()
        stack.push_async_callback(teams_http.aclose)
        dispatcher, conversations = build_teams_delivery(settings, sessions, teams_http, m365=m365)
        workflows = build_workflows(settings, sessions, m365)
        assert workflows is not None, "the sandbox settings name a sync group"
        stack.push_async_callback(workflows.sync.aclose)
        for key, upn in PEOPLE.items():
            await workflows.scheduling.upsert_profile(
                Profile(f"prof-{key}", display_name(key), upn)
            )
        dialogue = DialogueLogic(
            conversations, workflows.service, workflows.roster, drift=workflows.drift
        )
        client: WebClient = TestClient(
            TestServer(create_app(settings, engine, dialogue), host="127.0.0.1")
        )
        await client.start_server()
        stack.push_async_callback(client.close)
        surface = TeamsSurface(client, recorder, tenant, m365, workflows, dispatcher)
        # Approvers and IT have opened their chat with the bot, so its messages reach them.
        for key in ("casey", "emerson", "dana"):
            await surface.answer(key, "help")
        alerts = await surface.answer("dana", "use this channel for alerts", channel=IT_CHANNEL)
        assert "status lines" in alerts.text, alerts
        approving = await surface.answer(
            "dana", "use this channel for approvals", channel=APPROVALS_CHANNEL
        )
        assert "Approval cards now go to this channel" in approving.text, approving
        yield surface
