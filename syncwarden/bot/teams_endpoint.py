"""The Bot Framework endpoint, and the only module that imports the Microsoft 365 Agents SDK.

Keeping the SDK behind this one module means an SDK upgrade (or a move to another SDK) touches one
file. Incoming activities on ``POST /api/messages`` carry a Bot Framework JWT. We accept only what
Microsoft documents for a bot's incoming traffic ("Authenticate requests from the Bot Connector
service to your bot", https://learn.microsoft.com/azure/bot-service/rest-api/
bot-framework-rest-connector-authentication), whatever the SDK's defaults allow:

* before the SDK looks at it: an RS256 token with a ``kid``, issued by
  ``https://api.botframework.com`` (the SDK would also take Entra tokens of our own tenant and of
  Microsoft's first-party tenants, with keys from Entra; those never reach it);
* the SDK's validator: signature by a key from the Bot Framework OpenID metadata, audience (our
  app id), validity period with 5 minutes' skew, issuer allow-list (opt-in, turned on);
* after it, on the verified claims: the issuer again, an ``exp``, the ``serviceurl`` claim equal
  to the activity's ``serviceUrl``, the signing key's endorsement for the activity's channel, and
  the activity's tenant (``channelData.tenant.id``) equal to the configured one.

Anonymous traffic is accepted only when the settings say so, which they allow only in sandbox
mode; the token checks then apply only to requests that do carry a token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pydantic
import structlog
from aiohttp import web
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    Attachment,
    DeliveryModes,
    InvokeResponse,
    TurnContextProtocol,
)
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_decorator
from microsoft_agents.hosting.core import (
    ActivityHandler,
    AgentAuthConfiguration,
    ChannelAdapter,
    ChannelServiceAdapter,
    TurnContext,
)
from microsoft_agents.hosting.core.authorization import (
    AuthTypes,
    ClaimsIdentity,
    _entra_issuers,
)
from microsoft_agents.hosting.core.authorization.jwt.jwt_token_validator import JwtTokenValidator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from yarl import URL

from syncwarden.bot.activity_shape import parsed_activity
from syncwarden.bot.cards import CONTENT_TYPE
from syncwarden.bot.conversations import ConversationKind, ConversationRef
from syncwarden.bot.dialogue import DialogueLogic, Incoming, Reply
from syncwarden.bot.intents import Mention
from syncwarden.bot.replies import HELP_TEXT
from syncwarden.bot.turn_clients import ConnectorOnlyClients
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import Settings
from syncwarden.core.tracing import tracer
from syncwarden.workflows.ports import Person

MESSAGES_PATH = "/api/messages"
_SERVICE_CONNECTION = "SERVICE_CONNECTION"
# The Bot Connector's token issuer and signing algorithm (its OpenID metadata:
# https://login.botframework.com/v1/.well-known/openidconfiguration).
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
_SIGNING_ALGORITHMS = frozenset({"RS256"})
# What a person sees when a turn fails; the details are in the log, never in the chat.
TURN_FAILED_TEXT = (
    "Sorry, something went wrong on our side and your request was not completed. "
    "It has been logged for IT; please try again in a few minutes."
)

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
        try:
            if activity.type == ActivityTypes.invoke and activity.delivery_mode != _EXPECT_REPLIES:
                _answer_invoke(turn_context, await self.on_invoke_activity(turn_context))
                return
            await super().on_turn(turn_context)
        except ReplyRefusedError as error:
            # The turn's work is done and committed; only its answer was lost (see _send).
            turn = _current_turn.get()
            if turn is not None:
                turn.reply_refused = True
            log.warning("bot.reply_refused", activity_type=activity.type, status=error.status)

    async def on_message_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is None:
            await _send(turn_context, HELP_TEXT)
            return
        incoming = _incoming(turn_context.activity)
        if any(m.aad_object_id is None for m in incoming.mentions):
            incoming = replace(incoming, mentions=await _resolved_mentions(turn_context, incoming))
        for reply in await self._dialogue.on_message(incoming):
            await _send(turn_context, _activity_for(reply))

    async def on_invoke_activity(self, turn_context: TurnContextProtocol[Any]) -> InvokeResponse:
        activity = turn_context.activity
        if activity.name != "adaptiveCard/action":
            return InvokeResponse(status=400, body={"error": "this bot answers only card actions"})
        if self._dialogue is None:
            return InvokeResponse(status=200, body=_invoke_body(Reply(HELP_TEXT)))
        incoming = _incoming(activity, value=_card_action_value(activity.value))
        await self._dialogue.remember(incoming)
        reply = await self._dialogue.on_card_action(incoming)
        if reply.card is not None and reply.text:
            # The card shows the new state in place; the text is news for the chat (a sent
            # request's confirmation), which an invoke's answer cannot carry as well.
            await _send(turn_context, reply.text)
        return InvokeResponse(status=200, body=_invoke_body(reply))

    async def on_installation_update_add(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is not None:
            await self._dialogue.remember(_incoming(turn_context.activity), installed=True)
        await _send(turn_context, HELP_TEXT)

    async def on_installation_update_remove(self, turn_context: TurnContextProtocol[Any]) -> None:
        if self._dialogue is not None:
            await self._dialogue.forget(turn_context.activity.conversation.id)


_EXPECT_REPLIES = DeliveryModes.expect_replies


def _answer_invoke(turn_context: TurnContextProtocol[Any], response: InvokeResponse) -> None:
    """Hand the invoke's answer to the adapter where its own ``send_activities`` puts it.

    The SDK's way (``ActivityHandler.on_turn``) dumps the response to a dict, wraps it in an
    activity and sends that through ``TurnContext.send_activity``, which deep-copies it, so an
    approval card's hundred-odd nested dicts were walked three times before aiohttp serialised
    them once more: about a tenth of an approve click's CPU. The adapter then reads only the
    activity's ``value`` back from ``ChannelAdapter.INVOKE_RESPONSE_KEY``
    (``ChannelServiceAdapter._process_turn_results``); the answer put there directly is the same.
    Not for ``expectReplies``, where the SDK buffers the turn's replies with it.
    """
    value = {"status": response.status, "body": response.body}
    answer = _INVOKE_ANSWER.model_copy(update={"value": value})
    turn_context.turn_state[ChannelAdapter.INVOKE_RESPONSE_KEY] = answer


# Copied with the answer in it: building an activity fills its sixty-odd fields one by one
# (23 us against 2 for the copy, on the development machine).
_INVOKE_ANSWER = Activity.model_construct(type=ActivityTypes.invoke_response)


class ReplyRefusedError(Exception):
    """The Bot Framework connector answered a reply of this turn with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the connector refused the reply with HTTP {status}")
        self.status = status


