"""The reference for ``bench.click_bench``: a bare Microsoft 365 Agents SDK bot that echoes.

    .venv/bin/python -m bench.echo_bot --port 3979

The same SDK, adapter, anonymous authentication and aiohttp server as Syncwarden's endpoint, and
nothing else: a message is answered with its own text (one reply to the ``serviceUrl``, as
Syncwarden answers ``help`` or ``status``), and a card action with a small card in the invoke's
HTTP answer (as Syncwarden answers an approve click). What Syncwarden costs beyond this is its
own work (database, dialogue, cards, logging), which is what the benchmark compares.

It prints one JSON line, ``{"event": "echo.ready", "port": ...}``, once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from aiohttp import web
from microsoft_agents.activity import InvokeResponse, TurnContextProtocol
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter, jwt_authorization_middleware
from microsoft_agents.hosting.core import ActivityHandler, AgentAuthConfiguration

_CONNECTION = "SERVICE_CONNECTION"
_CARD = "application/vnd.microsoft.card.adaptive"


class EchoAgent(ActivityHandler):
    async def on_message_activity(self, turn_context: TurnContextProtocol[Any]) -> None:
        await turn_context.send_activity(f"echo: {turn_context.activity.text}")

    async def on_invoke_activity(self, turn_context: TurnContextProtocol[Any]) -> InvokeResponse:
        value = turn_context.activity.value
        action = value.get("action") if isinstance(value, dict) else None
        verb = action.get("verb") if isinstance(action, dict) else None
        card = {
            "type": "AdaptiveCard",
            "version": "1.5",
            "body": [{"type": "TextBlock", "text": f"echo: {verb}"}],
        }
        return InvokeResponse(status=200, body={"statusCode": 200, "type": _CARD, "value": card})


def echo_app() -> web.Application:
    config = AgentAuthConfiguration(anonymous_allowed=True, connection_name=_CONNECTION)
    adapter = CloudAdapter(
        connection_manager=MsalConnectionManager(connections_configurations={_CONNECTION: config})
    )
    agent = EchoAgent()
    app = web.Application(middlewares=[jwt_authorization_middleware])
    app["agent_configuration"] = config

    async def messages(request: web.Request) -> web.StreamResponse:
        response = await adapter.process(request, agent)
        return response if response is not None else web.Response(status=202)

    app.router.add_post("/api/messages", messages)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(echo_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    bound = runner.addresses[0][1]
    print(json.dumps({"event": "echo.ready", "port": bound}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
