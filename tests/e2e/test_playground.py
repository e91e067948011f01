"""End to end in Microsoft's own local Teams client, the Microsoft 365 Agents Playground.

Sasha asks for calendar sync in her 1:1 chat and sends the request card; the approval card
reaches the approvals channel, where Casey (an approver, a different Playground user) approves
it; Syncwarden provisions against the sandbox tenant; Sasha gets her set-up instructions and the
IT channel its status lines. Everything is wired as ``serve`` wires it (workflow, outbox, Teams
delivery, dialogue); only the runner and the outbox dispatcher are stepped by the test instead of
their background loops, so the test can wait on exact moments.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.dialogue import DialogueLogic
from connectors.scheduling.ports import Profile
from core.db import session_factory
from sandbox.server import SandboxTenant
from syncwarden.m365 import build_microsoft365
from syncwarden.web import create_app
from syncwarden.workflow_wiring import build_teams_delivery, build_workflows
from tests.support.m365 import sandbox_settings
from tests.support.process import free_port
from workflows.model import TicketStatus

ROOT = Path(__file__).resolve().parents[2]
PLAYGROUND = ROOT / "node_modules" / ".bin" / "agentsplayground"
PERSONAL = "personal-sasha"
TEAM = "team-it"
STARTUP_SECONDS = 60
BOT_ID = "28:syncwarden-bot"
BOT_NAME = "Syncwarden"


PEOPLE = [  # the Playground wants exactly five users besides the current one
    ("casey", "casey.lindqvist@example.edu", "Casey", "Lindqvist"),
    ("dana", "dana.whitfield@example.edu", "Dana", "Whitfield"),
    ("blake", "blake.okonkwo-reyes@example.edu", "Blake", "Okonkwo-Reyes"),
    ("rowan", "rowan.ibarra@example.edu", "Rowan", "Ibarra"),
    ("emerson", "emerson.tal@example.edu", "Emerson", "Tal"),
]


def playground_config(tenant: SandboxTenant) -> str:
    def user(key: str, upn: str, given: str, surname: str, indent: str) -> str:
        fields = {
            "id": f"user-{key}",
            "name": f"{given} {surname}",
            "userPrincipleName": upn,
            "aadObjectId": tenant.seed.user_ids[upn],
            "givenName": given,
            "surname": surname,
            "email": upn,
        }
        lines = [f"{name}: {value}" for name, value in fields.items()]
        return "".join(
            (indent if i == 0 else " " * len(indent)) + line + "\n" for i, line in enumerate(lines)
        )

    return (
        'version: "0.1.1"\n'
        f"tenantId: {tenant.tenant_id}\n"
        f"bot:\n  id: {BOT_ID}\n  name: {BOT_NAME}\n"
        "currentUser:\n"
        + user("sasha", "sasha.verhoeven@example.edu", "Sasha", "Verhoeven", "  ")
        + "users:\n"
        + "".join(user(k, u, g, s, "  - ") for k, u, g, s in PEOPLE)
        + f"personalChat:\n  id: {PERSONAL}\n"
        + "groupChat:\n  id: group-chat\n  name: Group Chat\n"
        + f"team:\n  id: {TEAM}\n  name: IT\n  aadGroupId: 00000000-0000-4000-8000-000000000031\n"
        + "  channels:\n    - id: channel-other\n      name: Other\n"
    )


@asynccontextmanager
async def playground(bot_url: str, workdir: Path, config: str) -> AsyncIterator[str]:
    assert PLAYGROUND.exists(), "run `make test`: it installs @microsoft/m365agentsplayground"
    (workdir / ".m365agentsplayground.yml").write_text(config)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(PLAYGROUND),
        "-e",
        bot_url,
        "-c",
        "msteams",
        "--dt",
        "-p",
        str(port),
        cwd=workdir,
        env={**os.environ, "TEAMSAPPTESTER_BROWSER": "none"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        async with asyncio.timeout(STARTUP_SECONDS):
            assert process.stdout is not None
            while not any("Listening on" in line for line in seen):
                line = (await process.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("the Playground exited:\n" + "".join(seen))
                seen.append(line)
        yield f"http://localhost:{port}"
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
            await process.wait()


class Stream:
    """The Playground UI's WebSocket: every message the bot sends or updates."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket

    async def next(
        self, conversation: str, *, with_card: bool = False, containing: str = ""
    ) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                frame = await self._socket.receive_json()
                if (
                    frame.get("action") != "createMessage"
                    or frame.get("actionConversationId") != conversation
                ):
                    continue
                message: dict[str, Any] = frame["message"]
                # In a channel the conversation names the thread; clicks must name it too.
                conversation_id = str(frame["actionConversationId"])
                if conversation_id == TEAM:  # a new post starts its own thread
                    conversation_id = f"{TEAM};messageid={message['messageId']}"
                message["conversation"] = conversation_id
                if with_card and not message.get("attachments"):
                    continue
                if containing and containing not in json.dumps(message):
                    continue
                return message


