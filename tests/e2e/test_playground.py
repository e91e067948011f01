"""End to end in Microsoft's own local Teams client, the Microsoft 365 Agents Playground.

Sasha asks for calendar sync in her 1:1 chat and sends the request card; the approval card
reaches the Approvals channel, where Casey (an approver, a different Playground user) approves
it; Syncwarden provisions against the sandbox tenant; Sasha gets her set-up instructions and the
IT channel (the team's General channel) its status lines. Everything is wired as ``serve`` wires
it (workflow, outbox, Teams delivery, dialogue); only the runner and the outbox dispatcher are
stepped by the test instead of their background loops, so the test can wait on exact moments.

Each conversation's messages are checked one by one, in the order the bot sent them, for exactly
what they say: Sasha's chat must hold exactly her form, the answer to her request, the approval,
her instructions and the outcome. (A search for a word anywhere in a conversation let this test
pass while the approval card never reached an approvals channel: it found the ticket number in
IT's status card instead.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.web import create_app
from syncwarden.workflow_wiring import build_teams_delivery, build_workflows
from syncwarden.workflows.model import TicketStatus
from tests.support.m365 import sandbox_settings
from tests.support.process import free_port

ROOT = Path(__file__).resolve().parents[2]
PLAYGROUND = ROOT / "node_modules" / ".bin" / "agentsplayground"
PERSONAL = "personal-sasha"
TEAM = "team-it"  # the team's own (General) channel: IT's status lines and alerts
APPROVALS = "channel-approvals"
CHANNELS = (TEAM, APPROVALS)
STARTUP_SECONDS = 60
BOT_ID = "28:syncwarden-bot"
BOT_NAME = "Syncwarden"
SASHA = "sasha.verhoeven@example.edu"


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
        + f"  channels:\n    - id: {APPROVALS}\n      name: Approvals\n"
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


def headline(message: dict[str, Any]) -> str:
    """A message's text, or its card's first line (a card's title or IT's status line)."""
    for attachment in message.get("attachments") or []:
        blocks = [e for e in attachment["content"]["body"] if e.get("type") == "TextBlock"]
        return str(blocks[0]["text"]) if blocks else ""
    return str(message.get("text") or "")


def card_of(message: dict[str, Any]) -> dict[str, Any]:
    attachments = message.get("attachments") or []
    assert len(attachments) == 1, f"not one card: {message}"
    card: dict[str, Any] = attachments[0]["content"]
    return card


def lines(card: dict[str, Any]) -> list[str]:
    """The card's lines of text, in order."""
    return [str(e["text"]) for e in card["body"] if e.get("type") == "TextBlock"]


def answered_card(answer: dict[str, Any]) -> dict[str, Any]:
    """The card a click was answered with (shown in place of the clicked one)."""
    assert answer.get("type") == "application/vnd.microsoft.card.adaptive", answer
    card: dict[str, Any] = answer["value"]
    return card


def submitted_data(card: dict[str, Any], verb: str) -> dict[str, Any]:
    """What a click on ``verb`` sends with the card's inputs as shown: the action's data and
    each input's value under its id."""
    action = next(a for a in card.get("actions", []) if a.get("verb") == verb)
    data: dict[str, Any] = dict(action.get("data", {}))
    for element in card["body"]:
        if str(element.get("type", "")).startswith("Input.") and "id" in element:
            data[element["id"]] = element.get("value", "")
    return data


