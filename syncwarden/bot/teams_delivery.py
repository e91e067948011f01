"""Delivering notifications to Teams: the bot's side of the notifier port.

The outbox dispatcher calls this with each pending notification. We look up where to write (a
stored conversation reference), render the notification (a card for approvals, status lines and
manual tasks; Markdown text for everything a person reads), respect Teams' per-conversation and
per-app limits, and call the Bot Framework connector's REST API directly with the bot's token.
Approval cards are remembered per ticket so a decision can update every copy in place.

Failures are classified for the outbox: a 429/412/5xx is retried here a few times (honouring
``Retry-After``) and otherwise left for the outbox to try again later; a person who blocked the bot
(403) or a conversation that no longer exists (404) can never be reached, which is reported as
:class:`workflows.ports.UndeliverableError` so the outbox stops trying.

Teams lets the bot write only to people who have its app. For someone with no 1:1 chat yet (an
approver or requester who never opened Syncwarden) the app is installed for them through Graph
(an :class:`AppInstaller`) and the message goes to the chat that opens. When that is refused, the
reason given to the outbox (and so to IT) says what to grant, upload or license.

A conversation whose send budget is spent for more than a moment postpones the message (nothing
sent yet, so the outbox can simply try it later) rather than holding a delivery slot while other
conversations wait; once a delivery has sent something, it waits instead, since trying the whole
message again would repeat what was sent.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

import httpx

from syncwarden.bot import cards, review_cards
from syncwarden.bot.card_posts import CardPostStore, PostedCard
from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.bot.rate_limit import TEAMS_APP_WINDOWS, ConversationRateLimiter
from syncwarden.connectors.errors import ConnectorError
from syncwarden.connectors.graph.error_mapping import parse_retry_after
from syncwarden.core.db import utc_now
from syncwarden.core.logging import get_logger
from syncwarden.workflows.drift_digest import DIGEST_DETAIL, DriftDigest
from syncwarden.workflows.ports import (
    Channel,
    DeliveryDeferredError,
    DeliveryPostponedError,
    Notification,
    NotificationKind,
    TicketView,
    UndeliverableError,
)

log = get_logger(__name__)
RETRYABLE_STATUSES = frozenset({412, 429, 502, 503, 504})
MAX_SEND_ATTEMPTS = 4
# Longer pauses asked by Teams end the delivery and become the outbox row's next attempt time.
MAX_WAIT_IN_DELIVERY_SECONDS = 30.0
# A conversation with no room for longer than this postpones a message not yet begun.
MAX_RATE_WAIT_IN_DELIVERY_SECONDS = 1.0
_APP = "app"
# Whether the delivery running in this task has sent anything yet (each outbox delivery is a task
# of its own, so this is per delivery; the public methods also reset it as they begin).
_sent_something: ContextVar[bool] = ContextVar("teams_delivery_sent_something", default=False)
# A delivery re-renders its card when a newer state of the ticket appeared meanwhile; a ticket
# moving on that often during one delivery is not expected, so this only bounds the loop.
_MAX_RENDER_ROUNDS = 3
_APPROVAL_KINDS = frozenset(
    {
        NotificationKind.APPROVAL_REQUESTED,
        NotificationKind.APPROVAL_REMINDER,
        NotificationKind.APPROVAL_ESCALATED,
    }
)


class BotTokenSource(Protocol):
    async def bot_token(self) -> str | None:
        """A Bot Framework token, or None where the connector takes anonymous calls (sandbox)."""
        ...


class AppInstaller(Protocol):
    async def ensure_installed(self, user_id: str, external_app_id: str) -> str:
        """Install the Teams app (by manifest id) for the person if needed; the chat id.

        Raises a :class:`connectors.errors.ConnectorError` whose message tells IT what to do.
        """
        ...


class TeamsSendError(DeliveryDeferredError):
    """Teams did not take the message this time; the outbox will try again later."""


Sleep = Callable[[float], Awaitable[None]]


class TeamsDelivery:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: BotTokenSource,
        conversations: ConversationStore,
        posts: CardPostStore,
        *,
        limiter: ConversationRateLimiter | None = None,
        app_limiter: ConversationRateLimiter | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Sleep = asyncio.sleep,
        installer: AppInstaller | None = None,
        teams_app_id: str | None = None,
    ) -> None:
        """``installer`` and ``teams_app_id`` (the manifest id: the bot's app id) let the bot
        reach people with no chat with it yet; without them such people are undeliverable."""
        self._http = http
        self._tokens = tokens
        self._conversations = conversations
        self._posts = posts
        self._sleep = sleep
        self._limiter = limiter or ConversationRateLimiter()
        self._app_limiter = app_limiter or ConversationRateLimiter(TEAMS_APP_WINDOWS)
        self._clock = clock
        self._installer = installer
        self._teams_app_id = teams_app_id
        self._rng = random.Random()  # noqa: S311 - jitter, not secrecy

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        _sent_something.set(False)
        ref = await self._conversations.for_user(user_id) or await self._open_chat(user_id)
        if ref.blocked:
            raise UndeliverableError(f"{user_id} has blocked the bot")
        if notification.kind in _APPROVAL_KINDS:
            now = self._clock()
            await self._approval_card(
                ref, notification, lambda view: cards.approver_card(view, now=now), "approver"
            )
            return
        card = review_cards.notification_card(notification)
        if card is not None:
            await self._send(ref, _card_activity(card))
            return
        await self._send(
            ref, {"type": "message", "text": notification.text, "textFormat": "markdown"}
        )

    async def _open_chat(self, user_id: str) -> ConversationRef:
        """Install the app for a person with no 1:1 chat, remember that chat, and return it.

        The new chat is written like any other 1:1 reference (so the next message finds it
        without Graph), with the service URL and bot id of the newest known conversation.
        """
        no_chat = (
            f"no 1:1 chat with {user_id}: they have not installed the app or written to the bot"
        )
        if self._installer is None or not self._teams_app_id:
            raise UndeliverableError(no_chat)
        known = await self._conversations.latest()
        if known is None:
            raise UndeliverableError(
                f"{no_chat}, and no conversation with the bot is known yet, so Teams' address for "
                "this organisation is unknown; add the app to the IT team first"
            )
        try:
            chat_id = await self._installer.ensure_installed(user_id, self._teams_app_id)
        except ConnectorError as error:
            if error.retryable:
                raise TeamsSendError(
                    f"installing the Teams app for {user_id} failed for now: {error.message}",
                    retry_after=error.retry_after,
                ) from None
            raise UndeliverableError(
                f"{no_chat}, and Syncwarden could not install its Teams app for them: "
                f"{error.message}"
            ) from None
        ref = ConversationRef(
            conversation_id=chat_id,
            kind=ConversationKind.PERSONAL,
            service_url=known.service_url,
            tenant_id=known.tenant_id,
            bot_id=known.bot_id,
            user_aad_id=user_id,
        )
        await self._conversations.remember(ref)
        log.info("teams.app_installed", user=user_id, conversation=chat_id)
        return ref

    async def to_channel(self, channel: Channel, notification: Notification, *, key: str) -> None:
        _sent_something.set(False)
        ref = await self._conversations.for_role(ChannelRole(channel.value))
        if ref is None and channel is Channel.APPROVALS:
            # The approvals channel is optional: approvers have their cards in their chats, and
            # naming a channel later posts the requests still waiting there.
            log.info("teams.no_approvals_channel", key=key)
            return
        if ref is None:
            raise UndeliverableError(
                f"no {channel.value} channel is set: say 'use this channel for alerts' there"
            )
        now = self._clock()
        if notification.ticket is None:
            alert = notification.details.get("alert")
            digest = _digest(notification)
            if notification.kind is NotificationKind.CREDENTIAL_ALERT and alert:
                card = cards.credential_alert_card(notification.text, alert)
                await self._send(ref, _card_activity(card))
            elif digest is not None:
                await self._send(ref, _card_activity(cards.drift_card(digest)))
            else:
                text = {"type": "message", "text": notification.text, "textFormat": "markdown"}
                await self._send(ref, text)
            return
        view = notification.ticket
        if notification.kind in _APPROVAL_KINDS:
            approvers = [a for a in notification.details.get("approvers", "").split(",") if a]
            mris = await self._conversations.mris_of(approvers)
            await self._approval_card(
                ref,
                notification,
                lambda newest: cards.approval_card(newest, now=now, approver_ids=mris),
                "channel",
            )
        elif notification.kind is NotificationKind.MANUAL_STEP:
            await self._send(
                ref, _card_activity(cards.manual_task_card(view, notification.details, now=now))
            )
        elif notification.kind in (NotificationKind.FAILED, NotificationKind.STATUS):
            await self._send(
                ref, _card_activity(cards.status_card(view, notification.text, now=now))
            )
        else:
            await self._send(ref, {"type": "message", "text": notification.text})

    async def update_card(self, ticket: TicketView, *, key: str) -> None:
        """Put the ticket's newest state into every copy of its approval card.

        The newest state is this update's or a newer one another delivery already rendered, so
        an update delivered late never turns a card back. A newer state stored while this one
        was being written is written too.
        """
        _sent_something.set(False)
        shown: int | None = None
        view = ticket
        for _ in range(_MAX_RENDER_ROUNDS):
            view = await self._posts.newest_view(view)
            if shown is not None and view.version <= shown:
                return
            now = self._clock()
            for post in await self._posts.for_ticket(ticket.ref):
                card = (
                    cards.approver_card(view, now=now)
                    if post.audience == "approver"
                    else cards.approval_card(view, now=now)
                )
                await self._put_card(post, card)
            shown = view.version

    async def _approval_card(
        self,
        ref: ConversationRef,
        notification: Notification,
        render: Callable[[TicketView], cards.Card],
        audience: str,
    ) -> None:
        """Post (or, for a repeated first request, update) a ticket's approval card, showing the
        newest state of the ticket known to any card.

        A reminder or escalation whose ticket has since been decided is not sent: it would ask
        for a decision already made. A first request is still posted, showing the outcome, so
        every approver sees what became of a ticket that named them.
        """
        queued = notification.require_ticket()
        view = await self._posts.newest_view(queued)
        first = notification.kind is NotificationKind.APPROVAL_REQUESTED
        if not first and view.status != queued.status:
            log.info("teams.reminder_dropped", ticket=view.ref, status=view.status)
            return
        post = await self._post_card(ref, view, render(view), audience=audience, once=first)
        for _ in range(_MAX_RENDER_ROUNDS):
            newer = await self._posts.newest_view(view)
            if post is None or newer.version <= view.version:
                return
            view = newer
            await self._put_card(post, render(view))

    async def _post_card(
        self,
        ref: ConversationRef,
        ticket: TicketView,
        card: cards.Card,
        *,
        audience: str,
        once: bool = False,
    ) -> PostedCard | None:
        """Post a ticket's card; with ``once``, a repeat updates the copy already posted there.

        Teams has no idempotency key for new messages, so the first approval request delivered
        again after a crash would post a second card. Once the first post is recorded, the repeat
        becomes a PUT of the same activity (idempotent); only a crash between the POST and that
        record can still leave two cards. Reminders and escalations are meant to be new messages
        (they notify), so they always post. Returns the post (None if Teams gave no id).
        """
        for post in await self._posts.for_ticket(ticket.ref) if once else []:
            if post.conversation_id == ref.conversation_id and post.audience == audience:
                await self._put_card(post, card)
                return post
        answer = await self._send(ref, _card_activity(card))
        activity_id = answer.get("id") if isinstance(answer, dict) else None
        if not activity_id:
            return None
        posted = PostedCard(
            ticket.ref, ref.conversation_id, str(activity_id), ref.service_url, audience
        )
        await self._posts.add(posted)
        return posted

    async def _put_card(self, post: PostedCard, card: cards.Card) -> None:
        await self._request(
            "PUT",
            _activity_url(post.service_url, post.conversation_id, post.activity_id),
            {**_card_activity(card), "id": post.activity_id},
            post.conversation_id,
        )

    async def _send(self, ref: ConversationRef, activity: dict[str, Any]) -> Any:
        url = f"{ref.service_url.rstrip('/')}/v3/conversations/{ref.conversation_id}/activities"
        body = {**activity, "from": {"id": ref.bot_id}, "conversation": {"id": ref.conversation_id}}
        try:
            return await self._request("POST", url, body, ref.conversation_id)
        except UndeliverableError:
            if ref.kind.value == "personal":
                await self._conversations.mark_blocked(ref.conversation_id)
            raise

    async def _request(
        self, method: str, url: str, body: dict[str, Any], conversation_id: str
    ) -> Any:
        for attempt in range(1, MAX_SEND_ATTEMPTS + 1):
            await self._wait_for_room(conversation_id)
            token = await self._tokens.bot_token()
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                response = await self._http.request(method, url, json=body, headers=headers)
            except httpx.TransportError as error:
                if attempt == MAX_SEND_ATTEMPTS:
                    raise TeamsSendError(
                        f"Teams could not be reached ({type(error).__name__})"
                    ) from None
                await self._sleep(self._backoff(attempt))
                continue
            if response.status_code < 300:
                _sent_something.set(True)
                return response.json() if response.content else {}
            if response.status_code in (403, 404):
                raise UndeliverableError(
                    f"Teams refused the message ({response.status_code}): {response.text[:200]}"
                )
            asked = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code in RETRYABLE_STATUSES and attempt < MAX_SEND_ATTEMPTS:
                wait = asked or self._backoff(attempt)
                if wait > MAX_WAIT_IN_DELIVERY_SECONDS:
                    # A long pause is the outbox's to keep (the row's next attempt), not a sleep
                    # here: the row is only claimed for a while, and a delivery that outlives its
                    # claim could be claimed and sent again by another replica.
                    raise TeamsSendError(
                        f"Teams asked to wait {wait:.0f} s ({response.status_code})",
                        retry_after=wait,
                    )
                log.info(
                    "teams.retry", status=response.status_code, attempt=attempt, wait_seconds=wait
                )
                await self._sleep(wait)
                continue
            raise TeamsSendError(
                f"Teams answered {response.status_code}: {response.text[:200]}", retry_after=asked
            )
        raise TeamsSendError(
            "Teams did not take the message"
        )  # pragma: no cover - loop always returns

    async def _wait_for_room(self, conversation_id: str) -> None:
        """Take one send from the conversation's budget and one from the app's, waiting briefly
        for room; a long wait before anything was sent postpones the whole message."""
        begun = _sent_something.get()
        wait = await self._limiter.take(
            conversation_id, max_wait=math.inf if begun else MAX_RATE_WAIT_IN_DELIVERY_SECONDS
        )
        if wait:
            raise DeliveryPostponedError(
                f"Teams' send limit for this conversation has room again in {wait:.1f} s",
                retry_after=wait,
            )
        await self._app_limiter.acquire(_APP)

    def _backoff(self, attempt: int) -> float:
        bound = min(30.0, 0.5 * 2 ** (attempt - 1))
        return self._rng.uniform(0, bound)


def _card_activity(card: cards.Card) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": cards.CONTENT_TYPE, "content": card}],
    }


def _activity_url(service_url: str, conversation_id: str, activity_id: str) -> str:
    return f"{service_url.rstrip('/')}/v3/conversations/{conversation_id}/activities/{activity_id}"


def _digest(notification: Notification) -> DriftDigest | None:
    """The drift digest a drift report carries; None (the text is sent) for anything else, or
    for a digest that cannot be read, which is logged."""
    text = notification.details.get(DIGEST_DETAIL)
    if notification.kind is not NotificationKind.DRIFT_REPORT or not text:
        return None
    try:
        return DriftDigest.from_json(text)
    except ValueError as error:
        log.warning("teams.drift_digest_unreadable", error=str(error))
        return None
