"""What people type to the bot, with the typos and markup Teams delivers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.intents import Intent, Mention, clean_text, parse

BOT = Mention("28:bot-id", None, "<at>Syncwarden</at>")
ADA = Mention("29:ada", "0a0a0a0a-0000-4000-8000-00000000000a", "<at>Ada Byron</at>")


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("add me to calendar sync", Intent.ENROLL),
        ("sign me up for outlook sync", Intent.ENROLL),
        ("Please add me to the calendar sync!", Intent.ENROLL),
        ("pls add me to calender snyc", Intent.ENROLL),
        ("I want my appointments synced to outlook", Intent.ENROLL),
        ("remove me from calendar sync", Intent.REMOVE),
        ("stop syncing my calendar", Intent.REMOVE),
        ("unsubscribe me from outlook sync", Intent.REMOVE),
        ("remvoe me from calendar sycn", Intent.REMOVE),
        ("status", Intent.STATUS),
        ("what's my status?", Intent.STATUS),
        ("help", Intent.HELP),
        ("?", Intent.HELP),
        ("hello there", Intent.UNKNOWN),
        ("users", Intent.USERS),
        ("tickets", Intent.TICKETS),
        ("doctor", Intent.DOCTOR),
        ("secrets", Intent.SECRETS),
        ("use this channel for alerts", Intent.USE_CHANNEL),
        ("use this channel for approvals", Intent.USE_CHANNEL_FOR_APPROVALS),
        ("", Intent.HELP),
        ("ada.byron@example.edu", Intent.UNKNOWN),
        ("what can you do? help", Intent.HELP),
    ],
)
def test_phrasings(text: str, intent: Intent) -> None:
    assert parse(text).intent is intent


def test_change_address_carries_the_new_address() -> None:
    parsed = parse("change my sync address to Ada.Byron@example.org")
    assert (parsed.intent, parsed.address) == (Intent.CHANGE, "Ada.Byron@example.org")


def test_bot_mention_is_stripped_before_parsing() -> None:
    parsed = parse(
        "<at>Syncwarden</at> add me to calendar sync", mentions=[BOT], bot_id=BOT.user_id
    )
    assert parsed == parse("add me to calendar sync")


def test_on_behalf_by_mention_uses_the_object_id_never_the_name() -> None:
    text = "<at>Syncwarden</at> add <at>Ada Byron</at> to calendar sync"
    parsed = parse(text, mentions=[BOT, ADA], bot_id=BOT.user_id)
    assert parsed.intent is Intent.ENROLL
    assert parsed.subject_id == ADA.aad_object_id


def test_on_behalf_by_address() -> None:
    parsed = parse("add grace.hopper@example.edu to calendar sync")
    assert (parsed.intent, parsed.address, parsed.subject_id) == (
        Intent.ENROLL,
        "grace.hopper@example.edu",
        None,
    )


@pytest.mark.parametrize(
    ("text", "intent", "ref"),
    [
        ("ticket SW-1042", Intent.TICKET, "SW-1042"),
        ("retry sw 1043", Intent.RETRY, "SW-1043"),
        ("ticket sw-1044.", Intent.TICKET, "SW-1044"),
    ],
)
def test_ticket_commands(text: str, intent: Intent, ref: str) -> None:
    parsed = parse(text)
    assert (parsed.intent, parsed.ticket_ref) == (intent, ref)
    assert parsed.is_admin


def test_pause_and_resume_name_a_person() -> None:
    paused = parse("pause ada.byron@example.edu")
    assert (paused.intent, paused.address) == (Intent.PAUSE, "ada.byron@example.edu")
    resumed = parse("resume <at>Ada Byron</at>", mentions=[ADA])
    assert (resumed.intent, resumed.subject_id) == (Intent.RESUME, ADA.aad_object_id)


def test_sync_now_for_all_or_one() -> None:
    assert parse("sync now all").argument == "all"
    assert parse("sync now").intent is Intent.SYNC_NOW


def test_markup_and_entities_are_cleaned() -> None:
    assert clean_text("<p>add&nbsp;me to <b>calendar</b> sync</p>") == "add me to calendar sync"


def misspell(phrase: str, rng: random.Random) -> str:
    words = phrase.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 6]
    if not long_words:
        return phrase
    i = rng.choice(long_words)
    word = list(words[i])
    j = rng.randrange(1, len(word) - 1)
    word[j], word[j + 1] = word[j + 1], word[j]  # swap two neighbouring letters
    words[i] = "".join(word)
    return " ".join(words)


@given(st.integers(min_value=0, max_value=10_000))
def test_one_transposition_does_not_change_the_meaning(seed: int) -> None:
    rng = random.Random(seed)
    for phrase, intent in [
        ("add me to calendar sync", Intent.ENROLL),
        ("remove me from calendar sync", Intent.REMOVE),
        ("sign me up for outlook sync", Intent.ENROLL),
    ]:
        assert parse(misspell(phrase, rng)).intent is intent


@given(st.text(max_size=300))
def test_any_text_gets_an_answer(text: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed.intent, Intent)


@given(st.text(alphabet=st.sampled_from(list("<>at/ &;#x0123abc")), max_size=200))
def test_markup_soup_never_raises(text: str) -> None:
    parse(text, mentions=[BOT, ADA], bot_id=BOT.user_id)