class Stream:
    """The Playground UI's WebSocket: the bot's new messages, per conversation, in order."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._unread: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    async def next(self, conversation: str) -> dict[str, Any]:
        """The bot's next message in ``conversation``, whatever it is (the test checks it)."""
        async with asyncio.timeout(30):
            while not self._unread[conversation]:
                await self._read()
        return self._unread[conversation].pop(0)

    async def find(self, conversation: str, line: str) -> dict[str, Any]:
        """The bot's next message in ``conversation`` whose headline is exactly ``line``,
        passing over others (the IT channel also hears of copies the bot could not deliver)."""
        while True:
            message = await self.next(conversation)
            if headline(message) == line:
                return message

    async def _read(self) -> None:
        frame = await self._socket.receive_json()
        if frame.get("action") != "createMessage":
            return
        message: dict[str, Any] = frame["message"]
        if message.get("from", {}).get("id") != BOT_ID:
            return
        conversation = str(frame["actionConversationId"])
        # In a channel the conversation names the thread; clicks must name it too (a new post
        # starts its own thread).
        message["conversation"] = (
            f"{conversation};messageid={message['messageId']}"
            if conversation in CHANNELS
            else conversation
        )
        self._unread[conversation].append(message)


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

                # IT (Dana) gives the Approvals channel the approval cards and General IT's news,
                # as the README's walkthrough does.
                await say_as(APPROVALS, "dana", "use this channel for approvals")
                said = headline(await stream.next(APPROVALS))
                assert (
                    said == "Approval cards now go to this channel too; only approvers can decide."
                )
                await say_as(TEAM, "dana", "use this channel for alerts")
                said = headline(await stream.next(TEAM))
                assert (
                    said == "This channel now gets Syncwarden's status lines, failures and alerts."
                )

                # Sasha asks, and sends the request card as it came.
                await say(PERSONAL, "add me to calendar sync")
                form = await stream.next(PERSONAL)
                assert headline(form) == "Ask for calendar sync"
                data = submitted_data(card_of(form), "submit_request")
                assert data["mailbox"] == SASHA and data["profile"] == "prof-sasha", data
                submitted = await click(
                    form["conversation"], "user-sasha", form["messageId"], "submit_request", data
                )
                # The card turns into its sent state in place; the answer goes into the chat.
                sent = answered_card(submitted)
                assert lines(sent) == [
                    "Calendar sync request · SW-1001",
                    "Sent · **awaiting approval**",
                ]
                assert "actions" not in sent
                thanks = await stream.next(PERSONAL)
                assert thanks["text"] == (
                    "Thanks! Your request is **SW-1001**. An approver has been asked; "
                    "I'll message you when it is decided."
                )

                # The approval card reaches the Approvals channel; Casey approves it there.
                await dispatcher.dispatch_due()
                approval = await stream.next(APPROVALS)
                assert headline(approval) == "Calendar sync request · SW-1001"
                assert "Sasha Verhoeven (sasha.verhoeven@example.edu)" in json.dumps(
                    card_of(approval)
                )
                await stream.find(
                    TEAM,
                    "SW-1001 · Sasha Verhoeven · new calendar sync request, waiting for approval",
                )
                decided = await click(
                    approval["conversation"],
                    "user-casey",
                    approval["messageId"],
                    "approve",
                    {"ticket": "SW-1001", "version": 1, "comment": "ok"},
                )
                shown = lines(answered_card(decided))
                assert shown[0] == "Calendar sync request · SW-1001"
                assert shown[1].startswith("**Approved** by Casey Lindqvist, "), shown
                assert shown[2] == "Status: **provisioning**"

                # Provisioning, then what it tells Sasha, in order, and IT's line.
                await workflows.runner.run_until_idle()
                await dispatcher.dispatch_due()
                approved = await stream.next(PERSONAL)
                assert approved["text"] == (
                    'SW-1001 was approved by Casey Lindqvist ("ok"); setting it up now'
                )
                instructions = await stream.next(PERSONAL)
                assert instructions["text"].startswith("**Your calendar sync is ready, Sasha.**")
                assert f"Outlook calendar of **{SASHA}**" in instructions["text"]
                done = await stream.next(PERSONAL)
                assert (
                    done["text"] == "SW-1001 is done: calendar sync is set up for Sasha Verhoeven"
                )
                await stream.find(TEAM, "SW-1001 · Sasha Verhoeven · completed")

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
