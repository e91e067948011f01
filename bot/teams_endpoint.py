"""The Bot Framework endpoint, and the only module that imports the Microsoft 365 Agents SDK.

Keeping the SDK behind this one module means an SDK upgrade (or a move to another SDK) touches one
file. Incoming activities on ``POST /api/messages`` carry a Bot Framework JWT that the SDK
validates (signature, audience, expiry, and the issuer allow-list, which the SDK leaves opt-in and
we turn on). Anonymous traffic is accepted only when the settings say so, which they allow only in
sandbox mode.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    Attachment,
    InvokeResponse,
    TurnContextProtocol,
)
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_decorator
from microsoft_agents.hosting.core import ActivityHandler, AgentAuthConfiguration
from microsoft_agents.hosting.core.authorization import AuthTypes

from bot.activity_shape import activity_shape_problem
from bot.cards import CONTENT_TYPE
from bot.conversations import ConversationKind, ConversationRef
from bot.dialogue import DialogueLogic, Incoming, Reply
from bot.intents import Mention
from bot.replies import HELP_TEXT
from core.logging import get_logger
from core.settings import Settings
from workflows.ports import Person

MESSAGES_PATH = "/api/messages"
_SERVICE_CONNECTION = "SERVICE_CONNECTION"

log = get_logger(__name__)


class SyncwardenAgent(ActivityHandler):
    """Turns Teams activities into calls on the dialogue logic, and its replies into activities."""

    def __init__(self, dialogue: DialogueLogic | None) -> None:
        super().__init__()
        self._dialogue = dialogue

    async def on_turn(self, turn_context: TurnContextProtocol[Any]) -> None:
        activity = turn_context.activity
        log.info(
            "bot.activity",
            activity_type=activity.type,
            name=getattr(activity, "name", None),
            conversation_id=getattr(activity.conversation, "id", None),
        )
        if activity.type == ActivityTypes.message and not (activity.text or activity.value):
            return
        await super().on_turn(turn_context)

    async def on_message_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is None:
            await turn_context.send_activity(HELP_TEXT)
            return
        for reply in await self._dialogue.on_message(_incoming(turn_context.activity)):
            await turn_context.send_activity(_activity_for(reply))

    async def on_invoke_activity(self, turn_context: TurnContextProtocol[Any]) -> InvokeResponse:
        activity = turn_context.activity
        if activity.name != "adaptiveCard/action":
            return InvokeResponse(status=501, body=None)
        if self._dialogue is None:
            return InvokeResponse(status=200, body=_invoke_body(Reply(HELP_TEXT)))
        incoming = _incoming(activity, value=_card_action_value(activity.value))
        await self._dialogue.remember(incoming)
        reply = await self._dialogue.on_card_action(incoming)
        return InvokeResponse(status=200, body=_invoke_body(reply))

    async def on_installation_update_add(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is not None:
            await self._dialogue.remember(_incoming(turn_context.activity))
        await turn_context.send_activity(HELP_TEXT)

    async def on_installation_update_remove(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is not None:
            await self._dialogue.forget(turn_context.activity.conversation.id)


def _incoming(activity: Any, *, value: dict[str, Any] | None = None) -> Incoming:
    """The parts of an SDK activity the dialogue needs, as plain data."""
    sender = activity.from_property
    conversation = activity.conversation
    kind_text = getattr(conversation, "conversation_type", None) or "personal"
    kind = (
        ConversationKind(kind_text)
        if kind_text in ("personal", "channel", "groupChat")
        else ConversationKind.PERSONAL
    )
    aad_id = getattr(sender, "aad_object_id", None)
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = getattr(conversation, "tenant_id", None) or (channel_data.get("tenant") or {}).get(
        "id"
    )
    personal = kind is ConversationKind.PERSONAL
    ref = ConversationRef(
        # In a channel the id names the thread (";messageid=..."); later posts start new threads.
        conversation_id=conversation.id.split(";messageid=")[0],
        kind=kind,
        service_url=activity.service_url,
        tenant_id=tenant,
        bot_id=activity.recipient.id,
        user_aad_id=aad_id if personal else None,
        user_mri=sender.id if personal else None,
    )
    mentions = _mentions(activity)
    raw_value = activity.value if isinstance(activity.value, dict) else {}
    return Incoming(
        conversation=ref,
        sender=Person(aad_id or sender.id, getattr(sender, "name", None) or "", ""),
        sender_mri=sender.id,
        text=activity.text or "",
        value=value if value is not None else raw_value,
        mentions=mentions,
        bot_names=(activity.recipient.name,) if getattr(activity.recipient, "name", None) else (),
    )


def _card_action_value(value: Any) -> dict[str, Any]:
    """The clicked action's data (Teams merges the card's inputs into it) plus its verb."""
    action = value.get("action") if isinstance(value, dict) else None
    if not isinstance(action, dict):
        return {}
    data = action.get("data")
    merged: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    merged["verb"] = action.get("verb") or merged.get("verb")
    return merged


def _mentions(activity: Any) -> tuple[Mention, ...]:
    found = []
    for entity in activity.entities or []:
        data = entity.model_dump(by_alias=True) if hasattr(entity, "model_dump") else dict(entity)
        if data.get("type") != "mention":
            continue
        mentioned = data.get("mentioned") or {}
        found.append(
            Mention(
                user_id=str(mentioned.get("id", "")),
                aad_object_id=mentioned.get("aadObjectId") or mentioned.get("aad_object_id"),
                text=str(data.get("text", "")),
            )
        )
    return tuple(found)


def _activity_for(reply: Reply) -> Activity:
    if reply.card is not None:
        return Activity(
            type=ActivityTypes.message,
            text=reply.text,
            attachments=[Attachment(content_type=CONTENT_TYPE, content=reply.card)],
        )
    return Activity(type=ActivityTypes.message, text=reply.text, text_format="markdown")


def _invoke_body(reply: Reply) -> dict[str, Any]:
    if reply.card is not None:
        return {"statusCode": 200, "type": CONTENT_TYPE, "value": reply.card}
    return {
        "statusCode": 200,
        "type": "application/vnd.microsoft.activity.message",
        "value": reply.text,
    }


def auth_configuration(settings: Settings) -> AgentAuthConfiguration:
    """The SDK's view of our bot identity, built from our settings (never from raw env vars)."""
    bot = settings.bot
    options: dict[str, Any] = {
        "client_id": bot.app_id,
        "tenant_id": bot.tenant_id,
        "anonymous_allowed": settings.anonymous_bot_auth,
        "validate_issuer": True,
        "connection_name": _SERVICE_CONNECTION,
    }
    if bot.client_secret is not None:
        options["auth_type"] = AuthTypes.client_secret
        options["client_secret"] = bot.client_secret.get_secret_value()
    elif bot.certificate_path is not None:
        options["auth_type"] = AuthTypes.certificate
        options["cert_pfx_file"] = str(bot.certificate_path)
    elif bot.managed_identity:
        options["auth_type"] = AuthTypes.user_managed_identity
    return AgentAuthConfiguration(**options)


def add_bot_routes(
    app: web.Application, settings: Settings, dialogue: DialogueLogic | None = None
) -> None:
    """Mount ``POST /api/messages`` on the application, wired to the SDK adapter and our agent."""
    config = auth_configuration(settings)
    adapter = CloudAdapter(
        connection_manager=MsalConnectionManager(
            connections_configurations={_SERVICE_CONNECTION: config}
        )
    )
    agent = SyncwardenAgent(dialogue)
    app["agent_configuration"] = config

    @jwt_authorization_decorator  # type: ignore[untyped-decorator]
    async def messages(request: web.Request) -> web.StreamResponse:
        problem = activity_shape_problem(await request.read())
        if problem:
            return web.json_response({"error": problem}, status=400)
        try:
            response: web.StreamResponse | None = await adapter.process(request, agent)
        except Exception as error:
            log.error("bot.turn_failed", error_type=type(error).__name__, error=str(error))
            return web.json_response(
                {"error": "the activity could not be handled; the service log has the details"},
                status=500,
            )
        return response if response is not None else web.Response(status=202)

    app.router.add_post(MESSAGES_PATH, messages)
