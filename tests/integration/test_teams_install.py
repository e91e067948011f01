"""Nobody is left out: people with no chat with the bot get its app installed for them.

The delivery runs as production wires it (``build_teams_delivery`` with the Microsoft 365
connectors) against the sandbox tenant's Graph, on both databases; a local recorder stands in for
the Bot Framework connector, at the service URL of the IT channel's stored reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.connectors.graph.teamwork import INSTALL_PERMISSION
from syncwarden.core.db import session_factory
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.seed import GRAPH_RESOURCE
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflow_wiring import build_teams_delivery
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.outbox import OutboxMessage, OutboxNotifier
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import Notification, NotificationKind
from tests.support.m365 import SYNCWARDEN_APP, M365Factory, sandbox_settings
from tests.support.recorder import ConnectorRecorder
from tests.support.tickets import sample_ticket

CASEY = "d7dd6da8-9922-4e7b-a3f4-e479fb95fd01"  # an approver who never opened Syncwarden
BOT_APP = "Syncwarden Bot"
IT_CHANNEL = "19:it@thread.tacv2"
WAITING = dataclasses.replace(sample_ticket(), status="awaiting_approval", decisions=(), version=1)
ASK = Notification(NotificationKind.APPROVAL_REQUESTED, WAITING, "asks", {"approvers": CASEY})


@dataclasses.dataclass
class Delivery:
    outbox: OutboxNotifier
    dispatcher: OutboxDispatcher
    conversations: ConversationStore


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@pytest.fixture
async def deliver(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    m365_factory: M365Factory,
    recorder: ConnectorRecorder,
) -> AsyncIterator[Callable[[], Awaitable[Delivery]]]:
    """Build the delivery (after the test has changed the tenant: tokens are cached)."""
    sessions = session_factory(migrated_engine)
    async with httpx.AsyncClient() as http:

        async def build() -> Delivery:
            settings = sandbox_settings(
                tenant,
                bot={
                    "app_id": tenant.seed.app_ids[BOT_APP],
                    "tenant_id": tenant.tenant_id,
                    "client_secret": tenant.seed.secret_for(BOT_APP),
                },
            )
            m365: Microsoft365 = await m365_factory()
            dispatcher, conversations = build_teams_delivery(settings, sessions, http, m365=m365)
            # The bot is in the IT team: the only conversation it knows, and so where Teams'
            # service URL and the bot's id come from.
            await conversations.remember(
                ConversationRef(
                    IT_CHANNEL, ConversationKind.CHANNEL, recorder.url, tenant.tenant_id, "28:bot"
                )
            )
            await conversations.assign_role(IT_CHANNEL, ChannelRole.IT)
            return Delivery(OutboxNotifier(sessions), dispatcher, conversations)

        yield build


def installations(tenant: SandboxTenant, user_id: str) -> list[str]:
    return [i.chat_id for i in tenant.state.teams_installations.get(user_id, [])]


async def test_an_approver_with_no_chat_gets_the_card_once_the_app_is_installed(
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    deliver: Callable[[], Awaitable[Delivery]],
) -> None:
    delivery = await deliver()
    assert await delivery.conversations.for_user(CASEY) is None

    await delivery.outbox.to_user(CASEY, ASK, key="ask")
    assert await delivery.dispatcher.dispatch_due() == 1

    [chat_id] = installations(tenant, CASEY)
    [sent] = recorder.requests
    assert (sent.method, sent.path) == ("POST", f"/v3/conversations/{chat_id}/activities")
    card = sent.body["attachments"][0]["content"]
    assert [a["verb"] for a in card["actions"]] == ["approve", "reject"]
    assert sent.body["from"] == {"id": "28:bot"}
    ref = await delivery.conversations.for_user(CASEY)
    assert ref is not None and ref.conversation_id == chat_id
    assert ref.kind is ConversationKind.PERSONAL and ref.service_url == recorder.url


async def test_installing_twice_is_one_installation_and_one_chat(
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    deliver: Callable[[], Awaitable[Delivery]],
) -> None:
    """The second message finds the stored chat; after the chat is forgotten (the app removed
    in Teams, say) a third installs again, finds the installation there, and reuses it."""
    delivery = await deliver()
    text = Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "hello")
    await delivery.outbox.to_user(CASEY, text, key="one")
    await delivery.outbox.to_user(CASEY, text, key="two")
    assert await delivery.dispatcher.dispatch_due() == 2
    [chat_id] = installations(tenant, CASEY)
    await delivery.conversations.forget(chat_id)

    await delivery.outbox.to_user(CASEY, text, key="three")
    assert await delivery.dispatcher.dispatch_due() == 1

    assert installations(tenant, CASEY) == [chat_id]
    assert [r.path for r in recorder.requests] == [f"/v3/conversations/{chat_id}/activities"] * 3
    posts = [
        r
        for r in tenant.requests
        if r.method == "POST" and r.path.endswith("/teamwork/installedApps")
    ]
    assert len(posts) == 1, "an installation found is not installed again"


async def test_without_the_permission_the_message_is_given_up_and_it_is_told_why(
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    migrated_engine: AsyncEngine,
    deliver: Callable[[], Awaitable[Delivery]],
) -> None:
    tenant.revoke_role(tenant.seed.app_ids[SYNCWARDEN_APP], GRAPH_RESOURCE, INSTALL_PERMISSION)
    delivery = await deliver()

    await delivery.outbox.to_user(CASEY, ASK, key="ask")
    assert await delivery.dispatcher.dispatch_due() == 1, "only IT hears, of the failure"

    assert installations(tenant, CASEY) == []
    [told] = recorder.requests
    assert told.path == f"/v3/conversations/{IT_CHANNEL}/activities"
    assert CASEY in told.body["text"] and INSTALL_PERMISSION in told.body["text"]
    assert "admin consent" in told.body["text"]
    async with session_factory(migrated_engine)() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key == "ask"))
        assert row is not None and row.state == "failed" and row.attempts == 1
        audit = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "notification_undeliverable")
        )
    assert audit is not None and audit.ticket_ref == WAITING.ref
    assert audit.after is not None and INSTALL_PERMISSION in audit.after["error"]


async def test_an_app_missing_from_the_catalog_is_named_with_how_to_upload_it(
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    deliver: Callable[[], Awaitable[Delivery]],
) -> None:
    tenant.state.teams_apps.clear()
    delivery = await deliver()

    await delivery.outbox.to_user(CASEY, ASK, key="ask")
    assert await delivery.dispatcher.dispatch_due() == 1

    [told] = recorder.requests
    assert "not in your organisation's app catalog" in told.body["text"]
    assert "Upload new app" in told.body["text"]


async def test_a_person_without_a_teams_licence_is_named_with_the_licence_to_assign(
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    deliver: Callable[[], Awaitable[Delivery]],
) -> None:
    tenant.state.users[CASEY].has_teams = False
    delivery = await deliver()

    await delivery.outbox.to_user(CASEY, ASK, key="ask")
    assert await delivery.dispatcher.dispatch_due() == 1

    [told] = recorder.requests
    assert "Teams licence" in told.body["text"]
    assert INSTALL_PERMISSION not in told.body["text"]
