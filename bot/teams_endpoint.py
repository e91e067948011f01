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
from microsoft_agents.activity import ActivityTypes, TurnContextProtocol
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_decorator
from microsoft_agents.hosting.core import ActivityHandler, AgentAuthConfiguration
from microsoft_agents.hosting.core.authorization import AuthTypes

from bot.activity_shape import activity_shape_problem
from bot.replies import HELP_TEXT
from core.logging import get_logger
from core.settings import Settings

MESSAGES_PATH = "/api/messages"
_SERVICE_CONNECTION = "SERVICE_CONNECTION"

log = get_logger(__name__)


class SyncwardenAgent(ActivityHandler):
    """Turns Teams activities into Syncwarden actions. For now every message gets the help text."""

    async def on_message_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        await turn_context.send_activity(HELP_TEXT)

    async def on_turn(self, turn_context: TurnContextProtocol[Any]) -> None:
        activity = turn_context.activity
        log.info(
            "bot.activity",
            activity_type=activity.type,
            conversation_id=getattr(activity.conversation, "id", None),
        )
        if activity.type == ActivityTypes.message and not (activity.text or activity.value):
            return
        await super().on_turn(turn_context)


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


def add_bot_routes(app: web.Application, settings: Settings) -> None:
    """Mount ``POST /api/messages`` on the application, wired to the SDK adapter and our agent."""
    config = auth_configuration(settings)
    adapter = CloudAdapter(
        connection_manager=MsalConnectionManager(
            connections_configurations={_SERVICE_CONNECTION: config}
        )
    )
    agent = SyncwardenAgent()
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
