"""Stored conversation references: found by person or by channel role, refreshed, forgotten."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.conversations import ChannelRole, ConversationKind, ConversationRef, ConversationStore
from core.db import session_factory

ADA = "0A0A0A0A-0000-4000-8000-00000000000A"


def personal(
    conversation_id: str, service_url: str = "https://smba.example/emea/"
) -> ConversationRef:
    return ConversationRef(
        conversation_id, ConversationKind.PERSONAL, service_url, "tenant-1", "28:bot", ADA
    )


def channel(conversation_id: str) -> ConversationRef:
    return ConversationRef(
        conversation_id,
        ConversationKind.CHANNEL,
        "https://smba.example/emea/",
        "tenant-1",
        "28:bot",
    )


async def test_personal_chat_is_found_by_object_id_in_any_case(
    migrated_engine: AsyncEngine,
) -> None:
    store = ConversationStore(session_factory(migrated_engine))
    await store.remember(personal("a:1"))
    await store.remember(personal("a:1", service_url="https://smba.example/amer/"))
    found = await store.for_user(ADA.lower())
    assert found is not None
    assert (found.conversation_id, found.service_url) == ("a:1", "https://smba.example/amer/")
    assert await store.for_user("someone-else") is None


async def test_one_channel_per_role(migrated_engine: AsyncEngine) -> None:
    store = ConversationStore(session_factory(migrated_engine))
    assert await store.for_role(ChannelRole.IT) is None
    await store.remember(channel("19:first@thread.tacv2"))
    await store.remember(channel("19:second@thread.tacv2"))
    assert await store.assign_role("19:first@thread.tacv2", ChannelRole.IT)
    assert await store.assign_role("19:second@thread.tacv2", ChannelRole.IT)
    it = await store.for_role(ChannelRole.IT)
    assert it is not None and it.conversation_id == "19:second@thread.tacv2"
    assert not await store.assign_role("19:unknown@thread.tacv2", ChannelRole.APPROVALS)


async def test_uninstall_and_block(migrated_engine: AsyncEngine) -> None:
    store = ConversationStore(session_factory(migrated_engine))
    await store.remember(personal("a:2"))
    await store.mark_blocked("a:2")
    blocked = await store.for_user(ADA)
    assert blocked is not None and blocked.blocked
    await store.remember(personal("a:2"))
    unblocked = await store.for_user(ADA)
    assert unblocked is not None and not unblocked.blocked, "writing to us again means not blocked"
    await store.forget("a:2")
    assert await store.for_user(ADA) is None
