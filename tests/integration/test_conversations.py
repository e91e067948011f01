"""Stored conversation references: found by person or by channel role, refreshed, forgotten."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import (
    CONFIRMED_FOR,
    CONFIRMED_LIMIT,
    REFRESH_AFTER,
    ChannelRole,
    ConversationKind,
    ConversationRecord,
    ConversationRef,
    ConversationStore,
)
from syncwarden.core.db import session_factory
from tests.support.statements import recorded_statements

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


async def test_one_channel_can_hold_both_roles(migrated_engine: AsyncEngine) -> None:
    """A small college runs IT and approvals in one channel: naming it for approvals must not
    take away its alerts."""
    store = ConversationStore(session_factory(migrated_engine))
    await store.remember(channel("19:it@thread.tacv2"))
    assert await store.assign_role("19:it@thread.tacv2", ChannelRole.IT)
    assert await store.assign_role("19:it@thread.tacv2", ChannelRole.APPROVALS)
    it = await store.for_role(ChannelRole.IT)
    approvals = await store.for_role(ChannelRole.APPROVALS)
    assert it is not None and approvals is not None
    assert it.conversation_id == approvals.conversation_id == "19:it@thread.tacv2"


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


async def test_a_new_chat_remembered_by_many_turns_at_once_is_one_row_with_the_latest_values(
    migrated_engine: AsyncEngine,
) -> None:
    """Two activities arriving together for a new chat both store its reference: an upsert, so
    neither turn fails on the primary key (PostgreSQL's row lock cannot lock a row not yet there).
    """
    sessions = session_factory(migrated_engine)
    store = ConversationStore(sessions)
    variants = [
        ConversationRef(
            "a:new-chat",
            ConversationKind.PERSONAL,
            f"https://smba.example/region-{n}/",
            "tenant-1",
            f"28:bot-{n}",
            ADA if n % 2 else None,
            f"29:ada-{n}" if n % 2 else None,
        )
        for n in range(24)
    ]
    await asyncio.gather(*(store.remember(ref) for ref in variants))

    async with sessions() as session:
        rows = (
            await session.scalars(
                select(ConversationRecord).where(ConversationRecord.conversation_id == "a:new-chat")
            )
        ).all()
    assert len(rows) == 1
    [row] = rows
    # One turn's values, not a mixture; the person's ids survive turns that carried none.
    region = row.service_url.removeprefix("https://smba.example/region-").rstrip("/")
    assert row.bot_id == f"28:bot-{region}"
    assert row.user_aad_id == ADA.lower()
    assert row.user_mri is not None and row.user_mri.startswith("29:ada-")
    assert row.installed and not row.blocked

    # The latest turn wins, the tenant and person stay when a turn does not name them.
    await store.mark_blocked("a:new-chat")
    latest = ConversationRef(
        "a:new-chat", ConversationKind.PERSONAL, "https://smba.example/latest/", None, "28:bot"
    )
    await store.remember(latest)
    found = await store.for_user(ADA)
    assert found is not None
    assert (found.service_url, found.bot_id, found.tenant_id, found.blocked) == (
        "https://smba.example/latest/",
        "28:bot",
        "tenant-1",
        False,
    )
    assert found.user_mri is not None and found.user_mri.startswith("29:ada-")


async def test_remembering_keeps_the_role_and_refreshes_the_time(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    store = ConversationStore(sessions)
    await store.remember(channel("19:it@thread.tacv2"))
    assert await store.assign_role("19:it@thread.tacv2", ChannelRole.IT)
    async with sessions() as session:
        first = await session.get(ConversationRecord, "19:it@thread.tacv2")
        assert first is not None
        stamped = first.updated_at
    await store.forget("19:it@thread.tacv2")
    assert await store.for_role(ChannelRole.IT) is None
    await store.remember(channel("19:it@thread.tacv2"))
    it = await store.for_role(ChannelRole.IT)
    assert it is not None and it.conversation_id == "19:it@thread.tacv2", "reinstalled, same role"
    async with sessions() as session:
        again = await session.get(ConversationRecord, "19:it@thread.tacv2")
        assert again is not None and again.updated_at >= stamped


async def test_a_turn_that_would_change_nothing_writes_nothing(
    migrated_engine: AsyncEngine,
) -> None:
    """Nearly every turn comes from a conversation whose reference is stored as it is: reading
    it is enough, and no turn queues behind another's write for nothing."""
    sessions = session_factory(migrated_engine)
    store = ConversationStore(sessions)
    await store.remember(personal("a:3"))
    unnamed = replace(personal("a:3"), tenant_id=None, user_aad_id=None, user_mri=None)
    with recorded_statements(migrated_engine) as seen:
        await ConversationStore(sessions).remember(personal("a:3"))  # another process
        await store.remember(unnamed)  # a turn that names no tenant or person keeps them
    assert seen.writes == []
    assert len(seen.transactions) == 2, "one read each"

    with recorded_statements(migrated_engine) as seen:
        await store.remember(personal("a:3", service_url="https://smba.example/amer/"))
        await store.remember(replace(personal("a:3"), bot_id="28:other-bot"))
        await store.remember(replace(personal("a:3"), tenant_id="tenant-2"))
        await store.remember(replace(personal("a:3"), user_mri="29:ada"))
    assert len(seen.writes) == 4, "each turn changed the reference"
    async with sessions() as session:
        row = await session.get(ConversationRecord, "a:3")
    assert row is not None
    assert (row.service_url, row.bot_id, row.tenant_id, row.user_mri) == (
        "https://smba.example/emea/",
        "28:bot",
        "tenant-1",
        "29:ada",
    ), "the last turn's reference"


async def test_an_unchanged_reference_is_still_refreshed_hourly(
    migrated_engine: AsyncEngine,
) -> None:
    """``updated_at`` keeps telling which conversations are in use (the newest is the one
    ``for_user`` and ``latest`` choose), to the hour."""
    sessions = session_factory(migrated_engine)
    now = [datetime(2026, 12, 2, 9, 0, tzinfo=UTC)]
    store = ConversationStore(sessions, clock=lambda: now[0])

    async def stamped() -> datetime:
        async with sessions() as session:
            row = await session.get(ConversationRecord, "a:4")
            assert row is not None
            return row.updated_at

    await store.remember(personal("a:4"))
    now[0] += REFRESH_AFTER - timedelta(minutes=1)
    await store.remember(personal("a:4"))
    assert await stamped() == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    now[0] += timedelta(minutes=1)
    await store.remember(personal("a:4"))
    assert await stamped() == now[0]


async def test_a_reference_confirmed_a_moment_ago_is_not_read_again(
    migrated_engine: AsyncEngine,
) -> None:
    """The turns of a conversation in use cost no statement for its reference; after a minute,
    or once this process changed the row itself, it is read again."""
    sessions = session_factory(migrated_engine)
    now = [datetime(2026, 12, 3, 9, 0, tzinfo=UTC)]
    store = ConversationStore(sessions, clock=lambda: now[0])
    await store.remember(personal("a:5"))
    with recorded_statements(migrated_engine) as seen:
        await store.remember(personal("a:5"))
        now[0] += CONFIRMED_FOR - timedelta(seconds=1)
        await store.remember(personal("a:5"))
    assert seen.transactions == [], "confirmed a moment ago: nothing read"

    with recorded_statements(migrated_engine) as seen:
        await store.remember(personal("a:5", service_url="https://smba.example/amer/"))
    assert len(seen.writes) == 1, "another reference is read and written at once"

    now[0] += CONFIRMED_FOR
    with recorded_statements(migrated_engine) as seen:
        await store.remember(personal("a:5", service_url="https://smba.example/amer/"))
    assert len(seen.transactions) == 1 and seen.writes == [], "a minute on: read again"

    await store.mark_blocked("a:5")
    await store.remember(personal("a:5", service_url="https://smba.example/amer/"))
    unblocked = await store.for_user(ADA)
    assert unblocked is not None and not unblocked.blocked, "its own change is not trusted away"


async def test_an_installation_reads_the_reference_even_when_just_confirmed(
    migrated_engine: AsyncEngine,
) -> None:
    """Another replica may have marked the chat uninstalled a moment ago; the app being added
    again must store it as installed."""
    sessions = session_factory(migrated_engine)
    store = ConversationStore(sessions)
    await store.remember(personal("a:6"))
    await ConversationStore(sessions).forget("a:6")  # the other replica
    await store.remember(personal("a:6"))
    assert await store.for_user(ADA) is None, "within the minute, this process trusts itself"
    await store.remember(personal("a:6"), installed=True)
    assert await store.for_user(ADA) is not None


async def test_the_confirmed_references_held_are_bounded(migrated_engine: AsyncEngine) -> None:
    store = ConversationStore(session_factory(migrated_engine))
    for number in range(CONFIRMED_LIMIT + 3):
        store._confirm(personal(f"a:{number}"), datetime(2026, 12, 3, tzinfo=UTC))
    assert len(store._confirmed) == CONFIRMED_LIMIT
    assert "a:0" not in store._confirmed and f"a:{CONFIRMED_LIMIT + 2}" in store._confirmed