async def _send(turn_context: TurnContextProtocol[Any], activity: Activity | str) -> None:
    """Send a reply of this turn to the Bot Framework connector, as the SDK does:
    ``POST {serviceUrl}/v3/conversations/{conversation.id}/activities/{activity.id}``.

    Microsoft publishes no maximum length for conversation or activity ids (the Bot Framework
    activity schema and the Teams documentation type them as plain strings), nor for the
    connector's request line, so none is refused by length on the way in: a bound we guessed
    could refuse an activity Teams really sends, and the person would get no answer although the
    connector might have taken it. (The SDK itself cuts conversation ids to 150 characters in
    this URL; the activity id and the serviceUrl go in whole.)

    Instead, a reply the connector answers with an error status, whatever the reason (a request
    line longer than it reads, which an 8 KiB-line server answers with 400; 403, 404, 413; 429
    or 5xx) is an outside refusal like Teams not taking an outbox message this time:
    :class:`ReplyRefusedError`, which the turn logs as a warning and acknowledges. The turn's
    own work is committed by then, and answering the channel 500 would neither reach the person
    nor undo it. A connector that cannot be reached at all (no answer, a refused connection) is
    still a failed turn, reported as unexpected: that is not about this reply.
    """
    try:
        await turn_context.send_activity(activity)
    except aiohttp.ClientResponseError as error:
        raise ReplyRefusedError(error.status) from error


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
    named = channel_data.get("tenant")
    tenant = getattr(conversation, "tenant_id", None) or (
        named.get("id") if isinstance(named, dict) else None
    )
    personal = kind is ConversationKind.PERSONAL
    ref = ConversationRef(
        # In a channel the id names the thread (";messageid=..."); later posts start new threads.
        conversation_id=conversation.id.split(";messageid=")[0],
        kind=kind,
        service_url=activity.service_url,
        tenant_id=tenant if isinstance(tenant, str) else None,  # channelData is not typed
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


# Where the SDK keeps this turn's connector client in the turn state (ChannelServiceAdapter's
# _AGENT_CONNECTOR_CLIENT_KEY; read from the class so an SDK rename fails loudly in tests).
CONNECTOR_CLIENT_KEY: str = ChannelServiceAdapter._AGENT_CONNECTOR_CLIENT_KEY
_TEAMS_USER_ID = re.compile(r"[0-9]{1,3}:[A-Za-z0-9_.\-]{1,250}")


async def _resolved_mentions(
    turn_context: TurnContextProtocol[Any], incoming: Incoming
) -> tuple[Mention, ...]:
    """Mentions with the Entra object id each person has, asked of the connector where the
    activity did not say it.

    Teams' mention entities carry the Teams user id (``29:…``) and the display name, usually not
    the Entra object id the directory needs. The connector's conversation member API answers it
    (``GET /v3/conversations/{conversationId}/members/{userId}``: learn.microsoft.com, Microsoft
    Teams platform, "Get single member details"). A mention it cannot resolve is kept as it was;
    the dialogue then asks for an address instead of showing a Teams id to anyone.
    """
    connector = turn_context.turn_state.get(CONNECTOR_CLIENT_KEY)
    conversation_id = incoming.conversation.conversation_id
    resolved = []
    for mention in incoming.mentions:
        aad_id = mention.aad_object_id
        bot = mention.user_id == incoming.conversation.bot_id
        # Only what has a Teams user id's shape (29:…) goes into the connector's URL path.
        lookable = _TEAMS_USER_ID.fullmatch(mention.user_id) is not None
        if aad_id is None and connector is not None and lookable and not bot:
            try:
                member = await connector.conversations.get_conversation_member(
                    conversation_id, mention.user_id
                )
                aad_id = getattr(member, "aad_object_id", None) or None
            except aiohttp.ClientResponseError as error:  # not a member of this conversation
                log.info("bot.mention_unresolved", status=error.status)
            except Exception as error:  # the person still gets an answer, asking for an address
                report_unexpected(log, "bot.mention_lookup_failed", error, where="bot.mentions")
        resolved.append(replace(mention, aad_object_id=aad_id))
    return tuple(resolved)


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
        # Only the Bot Connector's issuer (the SDK's default adds our tenant's Entra issuers).
        "issuers": [BOT_FRAMEWORK_ISSUER],
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


@dataclass(frozen=True)
class _Refusal:
    status: int
    reason: str

    def response(self) -> web.Response:
        log.warning("bot.request_refused", status=self.status, reason=self.reason)
        return web.json_response({"error": self.reason}, status=self.status)


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _token_form_refusal(authorization: str | None) -> _Refusal | None:
    """Refuse, before the SDK sees it, a token that cannot be a Bot Framework channel token.

    Only the form is read here (no signature yet): the algorithm the metadata names (RS256, never
    ``none``), a key id to find the signing key by, and the Bot Framework issuer, so the SDK only
    ever checks the signature with the Bot Framework's keys and never with Entra's.
    """
    if authorization is None:
        return None  # the SDK answers 401, or lets anonymous traffic in where the settings allow
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _Refusal(401, "the Authorization header is not a bearer token")
    parts = token.split(".")
    if len(parts) != 3:
        return _Refusal(401, "the bearer token is not a signed JWT")
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return _Refusal(401, "the bearer token is not a signed JWT")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return _Refusal(401, "the bearer token is not a signed JWT")
    if header.get("alg") not in _SIGNING_ALGORITHMS:
        return _Refusal(401, "the token is not signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return _Refusal(401, "the token names no signing key (kid)")
    if claims.get("iss") != BOT_FRAMEWORK_ISSUER:
        return _Refusal(401, "the token is not issued by the Bot Framework")
    return None


def _same_service_url(claimed: str, actual: str) -> bool:
    """The token's ``serviceurl`` claim names the activity's ``serviceUrl``: the same string,
    ignoring case, as Microsoft's own Bot Framework SDKs compare them. Only a serviceUrl that
    passed this is ever stored for proactive sends or used for replies."""
    return claimed.casefold() == actual.casefold()


async def _key_endorsements(token: str) -> list[str] | None:
    """The ``endorsements`` of the Bot Framework key that signed ``token`` (the SDK has just
    fetched it, so this is answered from its key cache), or None when they cannot be read."""
    try:
        header = _b64url_json(token.split(".")[0])
        jwks_uri = _entra_issuers.BOTFRAMEWORK_JWKS_URIS[BOT_FRAMEWORK_ISSUER]
        key = await JwtTokenValidator._jwk_client_manager.get_signing_key(jwks_uri, header)
    except Exception as error:
        log.warning("bot.endorsements_unreadable", error_type=type(error).__name__)
        return None
    # PyJWK keeps the key's JSON (with the Bot Framework's extra ``endorsements``) only here.
    data = getattr(key, "_jwk_data", None)
    endorsements = data.get("endorsements") if isinstance(data, dict) else None
    if not isinstance(endorsements, list):
        return None
    return [str(item) for item in endorsements]


async def _claims_refusal(
    identity: ClaimsIdentity, activity: dict[str, Any], settings: Settings
) -> _Refusal | None:
    """Check the verified token against the activity it came with (Microsoft's "Step 4: Verify
    the JWT token" and the key endorsements of step 3), and the activity's tenant against ours."""
    claims = identity.claims
    if claims.get("iss") != BOT_FRAMEWORK_ISSUER:
        return _Refusal(401, "the token is not issued by the Bot Framework")
    if claims.get("aud") != settings.bot.app_id:
        return _Refusal(401, "the token is not for this bot")
    if not isinstance(claims.get("exp"), int | float):
        return _Refusal(401, "the token has no expiry (exp)")
    claimed = claims.get("serviceurl")
    if not isinstance(claimed, str) or not claimed:
        return _Refusal(401, "the token names no serviceUrl")
    if not _same_service_url(claimed, str(activity.get("serviceUrl"))):
        return _Refusal(401, "the token's serviceUrl is not the activity's")
    channel = activity.get("channelId")
    endorsements = await _key_endorsements(identity.security_token or "")
    if endorsements is None:
        return _Refusal(401, "the token's signing key could not be checked")
    if not isinstance(channel, str) or channel not in endorsements:
        return _Refusal(403, "the token's signing key is not endorsed for this channel")
    return _tenant_refusal(activity, settings)


def _tenant_refusal(activity: dict[str, Any], settings: Settings) -> _Refusal | None:
    """Syncwarden serves one tenant: an activity from any other is refused."""
    ours = settings.bot.tenant_id or settings.graph.tenant_id
    if not ours:
        return None
    channel_data = activity.get("channelData")
    tenant = channel_data.get("tenant") if isinstance(channel_data, dict) else None
    tenant_id = tenant.get("id") if isinstance(tenant, dict) else None
    conversation = activity.get("conversation")
    other = conversation.get("tenantId") if isinstance(conversation, dict) else None
    if not isinstance(tenant_id, str) or not tenant_id:
        return _Refusal(403, "the activity names no tenant (channelData.tenant.id)")
    if tenant_id.lower() != ours.lower() or (
        isinstance(other, str) and other.lower() != ours.lower()
    ):
        return _Refusal(403, "the activity is from another tenant")
    return None


class _TurnFailedError(Exception):
    """A turn failed (already reported) and not even the apology could be sent."""


async def _on_turn_error(context: TurnContext, error: Exception) -> None:
    """Replaces the SDK's handler, which posts the exception's text into the chat: log and count
    the failure, and tell the person only that it failed."""
    activity = context.activity
    turn = _current_turn.get()
    if turn is not None:
        turn.failure = type(error).__name__  # the apology below may still make the answer a 2xx
    report_unexpected(
        log,
        "bot.turn_failed",
        error,
        where="bot.turn",
        activity_type=getattr(activity, "type", None),
        activity_name=getattr(activity, "name", None),
        conversation_id=getattr(getattr(activity, "conversation", None), "id", None),
    )
    try:
        if getattr(activity, "type", None) == ActivityTypes.invoke:
            # An invoke is answered in the HTTP response: the card shows the apology.
            await context.send_activity(
                Activity(
                    type=ActivityTypes.invoke_response,
                    value=InvokeResponse(status=200, body=_invoke_body(Reply(TURN_FAILED_TEXT))),
                )
            )
        else:
            await context.send_activity(TURN_FAILED_TEXT)
    except Exception as send_error:
        # Nobody could be told: answer the channel with a 500 (the failure is already counted).
        log.warning("bot.turn_failed_reply_not_sent", error_type=type(send_error).__name__)
        raise _TurnFailedError from error


def _connector_url_problem(activity: dict[str, Any] | None) -> str | None:
    """The SDK adds a "/" to the serviceUrl and makes it an aiohttp session's base URL, which
    raises unless the URL's path then ends in "/" (a query or a fragment after it does not)."""
    if activity is None:
        return None
    url = activity["serviceUrl"]
    try:
        usable = URL(url if url.endswith("/") else f"{url}/").path.endswith("/")
    except (ValueError, TypeError, UnicodeError):
        usable = False
    return None if usable else "the serviceUrl must be a base URL (no query or fragment)"


def _sdk_model_problem(activity: dict[str, Any] | None) -> str | None:
    """Whether the SDK's activity model takes the body, asked before the SDK is: its validators
    raise more than pydantic's ValidationError (a TypeError for a blank ``channelId``, a bare
    Exception for a productInfo entity that contradicts it), which would escape as a 500."""
    if activity is None:
        return None
    try:
        Activity.model_validate(activity)
    except pydantic.ValidationError as error:
        return _model_problem(error)
    except Exception:  # the model's own validators; nothing else runs here
        return "the activity does not fit the Bot Framework schema (channelId)"
    return None


def _model_problem(error: pydantic.ValidationError) -> str:
    """Where the activity does not fit the Bot Framework schema (field paths only, no values)."""
    places = sorted(
        {".".join(str(part) for part in e["loc"]) or "(activity)" for e in error.errors()}
    )
    shown = ", ".join(places[:5]) + (" and more" if len(places) > 5 else "")
    return f"the activity does not fit the Bot Framework schema at: {shown}"


TURN_SPAN = "bot.turn"
# Names a span may repeat (activity types, invoke names, channel ids) come from the sender, so one
# is kept only when it has the shape such a name has; anything else is recorded as "other".
_NAME_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9/_.:-]{0,63}")
_CONVERSATION_KINDS = frozenset(kind.value for kind in ConversationKind)
_OTHER = "other"


@dataclass
class _TurnTrace:
    """The span of the request being answered, and what its HTTP status cannot tell: that the
    turn failed although the apology went out (a 2xx), or that the connector refused its reply
    (also a 2xx)."""

    span: Span
    failure: str | None = None
    reply_refused: bool = False

    def outcome(self, status: int) -> str:
        if self.failure is not None or status >= 500:
            return "failed"
        if status in (401, 403):
            return "refused"  # who sent it: the token or the tenant
        if status >= 400:
            return "rejected"  # what was sent: the body, the activity or the kind of invoke
        return "reply_refused" if self.reply_refused else "handled"


_current_turn: ContextVar[_TurnTrace | None] = ContextVar("syncwarden_bot_turn", default=None)


def _shaped(value: Any) -> str:
    return value if isinstance(value, str) and _NAME_SHAPE.fullmatch(value) else _OTHER


def _activity_attributes(activity: dict[str, Any]) -> dict[str, str]:
    """What a turn's span says about its activity: what kind of activity it is, on which channel,
    in which kind of conversation. Never its text, card data, names, tokens or ids: the span's
    children and the log lines (same ``syncwarden.request_id``) carry ids where they need them.
    """
    conversation = activity.get("conversation")
    kind = conversation.get("conversationType") if isinstance(conversation, dict) else None
    attributes = {
        "bot.activity.type": _shaped(activity.get("type")),
        "bot.channel_id": _shaped(activity.get("channelId")),
        # As the turn takes it: no conversationType is a 1:1 chat (see _incoming).
        "bot.conversation.kind": (
            "personal" if kind is None else kind if kind in _CONVERSATION_KINDS else _OTHER
        ),
    }
    if activity.get("type") == ActivityTypes.invoke:
        attributes["bot.invoke.name"] = _shaped(activity.get("name"))
    return attributes


def add_bot_routes(
    app: web.Application, settings: Settings, dialogue: DialogueLogic | None = None
) -> None:
    """Mount ``POST /api/messages`` on the application, wired to the SDK adapter and our agent."""
    config = auth_configuration(settings)
    connections = MsalConnectionManager(connections_configurations={_SERVICE_CONNECTION: config})
    adapter = CloudAdapter(
        connection_manager=connections,
        channel_service_client_factory=ConnectorOnlyClients(connections),
    )
    adapter.on_turn_error = _on_turn_error
    agent = SyncwardenAgent(dialogue)
    app["agent_configuration"] = config

    @jwt_authorization_decorator  # type: ignore[untyped-decorator]
    async def authenticated(request: web.Request) -> web.StreamResponse:
        activity, problem = parsed_activity(await request.read())
        problem = problem or _connector_url_problem(activity) or _sdk_model_problem(activity)
        if problem or activity is None:
            return web.json_response({"error": problem}, status=400)
        turn = _current_turn.get()
        if turn is not None:
            turn.span.set_attributes(_activity_attributes(activity))
        identity = request.get("claims_identity")
        if isinstance(identity, ClaimsIdentity) and identity.security_token is not None:
            refusal = await _claims_refusal(identity, activity, settings)
            if refusal is not None:
                return refusal.response()
        try:
            response: web.StreamResponse | None = await adapter.process(request, agent)
        except pydantic.ValidationError as error:
            return web.json_response({"error": _model_problem(error)}, status=400)
        except Exception as error:
            if not isinstance(error, _TurnFailedError):
                report_unexpected(log, "bot.request_failed", error, where="bot.messages")
            return web.json_response(
                {"error": "the activity could not be handled; the service log has the details"},
                status=500,
            )
        return response if response is not None else web.Response(status=202)

    async def answer(request: web.Request) -> web.StreamResponse:
        refusal = _token_form_refusal(request.headers.get("Authorization"))
        if refusal is not None:
            return refusal.response()
        response: web.StreamResponse = await authenticated(request)
        return response

    async def messages(request: web.Request) -> web.StreamResponse:
        """One span per request (see :func:`_traced_turn`), refused ones included."""
        return await _traced_turn(request, answer)

    app.router.add_post(MESSAGES_PATH, messages)


async def _traced_turn(
    request: web.Request, answer: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer ``request`` inside a ``bot.turn`` span, so that the turn's Graph calls, database
    statements and the SDK's own spans are its children.

    Every request gets one, a refused token included (status 401, outcome ``refused``): a bot
    that stopped answering because its tokens are refused is what an operator looks for first.
    Such a span names no activity, since the body of a request whose token was refused is never
    read for it (one refused for its tenant or channel, 403, came with a genuine token and
    does). The span records the HTTP status and an outcome the status cannot tell (``failed``
    for a turn whose apology was sent, ``reply_refused``), never an exception's text.
    """
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    with tracer.start_as_current_span(
        TURN_SPAN,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": MESSAGES_PATH,
            "syncwarden.request_id": request_id if isinstance(request_id, str) else "",
        },
        record_exception=False,  # an exception's text may hold anything the activity held
        set_status_on_exception=False,
    ) as span:
        turn = _TurnTrace(span)
        token = _current_turn.set(turn)
        try:
            response = await answer(request)
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            _current_turn.reset(token)
        outcome = turn.outcome(response.status)
        span.set_attributes({"http.response.status_code": response.status, "bot.outcome": outcome})
        if outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, turn.failure or "the turn failed"))
        return response