async def test_request_approval_and_provisioning_in_the_playground(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, tmp_path: Path
) -> None:
    settings = sandbox_settings(
        tenant,
        graph={"sync_group_id": tenant.seed.group_ids["Calendar Sync"]},
        approvals={
            "approvers_group_id": tenant.seed.group_ids["Calendar Sync Approvers"],
            "it_admins_group_id": tenant.seed.group_ids["IT Admins"],
        },
    )
    sessions = session_factory(migrated_engine)
    m365 = build_microsoft365(settings)
    teams_http = aiohttp.ClientSession()
    http = httpx.AsyncClient()
    dispatcher, conversations = build_teams_delivery(settings, sessions, http)
    workflows = build_workflows(settings, sessions, m365, on_notification=dispatcher.wake)
    assert workflows is not None
    await workflows.scheduling.upsert_profile(
        Profile("prof-sasha", "Sasha Verhoeven", "sasha.verhoeven@example.edu")
    )
    dialogue = DialogueLogic(conversations, workflows.service, workflows.roster)
    bot = TestServer(create_app(settings, migrated_engine, dialogue), host="127.0.0.1")
    await bot.start_server()
    try:
        async with playground(
            str(bot.make_url("/api/messages")), tmp_path, playground_config(tenant)
        ) as pg:
            bot_id, bot_name = BOT_ID, BOT_NAME
            async with teams_http.ws_connect(
                f"{pg.replace('http', 'ws')}/_ws_conversation/v1/conversations/stream"
            ) as socket:
                stream = Stream(socket)

                async def say(conversation: str, text: str) -> None:
                    """A message from the current user (Sasha), as the Playground's UI sends it."""
                    body = {"from": {"id": "user-sasha"}, "text": text, "textFormat": "plain"}
                    url = f"{pg}/_conversation/v1/conversations/{conversation}/messages"
                    answer = await teams_http.post(url, json=body)
                    assert answer.status == 200, await answer.text()

                async def click(
                    conversation: str, sender: str, message_id: str, verb: str, data: dict[str, Any]
                ) -> dict[str, Any]:
                    answer = await teams_http.post(
                        f"{pg}/_conversation/v1/invoke",
                        json={
                            "name": "adaptiveCard/action",
                            "from": {"id": sender},
                            "conversation": {"id": conversation},
                            "replyToId": message_id,
                            "value": {
                                "action": {
                                    "type": "Action.Execute",
                                    "verb": verb,
                                    "data": {"verb": verb, **data},
                                },
                                "trigger": "manual",
                            },
                        },
                    )
                    assert answer.status == 200, await answer.text()
                    result: dict[str, Any] = await answer.json()
                    return result

                async def say_as(conversation: str, key: str, text: str) -> None:
                    """Messages from anyone but the current user go in as custom activities."""
                    template_url = (
                        f"{pg}/_internal/v1/customActivities/template?conversationId={conversation}"
                    )
                    activity = await (await teams_http.get(template_url)).json()
                    upn = next(u for k, u, _, _ in PEOPLE if k == key)
                    activity.update(
                        type="message",
                        text=f"<at>{bot_name}</at> {text}",
                        entities=[
                            {
                                "type": "mention",
                                "mentioned": {"id": bot_id, "name": bot_name},
                                "text": f"<at>{bot_name}</at>",
                            }
                        ],
                    )
                    activity["from"] = {
                        "id": f"user-{key}",
                        "name": key.title(),
                        "aadObjectId": tenant.seed.user_ids[upn],
                    }
                    answer = await teams_http.post(
                        f"{pg}/_internal/v1/customActivities", json=activity
                    )
                    assert answer.status in (200, 201, 202), await answer.text()

                # IT (Dana) sets up the team's channel for approvals and alerts.
                await say_as(TEAM, "dana", "use this channel for approvals")
                await stream.next(TEAM, containing="Approval cards now go to this channel")
                await say_as(TEAM, "dana", "use this channel for alerts")
                await stream.next(TEAM, containing="status lines")

                # Sasha asks, and sends the request card.
                await say(PERSONAL, "add me to calendar sync")
                form = await stream.next(PERSONAL, with_card=True)
                submitted = await click(
                    form["conversation"],
                    "user-sasha",
                    form["messageId"],
                    "submit_request",
                    {"mailbox": "sasha.verhoeven@example.edu", "profile": "prof-sasha"},
                )
                assert "SW-1001" in json.dumps(submitted)

                # The approval card reaches the approvals channel; Casey approves it there.
                await dispatcher.dispatch_due()
                approval = await stream.next(TEAM, with_card=True, containing="SW-1001")
                decided = await click(
                    approval["conversation"],
                    "user-casey",
                    approval["messageId"],
                    "approve",
                    {"ticket": "SW-1001", "version": 1, "comment": "ok"},
                )
                assert "Approved** by" in json.dumps(decided)

                # Provisioning, then the messages it causes.
                await workflows.runner.run_until_idle()
                await dispatcher.dispatch_due()
                instructions = await stream.next(PERSONAL, containing="Your calendar sync is ready")
                assert "sasha.verhoeven@example.edu" in instructions["text"]
                await stream.next(TEAM, containing="completed")

        ticket = await workflows.service.get_ticket("SW-1001")
        assert ticket is not None and ticket.status == TicketStatus.COMPLETED
        assert tenant.seed.user_ids["sasha.verhoeven@example.edu"] in tenant.group_member_ids(
            tenant.seed.group_ids["Calendar Sync"]
        )
    finally:
        await bot.close()
        await teams_http.close()
        await http.aclose()
        await m365.aclose()
