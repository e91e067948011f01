"""Time-bound access and access reviews through /api/messages: the request card's "until", the
reminder's Extend, and review clicks authorised by who clicked, whatever the card data says."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.workflows.model import TicketKind
from syncwarden.workflows.review_views import ReviewSummary
from tests.integration.test_bot_flow import WebClient, click, invoke, say, serving
from tests.support.recorder import ConnectorRecorder
from tests.support.workflow import Harness


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@pytest.fixture
async def client(h: Harness, migrated_engine: AsyncEngine) -> AsyncIterator[WebClient]:
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, clock=h.clock)
    async with serving(migrated_engine, dialogue) as started:
        yield started


async def test_until_on_the_request_card_and_extend_on_the_reminder(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    form = await say(client, h, "sasha", recorder, "add me to calendar sync")
    card = form["attachments"][0]["content"]
    [until_field] = [e for e in card["body"] if e.get("id") == "until"]
    assert until_field["type"] == "Input.Date" and "max" not in until_field, "no maximum set"

    last_day = (h.clock.now + dt.timedelta(days=10)).date()
    data = {"verb": "submit_request", "mailbox": "sasha.verhoeven@example.edu"}
    bad = await click(
        client,
        invoke(
            h,
            "sasha",
            recorder.url,
            "submit_request",
            {**data, "profile": "prof-sasha", "until": "next tuesday"},
        ),
    )
    assert "a date like" in json.dumps(bad["value"])
    await click(
        client,
        invoke(
            h,
            "sasha",
            recorder.url,
            "submit_request",
            {**data, "profile": "prof-sasha", "until": last_day.isoformat()},
        ),
    )
    ticket = await h.service.get_ticket("SW-1001")
    assert ticket is not None and ticket.access_until is not None
    assert ticket.access_until.date() == last_day + dt.timedelta(days=1)
    assert (await h.service.decide(ticket.ref, h.person("casey"), approve=True)).ok
    await h.runner.run_until_idle()

    status = await say(client, h, "sasha", recorder, "status")
    assert f"It ends after **{last_day:%d %b %Y}**" in status["text"]
    h.clock.advance(days=5)
    assert (await h.service.check_access_expiry()).reminded == 1
    refused = await click(
        client, invoke(h, "sasha", recorder.url, "access_extend", {"until": last_day.isoformat()})
    )
    assert "after the current one" in json.dumps(refused["value"])
    later = (last_day + dt.timedelta(days=90)).isoformat()
    extended = await click(
        client, invoke(h, "sasha", recorder.url, "access_extend", {"until": later})
    )
    assert "Extension asked for" in json.dumps(extended["value"])
    assert "actions" not in extended["value"], "asked once: no Extend button left"
    asked = await h.service.get_ticket("SW-1002")
    assert asked is not None and asked.kind == TicketKind.EXTEND
    assert asked.requester.id == h.person("sasha").id.lower()
    stranger = await click(
        client, invoke(h, "blake", recorder.url, "access_extend", {"until": later})
    )
    assert "not enrolled" in json.dumps(stranger["value"]), "Extend acts for the clicker only"


async def test_review_clicks_are_authorised_by_who_clicked(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    for key in ("avery", "sasha"):
        result = await h.service.request_enrollment(h.person(key))
        assert result.ticket is not None
        await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    started = await h.service.reviews.start(h.person("dana"))
    assert isinstance(started, ReviewSummary)

    page = await click(
        client, invoke(h, "casey", recorder.url, "review_page", {"review": "AR-1", "after": 0})
    )
    text = json.dumps(page["value"])
    assert "Avery" in text and "Sasha" in text and "2 left for you" in text
    decide = next(
        a["data"]
        for element in page["value"]["body"]
        if element.get("type") == "ActionSet"
        for a in element["actions"]
        if a["title"] == "Remove"
    )
    forged = await click(client, invoke(h, "blake", recorder.url, "review_decide", decide))
    assert "not a reviewer" in json.dumps(forged["value"])
    blank = await click(
        client, invoke(h, "blake", recorder.url, "review_page", {"review": "AR-1", "after": 0})
    )
    assert "Avery" not in json.dumps(blank["value"]), "a stranger sees nobody"
    removed = await click(client, invoke(h, "casey", recorder.url, "review_decide", decide))
    assert "Removal requested" in json.dumps(removed["value"])
    unreadable = await click(
        client,
        invoke(
            h,
            "casey",
            recorder.url,
            "review_keep_all",
            {"review": "AR-1", "items": "1,two", "after": 0},
        ),
    )
    assert "can't read that button" in json.dumps(unreadable["value"])


async def test_it_admins_start_a_review_from_the_chat(
    client: WebClient, h: Harness, recorder: ConnectorRecorder
) -> None:
    result = await h.service.request_enrollment(h.person("sasha"))
    assert result.ticket is not None
    await h.service.decide(result.ticket.ref, h.person("casey"), approve=True)
    await h.runner.run_until_idle()
    refused = await say(client, h, "blake", recorder, "start access review")
    assert "only IT admins" in refused["text"]
    assert await h.service.reviews.summaries() == []
    started = await say(client, h, "dana", recorder, "start access review")
    assert "Started access review **AR-1** of 1 people" in started["text"]
    again = await say(client, h, "dana", recorder, "start access review")
    assert "AR-1 is still open" in again["text"]
