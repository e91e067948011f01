"""Floods through ``/api/messages``: turn limits per person and conversation, the directory cache.

The bot is wired as production wires it (``build_microsoft365``, ``build_workflows``, the web
app) over the sandbox tenant, which records every Graph and Exchange request it receives; a local
recorder plays the Bot Framework connector that receives the bot's replies. The limiter and the
directory cache run on a clock the tests move, so nothing here waits for time to pass.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.turn_limits import TurnLimiter, limited_counts
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.web import create_app
from syncwarden.workflow_wiring import build_workflows
from tests.support.m365 import sandbox_settings
from tests.support.process import ServiceProcess, cli_environment, free_port
from tests.support.recorder import ConnectorRecorder, RecordedRequest, message_activity
from tests.support.workflow import PEOPLE, SYNC_GROUP

WebClient = TestClient[web.Request, web.Application]
FLOOD = 300
REFERENCE_TURNS = 20
ADD_ME = "add me to calendar sync"
PERSON_NOTICE = "You're sending requests faster than I can handle"
CHAT_NOTICE = "This conversation is sending me requests faster than I can handle"


class Ticks:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Bot:
    client: WebClient
    tenant: SandboxTenant
    recorder: ConnectorRecorder
    ticks: Ticks

    def activity(
        self, key: str, text: str, *, conversation: str | None = None, person_id: str | None = None
    ) -> dict[str, Any]:
        """A 1:1 message from a seeded person (``key`` in PEOPLE), or from anyone into a chat."""
        activity = message_activity(self.recorder.url, text, activity_id=f"act-{uuid.uuid4()}")
        aad = person_id or self.tenant.seed.user_ids[PEOPLE[key]]
        activity["from"] = {"id": f"29:{key}", "name": key.title(), "aadObjectId": aad}
        activity["conversation"] = {
            "id": conversation or f"a:{key}",
            "conversationType": "personal",
            "tenantId": "sandbox-tenant",
        }
        return activity

    def click(self, key: str, verb: str, data: dict[str, Any]) -> dict[str, Any]:
        activity = self.activity(key, "")
        activity.update(
            type="invoke",
            name="adaptiveCard/action",
            text=None,
            replyToId="card-1",
            value={"action": {"type": "Action.Execute", "verb": verb, "data": data}},
        )
        return activity

    async def post(self, activity: dict[str, Any]) -> int:
        response = await self.client.post("/api/messages", json=activity)
        await response.read()
        return response.status

    def replies_in(self, conversation: str) -> list[RecordedRequest]:
        """Replies posted to the conversation (in a channel, to any of its threads)."""
        path = re.compile(rf"/conversations/{re.escape(conversation)}[/;]")
        return [r for r in self.recorder.requests if path.search(r.path)]

    def m365_requests(self) -> int:
        return len(self.tenant.requests)


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@asynccontextmanager
async def production_bot(
    engine: AsyncEngine,
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    *,
    limits: dict[str, Any] | None = None,
    limited: bool = True,
) -> AsyncIterator[Bot]:
    """The bot as ``syncwarden serve`` builds it; ``limited=False`` leaves the turn limits out."""
    ticks = Ticks()
    settings = sandbox_settings(
        tenant,
        graph={"sync_group_id": tenant.seed.group_ids[SYNC_GROUP]},
        approvals={
            "approvers_group_id": tenant.seed.group_ids["Calendar Sync Approvers"],
            "it_admins_group_id": tenant.seed.group_ids["IT Admins"],
        },
        limits=limits or {},
    )
    async with AsyncExitStack() as stack:
        m365 = build_microsoft365(settings, monotonic=ticks)
        stack.push_async_callback(m365.aclose)
        sessions = session_factory(engine)
        workflows = build_workflows(settings, sessions, m365)
        assert workflows is not None
        for key, upn in PEOPLE.items():
            await workflows.scheduling.upsert_profile(Profile(f"prof-{key}", key.title(), upn))
        dialogue = DialogueLogic(
            ConversationStore(sessions),
            workflows.service,
            workflows.roster,
            limits=TurnLimiter.from_settings(settings.limits, clock=ticks) if limited else None,
        )
        client: WebClient = TestClient(
            TestServer(create_app(settings, engine, dialogue), host="127.0.0.1")
        )
        await client.start_server()
        stack.push_async_callback(client.close)
        yield Bot(client, tenant, recorder, ticks)


def is_form(reply: RecordedRequest) -> bool:
    attachments = reply.body.get("attachments") or []
    return bool(attachments) and attachments[0]["contentType"].endswith("card.adaptive")


async def test_a_flood_from_one_person_is_served_up_to_the_burst_and_told_once(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    # Reference: the bot without the turn limits or the directory cache, as before.
    async with production_bot(
        migrated_engine,
        tenant,
        recorder,
        limits={"directory_cache_seconds": 0},
        limited=False,
    ) as unlimited:
        sent = [unlimited.activity("rowan", ADD_ME) for _ in range(REFERENCE_TURNS)]
        await asyncio.gather(*(unlimited.post(activity) for activity in sent))
        assert len(unlimited.replies_in("a:rowan")) == REFERENCE_TURNS
        per_turn = unlimited.m365_requests() / REFERENCE_TURNS
        assert per_turn >= 2, "a form costs at least the person and their mailbox"

    tenant.clear_requests()
    counted = limited_counts()["person"]
    async with production_bot(migrated_engine, tenant, recorder, limits={"person_burst": 5}) as bot:
        statuses = await asyncio.gather(
            *(bot.post(bot.activity("sasha", ADD_ME)) for _ in range(FLOOD))
        )
        assert set(statuses) <= {200, 201, 202}
        replies = bot.replies_in("a:sasha")
        forms = [reply for reply in replies if is_form(reply)]
        notices = [reply for reply in replies if not is_form(reply)]
        assert len(forms) == 5, "the burst is served, nothing more (the clock did not move)"
        assert len(notices) == 1
        assert notices[0].body["text"] == (f"{PERSON_NOTICE}; please wait 3 seconds and try again.")
        assert limited_counts()["person"] - counted == FLOOD - 5
        flood_requests = bot.m365_requests()
        # The five served turns shared one set of lookups (the cache); the rest made none.
        assert 0 < flood_requests <= per_turn
        print(  # shown with -s: the numbers for the change log
            f"\n{FLOOD} messages: {len(forms)} served, {len(notices)} polite answer, "
            f"{flood_requests} Microsoft 365 requests; reference {REFERENCE_TURNS} unlimited "
            f"turns: {per_turn * REFERENCE_TURNS:.0f} ({per_turn:g} per turn)"
        )


async def test_another_person_in_another_chat_is_served_during_a_flood(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    async with production_bot(migrated_engine, tenant, recorder, limits={"person_burst": 3}) as bot:
        flood = [bot.post(bot.activity("sasha", ADD_ME)) for _ in range(FLOOD)]
        bystander = bot.post(bot.activity("rowan", ADD_ME))
        await asyncio.gather(*flood[: FLOOD // 2], bystander, *flood[FLOOD // 2 :])
        assert len(bot.replies_in("a:sasha")) == 3 + 1
        answers = bot.replies_in("a:rowan")
        assert len(answers) == 1 and is_form(answers[0]), "rowan got the request form"


async def test_the_conversation_limit_holds_for_many_people_in_one_channel(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    channel = "19:general@thread.tacv2"
    async with production_bot(
        migrated_engine,
        tenant,
        recorder,
        limits={"person_burst": 3, "conversation_burst": 10},
    ) as bot:
        activities = []
        for n in range(120):
            activity = bot.activity(
                f"guest{n}", "help", conversation=f"{channel};messageid={n}", person_id=str(n)
            )
            activity["conversation"]["conversationType"] = "channel"
            activities.append(activity)
        await asyncio.gather(*(bot.post(activity) for activity in activities))
        replies = bot.replies_in(channel)
        helps = [r for r in replies if not r.body["text"].startswith(CHAT_NOTICE)]
        assert len(helps) == 10, "no person is over their own limit; the channel is"
        assert len(replies) == 10 + 1
        # Help is per person (IT admins see theirs too): the IT admins group is read once, then
        # the roster's cache answers; refused turns read nothing.
        assert bot.m365_requests() <= 1


async def test_limited_card_clicks_still_get_an_invoke_answer_and_do_nothing(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    async with production_bot(migrated_engine, tenant, recorder, limits={"person_burst": 4}) as bot:
        click = bot.click("casey", "refresh", {"ticket": "SW-1001", "version": 1})
        bodies = []
        for _ in range(4):
            response = await bot.client.post("/api/messages", json=click)
            assert response.status == 200
            bodies.append(await response.json())
        served_requests = bot.m365_requests()
        for _ in range(40):
            response = await bot.client.post("/api/messages", json=click)
            assert response.status == 200, "Teams shows an error for an invoke without an answer"
            bodies.append(await response.json())
        assert all(body["statusCode"] == 200 for body in bodies)
        assert all(PERSON_NOTICE not in str(body["value"]) for body in bodies[:4])
        assert all(
            body["type"] == "application/vnd.microsoft.activity.message"
            and re.fullmatch(
                rf"{PERSON_NOTICE}; please wait \d+ seconds? and try again\.", body["value"]
            )
            for body in bodies[4:]
        )
        assert bot.m365_requests() == served_requests, "refused clicks asked nothing"
        assert recorder.requests == [], "an invoke is answered in its response, never posted"


async def test_the_form_twice_within_the_ttl_asks_the_directory_once(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    async with production_bot(
        migrated_engine, tenant, recorder, limits={"directory_cache_seconds": 60}
    ) as bot:
        sasha = tenant.seed.user_ids[PEOPLE["sasha"]]
        await bot.post(bot.activity("sasha", ADD_ME))
        first = [r.path for r in tenant.requests]
        assert any(path.endswith(f"/users/{sasha}") for path in first)
        assert any(path.endswith(f"/users/{sasha}/events") for path in first)

        bot.ticks.now += 59
        await bot.post(bot.activity("sasha", ADD_ME))
        assert [r.path for r in tenant.requests] == first, "within the TTL: no directory call"

        bot.ticks.now += 2
        await bot.post(bot.activity("sasha", ADD_ME))
        assert [r.path for r in tenant.requests] == first + first, "after it: asked again"
        assert [is_form(reply) for reply in bot.replies_in("a:sasha")] == [True] * 3


async def test_serve_limits_turns_as_its_settings_say(tmp_path: Path) -> None:
    """The composition root wires the limits from ``SYNCWARDEN_LIMITS__*`` and counts refusals
    on ``/metrics``. A refill of one turn an hour keeps real time out of the count."""
    port = free_port()
    env = cli_environment(
        SYNCWARDEN_MODE="sandbox",
        SYNCWARDEN_HTTP__PORT=str(port),
        SYNCWARDEN_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path}/sw.db",
        SYNCWARDEN_LOG__FORMAT="json",
        SYNCWARDEN_LIMITS__PERSON_TURNS_PER_MINUTE=str(1 / 60),
        SYNCWARDEN_LIMITS__PERSON_BURST="3",
    )
    service = await ServiceProcess.start(env)
    recorder = await ConnectorRecorder().start()
    base = f"http://127.0.0.1:{port}"
    try:
        await service.wait_for_event("syncwarden.started")
        service.follow()
        async with aiohttp.ClientSession() as http:
            for n in range(8):
                activity = message_activity(recorder.url, "help", activity_id=f"act-{n}")
                async with http.post(f"{base}/api/messages", json=activity) as response:
                    assert response.status in (200, 201, 202)
            async with http.get(f"{base}/metrics") as response:
                metrics = await response.text()
        texts = [request.body["text"] for request in recorder.requests]
        assert len(texts) == 3 + 1
        assert texts[3].startswith(PERSON_NOTICE)
        assert 'syncwarden_bot_turns_limited_total{scope="person"} 5.0' in metrics
    finally:
        await service.stop()
        await recorder.close()
