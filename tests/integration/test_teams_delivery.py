"""Delivering the outbox to Teams through the connector REST API (a local recorder stands in)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.card_posts import CardPostStore, PostedCard
from syncwarden.bot.conversations import (
    ChannelRole,
    ChannelRoleRecord,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.bot.rate_limit import TEAMS_APP_WINDOWS, ConversationRateLimiter
from syncwarden.bot.teams_delivery import TeamsDelivery
from syncwarden.core.db import session_factory, utc_now, write_transaction
from syncwarden.workflows.outbox import OutboxMessage, OutboxNotifier
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from tests.support.monotonic import SleepingClock
from tests.support.recorder import ConnectorRecorder
from tests.support.tickets import sample_ticket

ADA_AAD = "u-1"
CASEY_AAD = "c-1"


class Anonymous:
    async def bot_token(self) -> str | None:
        return None


class Waits:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@dataclasses.dataclass
class Setup:
    outbox: OutboxNotifier
    dispatcher: OutboxDispatcher
    conversations: ConversationStore
    waits: Waits


@pytest.fixture
async def setup(migrated_engine: AsyncEngine, recorder: ConnectorRecorder) -> AsyncIterator[Setup]:
    sessions = session_factory(migrated_engine)
    conversations = ConversationStore(sessions)
    url = recorder.url
    await conversations.remember(
        ConversationRef("a:ada", ConversationKind.PERSONAL, url, "t", "28:bot", ADA_AAD, "29:ada")
    )
    await conversations.remember(
        ConversationRef(
            "a:casey", ConversationKind.PERSONAL, url, "t", "28:bot", CASEY_AAD, "29:casey"
        )
    )
    await conversations.remember(
        ConversationRef("19:it@thread", ConversationKind.CHANNEL, url, "t", "28:bot")
    )
    await conversations.assign_role("19:it@thread", ChannelRole.IT)
    await conversations.remember(
        ConversationRef("19:approvals@thread", ConversationKind.CHANNEL, url, "t", "28:bot")
    )
    await conversations.assign_role("19:approvals@thread", ChannelRole.APPROVALS)
    waits = Waits()
    async with httpx.AsyncClient() as http:
        delivery = TeamsDelivery(
            http, Anonymous(), conversations, CardPostStore(sessions), sleep=waits
        )
        yield Setup(
            OutboxNotifier(sessions), OutboxDispatcher(sessions, delivery), conversations, waits
        )


WAITING = dataclasses.replace(sample_ticket(), status="awaiting_approval", decisions=(), version=1)


def cards_in(recorder: ConnectorRecorder) -> list[dict[str, Any]]:
    return [
        r.body["attachments"][0]["content"]
        for r in recorder.requests
        if r.body and r.body.get("attachments")
    ]


async def test_approval_cards_go_to_approvers_and_the_channel_and_update_in_place(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    ask = Notification(
        NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
    )
    await setup.outbox.to_user(CASEY_AAD, ask, key="k1")
    await setup.outbox.to_channel(Channel.APPROVALS, ask, key="k2")
    assert await setup.dispatcher.dispatch_due() == 2
    posts = {r.path: r.body["attachments"][0]["content"] for r in recorder.requests}
    assert set(posts) == {
        "/v3/conversations/a:casey/activities",
        "/v3/conversations/19:approvals@thread/activities",
    }
    approver_copy = posts["/v3/conversations/a:casey/activities"]
    channel_copy = posts["/v3/conversations/19:approvals@thread/activities"]
    assert [a["verb"] for a in approver_copy["actions"]] == ["approve", "reject"]
    assert channel_copy["refresh"]["userIds"] == ["29:casey"]
    # The two were delivered side by side; the recorder numbered its answers as they came.
    reply_to = {r.path.split("/")[3]: f"reply-{n}" for n, r in enumerate(recorder.requests, 1)}

    decided = sample_ticket()
    await setup.outbox.update_card(decided, key="k3")
    assert await setup.dispatcher.dispatch_due() == 1
    updates = [r for r in recorder.requests if r.method == "PUT"]
    assert [u.path for u in updates] == [
        f"/v3/conversations/a:casey/activities/{reply_to['a:casey']}",
        f"/v3/conversations/19:approvals@thread/activities/{reply_to['19:approvals@thread']}",
    ]
    assert all("actions" not in u.body["attachments"][0]["content"] for u in updates)


async def test_an_approval_request_delivered_again_updates_its_card_instead_of_posting_twice(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    """A crash after the card was posted and recorded, but before its outbox row was marked
    sent, delivers the row again: the repeat must be a PUT of the same activity, not a second
    card. A reminder is meant to notify, so it is still a new post."""
    ask = Notification(
        NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
    )
    await setup.outbox.to_user(CASEY_AAD, ask, key="first")
    await setup.outbox.to_user(CASEY_AAD, ask, key="the same row, delivered again")
    assert await setup.dispatcher.dispatch_due() == 2
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("POST", "/v3/conversations/a:casey/activities"),
        ("PUT", "/v3/conversations/a:casey/activities/reply-1"),
    ]

    remind = Notification(NotificationKind.APPROVAL_REMINDER, WAITING, "still waiting", {})
    await setup.outbox.to_user(CASEY_AAD, remind, key="reminder")
    assert await setup.dispatcher.dispatch_due() == 1
    assert (recorder.requests[-1].method, recorder.requests[-1].path) == (
        "POST",
        "/v3/conversations/a:casey/activities",
    )


def status_shown(request: Any) -> str | None:
    """The status line of a posted or updated card that shows one."""
    for element in request.body["attachments"][0]["content"]["body"]:
        text = element.get("text", "")
        if text.startswith("Status: **"):
            return str(text.removeprefix("Status: **").removesuffix("**"))
    return None


def shows_buttons(request: Any) -> bool:
    """Whether a posted or updated card still asks for a decision (the waiting state)."""
    return "actions" in request.body["attachments"][0]["content"]


async def test_an_approval_request_delivered_after_the_decision_shows_the_decision(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    """A kill between a card's POST and its record leaves the approval request to be sent again
    when its row's claim runs out, minutes after the decision's update went out. The new copy
    must show the decided ticket, not the waiting one the row was queued with."""
    ask = Notification(
        NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
    )
    await setup.outbox.update_card(sample_ticket(), key="decided")
    await setup.outbox.to_user(CASEY_AAD, ask, key="late request")
    await setup.outbox.to_channel(Channel.APPROVALS, ask, key="late channel request")
    assert await setup.dispatcher.dispatch_due() == 3
    posted = [r for r in recorder.requests if r.method == "POST"]
    assert len(posted) == 2
    assert not any(shows_buttons(r) for r in posted), "a late request shows the decision"


async def test_an_older_update_delivered_late_does_not_turn_the_cards_back(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    ask = Notification(
        NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
    )
    await setup.outbox.to_user(CASEY_AAD, ask, key="request")
    assert await setup.dispatcher.dispatch_due() == 1
    await setup.outbox.update_card(sample_ticket(), key="completed (v5)")
    assert await setup.dispatcher.dispatch_due() == 1
    approved = dataclasses.replace(sample_ticket(), status="approved", version=3)
    await setup.outbox.update_card(approved, key="approved (v3), delivered late")
    assert await setup.dispatcher.dispatch_due() == 1
    puts = [r for r in recorder.requests if r.method == "PUT"]
    assert [status_shown(p) for p in puts] == ["completed", "completed"], (
        "the late update writes the newest state again, not its own"
    )


async def test_a_reminder_for_a_decided_ticket_is_not_sent(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    await setup.outbox.update_card(sample_ticket(), key="decided")
    assert await setup.dispatcher.dispatch_due() == 1
    remind = Notification(NotificationKind.APPROVAL_REMINDER, WAITING, "still waiting", {})
    await setup.outbox.to_user(CASEY_AAD, remind, key="reminder queued before the decision")
    assert await setup.dispatcher.dispatch_due() == 1
    assert recorder.requests == [], "nothing to remind anyone of"


async def test_a_decision_rendered_while_a_card_is_posted_reaches_that_card(
    migrated_engine: AsyncEngine, recorder: ConnectorRecorder, setup: Setup
) -> None:
    """Two deliveries of one ticket at once (two replicas): the decision's update reads the
    card posts before the request's new post is recorded, so it cannot reach that post. The
    posting delivery checks for a newer state after recording its post and writes it."""
    sessions = session_factory(migrated_engine)

    class DecisionMeanwhile(CardPostStore):
        async def add(self, post: PostedCard) -> None:
            await super().add(post)
            await self.newest_view(sample_ticket())  # the other delivery, in between

    async with httpx.AsyncClient() as http:
        delivery = TeamsDelivery(
            http, Anonymous(), setup.conversations, DecisionMeanwhile(sessions)
        )
        ask = Notification(
            NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
        )
        await delivery.to_user(CASEY_AAD, ask, key="request")
    post, put = recorder.requests
    assert (post.method, shows_buttons(post)) == ("POST", True)
    assert (put.method, put.path) == ("PUT", "/v3/conversations/a:casey/activities/reply-1")
    assert not shows_buttons(put)


async def test_text_to_a_person_and_status_cards_to_it(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    await setup.outbox.to_user(
        ADA_AAD, Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "**ready**"), key="k1"
    )
    failed = dataclasses.replace(
        sample_ticket(), status="failed", failure_reason="add_to_group: refused"
    )
    await setup.outbox.to_channel(
        Channel.IT, Notification(NotificationKind.FAILED, failed, "failed"), key="k2"
    )
    assert await setup.dispatcher.dispatch_due() == 2
    text, status = sorted(recorder.requests, key=lambda r: "19:it" in r.path)
    assert text.body["text"] == "**ready**" and text.body["textFormat"] == "markdown"
    assert [a["verb"] for a in status.body["attachments"][0]["content"]["actions"]] == [
        "retry",
        "cancel",
    ]


async def test_throttled_send_waits_for_retry_after(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    recorder.scripted.append((429, {"Retry-After": "1.5"}, "slow down"))
    await setup.outbox.to_user(
        ADA_AAD, Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "hi"), key="k"
    )
    assert await setup.dispatcher.dispatch_due() == 1
    assert setup.waits.seconds == [1.5]
    assert len(recorder.requests) == 2


async def test_a_long_retry_after_becomes_the_rows_next_attempt_not_a_wait_in_the_delivery(
    setup: Setup, recorder: ConnectorRecorder, migrated_engine: AsyncEngine
) -> None:
    """A claimed row is parked for five minutes; a delivery sleeping through Teams' Retry-After
    (up to 300 s, several times) could outlive the park and be claimed and sent again by another
    replica. A pause longer than 30 s ends the delivery and is kept on the row instead."""
    recorder.scripted.append((429, {"Retry-After": "120"}, "slow down"))
    await setup.outbox.to_user(
        ADA_AAD, Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "hi"), key="k"
    )
    before = utc_now()
    assert await setup.dispatcher.dispatch_due() == 0
    assert setup.waits.seconds == [], "no sleep inside the delivery"
    assert len(recorder.requests) == 1
    async with session_factory(migrated_engine)() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key == "k"))
    assert row is not None and row.state == "pending"
    assert row.next_attempt_at >= before + timedelta(seconds=120)


async def test_a_person_who_blocked_the_bot_is_not_retried(
    setup: Setup, recorder: ConnectorRecorder, migrated_engine: AsyncEngine
) -> None:
    recorder.scripted.append((403, {}, '{"error":{"code":"MessageWritesBlocked"}}'))
    await setup.outbox.to_user(
        ADA_AAD, Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "hi"), key="k"
    )
    assert await setup.dispatcher.dispatch_due() == 1, "only the IT channel hears, of the failure"
    ref = await setup.conversations.for_user(ADA_AAD)
    assert ref is not None and ref.blocked
    async with session_factory(migrated_engine)() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key == "k"))
        assert row is not None and row.state == "failed" and row.attempts == 1
        told = await session.scalar(
            select(OutboxMessage).where(OutboxMessage.key == "undeliverable:k")
        )
        assert told is not None and told.recipient == "it"
    await setup.outbox.to_user(
        ADA_AAD, Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "again"), key="k2"
    )
    await setup.dispatcher.dispatch_due()
    to_ada = [r for r in recorder.requests if "a:ada" in r.path]
    assert len(to_ada) == 1, "a blocked person gets no more attempts"


async def test_no_it_channel_is_explained(
    setup: Setup, recorder: ConnectorRecorder, migrated_engine: AsyncEngine
) -> None:
    sessions = session_factory(migrated_engine)
    store = ConversationStore(sessions)
    await store.forget("19:it@thread")
    await setup.outbox.to_channel(
        Channel.IT, Notification(NotificationKind.STATUS, sample_ticket(), "x"), key="k"
    )
    assert await setup.dispatcher.dispatch_due() == 0
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage))
        assert row is not None and row.state == "failed"
        assert "use this channel for alerts" in (row.last_error or "")


async def test_with_no_approvals_channel_the_channel_copy_is_skipped_and_it_is_not_told(
    setup: Setup, recorder: ConnectorRecorder, migrated_engine: AsyncEngine
) -> None:
    """The approvals channel is optional (approvers have the card in their chats): its copy
    is not a failure to report, unlike a missing IT channel."""
    sessions = session_factory(migrated_engine)
    async with write_transaction(sessions) as session:
        await session.execute(delete(ChannelRoleRecord))
    ask = Notification(
        NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
    )
    await setup.outbox.to_channel(Channel.APPROVALS, ask, key="k")
    await setup.dispatcher.dispatch_due()
    assert recorder.requests == []
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [(row.key, row.state) for row in rows] == [("k", "sent")], "nobody told of it"


def one_send_per_half_minute(clock: SleepingClock) -> ConversationRateLimiter:
    return ConversationRateLimiter(((1, 30.0),), clock=clock, sleep=clock.sleep)


async def test_a_conversation_out_of_room_postpones_its_message_and_others_still_go(
    migrated_engine: AsyncEngine, recorder: ConnectorRecorder, setup: Setup
) -> None:
    """Nothing of the message was sent, so putting it aside costs nothing: the row is due again
    when the conversation has room, with no attempt spent, and no delivery slept meanwhile."""
    sessions = session_factory(migrated_engine)
    clock = SleepingClock()
    async with httpx.AsyncClient() as http:
        delivery = TeamsDelivery(
            http,
            Anonymous(),
            setup.conversations,
            CardPostStore(sessions),
            limiter=one_send_per_half_minute(clock),
        )
        note = Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "hi")
        await setup.outbox.to_user(ADA_AAD, note, key="first")
        await setup.outbox.to_user(ADA_AAD, note, key="second")
        await setup.outbox.to_user(CASEY_AAD, note, key="casey")
        before = utc_now()
        assert await OutboxDispatcher(sessions, delivery).dispatch_due() == 2
    assert sorted(r.path for r in recorder.requests) == [
        "/v3/conversations/a:ada/activities",
        "/v3/conversations/a:casey/activities",
    ]
    assert clock.waits == []
    async with sessions() as session:
        second = await session.scalar(select(OutboxMessage).where(OutboxMessage.key == "second"))
    assert second is not None and (second.state, second.attempts) == ("pending", 0)
    assert second.next_attempt_at >= before + timedelta(seconds=29)


async def test_a_delivery_that_has_begun_waits_for_room_rather_than_start_again(
    migrated_engine: AsyncEngine, recorder: ConnectorRecorder, setup: Setup
) -> None:
    """A newer state of the ticket appears while its approval card is posted: the card must be
    updated in the same conversation. Postponing now would post the card again on the retry,
    so the delivery waits for room instead."""
    sessions = session_factory(migrated_engine)
    clock = SleepingClock()

    class DecisionMeanwhile(CardPostStore):
        async def add(self, post: PostedCard) -> None:
            await super().add(post)
            await self.newest_view(sample_ticket())

    async with httpx.AsyncClient() as http:
        delivery = TeamsDelivery(
            http,
            Anonymous(),
            setup.conversations,
            DecisionMeanwhile(sessions),
            limiter=one_send_per_half_minute(clock),
        )
        ask = Notification(
            NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY_AAD}
        )
        await delivery.to_user(CASEY_AAD, ask, key="request")
    assert [r.method for r in recorder.requests] == ["POST", "PUT"]
    assert clock.waits == [30.0]


async def test_sends_beyond_the_apps_fifty_a_second_wait_for_the_next_second(
    migrated_engine: AsyncEngine, recorder: ConnectorRecorder, setup: Setup
) -> None:
    sessions = session_factory(migrated_engine)
    clock = SleepingClock()
    app = ConversationRateLimiter(TEAMS_APP_WINDOWS, clock=clock, sleep=clock.sleep)
    async with httpx.AsyncClient() as http:
        delivery = TeamsDelivery(
            http,
            Anonymous(),
            setup.conversations,
            CardPostStore(sessions),
            limiter=ConversationRateLimiter(((1000, 1.0),), clock=clock, sleep=clock.sleep),
            app_limiter=app,
        )
        for n in range(51):
            note = Notification(NotificationKind.INSTRUCTIONS, None, f"alert {n}")
            await delivery.to_channel(Channel.IT if n % 2 else Channel.APPROVALS, note, key=str(n))
    assert len(recorder.requests) == 51
    assert clock.waits == [1.0], "the 51st request waited for the window to move on"


async def test_an_ending_reminder_and_a_review_invitation_arrive_as_cards(
    setup: Setup, recorder: ConnectorRecorder
) -> None:
    ending = Notification(
        NotificationKind.ACCESS_ENDING,
        None,
        "Your calendar sync ends after **30 Jun 2027**.",
        {"until": "2027-07-01T00:00:00+00:00", "name": "Ada", "latest": "2027-11-21"},
    )
    await setup.outbox.to_user(ADA_AAD, ending, key="ending")
    invite = Notification(
        NotificationKind.REVIEW_REQUESTED, None, "Access review AR-1: 3 people", {"review": "AR-1"}
    )
    await setup.outbox.to_user(CASEY_AAD, invite, key="invite")
    assert await setup.dispatcher.dispatch_due() == 2
    by_verb = {card["actions"][0]["verb"]: card for card in cards_in(recorder)}
    extend = by_verb["access_extend"]
    [until] = [element for element in extend["body"] if element.get("id") == "until"]
    assert until["type"] == "Input.Date" and until["max"] == "2027-11-21"
    assert by_verb["review_page"]["actions"][0]["data"]["review"] == "AR-1"
