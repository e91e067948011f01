"""Understanding what people type to the bot, typos and all.

Teams delivers text with HTML-ish markup (``<at>Syncwarden</at>`` for mentions, ``&nbsp;``,
``<p>``). We strip that, correct near-miss words against a small vocabulary ("calender",
"snyc", "remvoe"), and then match on the words that carry meaning rather than on exact
sentences, so "sign me up for outlook sync" and "pls add me to the calender sync" both mean enroll.
Who a request is about comes from the mention entities (never from names in the text) or from an
email address typed in the message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from enum import StrEnum

from workflows.records import TICKET_NUMBER_OFFSET, TICKET_PREFIX

_TAG = re.compile(r"<[^>]{0,200}>")
_AT = re.compile(r"<at[^>]*>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# "SW" and what follows it as one word: a ticket number when it starts like a number. The word is
# taken whole (any script's letters and digits), so "SW-1001²" is not read as SW-1001.
_TICKET = re.compile(r"\bSW[-\s]?(\w+)", re.IGNORECASE)
# A ticket number is SW- and 1000 + the ticket's row id, a 32-bit INTEGER on PostgreSQL.
_MAX_TICKET_DIGITS = 10
_MAX_TICKET_NUMBER = TICKET_NUMBER_OFFSET + 2**31 - 1
_MAX_SHOWN = 24
_WORD = re.compile(r"[a-z]+")
MAX_TEXT = 2000


class Intent(StrEnum):
    ENROLL = "enroll"
    REMOVE = "remove"
    CHANGE = "change"
    STATUS = "status"
    HELP = "help"
    USERS = "users"
    PAUSE = "pause"
    RESUME = "resume"
    TICKETS = "tickets"
    TICKET = "ticket"
    RETRY = "retry"
    SYNC_NOW = "sync_now"
    USE_CHANNEL = "use_channel"
    USE_CHANNEL_FOR_APPROVALS = "use_channel_for_approvals"
    DOCTOR = "doctor"
    SECRETS = "secrets"
    UNKNOWN = "unknown"


ADMIN_INTENTS = frozenset(
    {
        Intent.USERS,
        Intent.PAUSE,
        Intent.RESUME,
        Intent.TICKETS,
        Intent.TICKET,
        Intent.RETRY,
        Intent.SYNC_NOW,
        Intent.USE_CHANNEL,
        Intent.USE_CHANNEL_FOR_APPROVALS,
        Intent.DOCTOR,
        Intent.SECRETS,
    }
)


@dataclass(frozen=True)
class Mention:
    """A mention entity from the activity: who was mentioned, and the text Teams shows for it."""

    user_id: str
    aad_object_id: str | None
    text: str


@dataclass(frozen=True)
class Parsed:
    intent: Intent
    # Someone else the message is about (an object id from a mention), if any.
    subject_id: str | None = None
    # An email address in the message: the subject (enroll/remove) or the new address (change).
    address: str | None = None
    # A ticket number as ``SW-1042``, only when it can be one (see :func:`ticket_ref`).
    ticket_ref: str | None = None
    # The ticket number as typed (bounded, letters and digits only), also when it cannot be one,
    # so the answer can say which number there is no ticket for.
    ticket_typed: str | None = None
    # The rest of an admin command, e.g. the person after "pause".
    argument: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.intent in ADMIN_INTENTS


_VOCABULARY = (
    "add",
    "enroll",
    "enrol",
    "sign",
    "subscribe",
    "join",
    "register",
    "want",
    "need",
    "remove",
    "unsubscribe",
    "unenroll",
    "stop",
    "leave",
    "cancel",
    "delete",
    "off",
    "change",
    "update",
    "switch",
    "address",
    "mailbox",
    "email",
    "calendar",
    "sync",
    "syncing",
    "outlook",
    "appointments",
    "status",
    "help",
    "users",
    "pause",
    "resume",
    "tickets",
    "ticket",
    "retry",
    "now",
    "channel",
    "alerts",
    "alert",
    "doctor",
    "secrets",
    "credentials",
    "use",
    "this",
)
_SYNC_WORDS = frozenset({"calendar", "sync", "syncing", "outlook", "appointments"})
_ENROLL_WORDS = frozenset(
    {"add", "enroll", "enrol", "sign", "subscribe", "join", "register", "want", "need"}
)
_REMOVE_WORDS = frozenset(
    {"remove", "unsubscribe", "unenroll", "stop", "leave", "cancel", "delete", "off"}
)
_CHANGE_WORDS = frozenset({"change", "update", "switch"})
_ADDRESS_WORDS = frozenset({"address", "mailbox", "email"})


def clean_text(text: str, bot_names: Sequence[str] = ()) -> str:
    """Message text without markup and without the bot's own @mention."""
    text = text[:MAX_TEXT]

    def keep_unless_bot(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        return "" if not bot_names or name in bot_names else f" {name} "

    text = _AT.sub(keep_unless_bot, text)
    text = _TAG.sub(" ", text)
    return " ".join(html.unescape(text).split())


def _words(text: str) -> list[str]:
    corrected = []
    for word in _WORD.findall(text.lower()):
        if len(word) >= 4 and word not in _VOCABULARY:
            close = get_close_matches(word, _VOCABULARY, n=1, cutoff=0.75)
            word = close[0] if close else word
        corrected.append(word)
    return corrected


def parse(
    text: str,
    *,
    mentions: Sequence[Mention] = (),
    bot_id: str | None = None,
    bot_names: Sequence[str] = (),
) -> Parsed:
    """What a message asks for. Never raises; anything unrecognised is ``Intent.UNKNOWN``."""
    others = [m for m in mentions if m.user_id != bot_id]
    names = [m.text for m in mentions if m.user_id == bot_id] + list(bot_names)
    cleaned = clean_text(text, names)
    for mention in others:
        cleaned = cleaned.replace(_AT.sub(r"\1", mention.text).strip(), " ")
    words = _words(cleaned)
    word_set = set(words)
    email = _first(_EMAIL.findall(cleaned))
    ticket_word = _ticket_word(cleaned)
    ticket_ref = valid_ticket_ref(ticket_word)
    ticket_typed = shown_ticket_ref(ticket_word) if ticket_word else None
    subject_id = next((m.aad_object_id or m.user_id for m in others), None)
    if not words and not email:
        return Parsed(Intent.HELP if cleaned.strip() in ("?", "") else Intent.UNKNOWN)

    admin = _admin_command(words, cleaned, ticket_ref, ticket_typed, subject_id, email)
    if admin is not None:
        return admin
    if word_set & _CHANGE_WORDS and (word_set & _ADDRESS_WORDS or email):
        return Parsed(Intent.CHANGE, address=email)
    about_sync = bool(word_set & _SYNC_WORDS)
    if about_sync and word_set & _REMOVE_WORDS:
        return Parsed(Intent.REMOVE, subject_id=subject_id, address=email)
    if about_sync and word_set & _ENROLL_WORDS:
        return Parsed(Intent.ENROLL, subject_id=subject_id, address=email)
    if "help" in word_set:
        return Parsed(Intent.HELP)
    if "status" in word_set:
        return Parsed(Intent.STATUS)
    return Parsed(Intent.UNKNOWN)


def _admin_command(
    words: list[str],
    cleaned: str,
    ticket_ref: str | None,
    ticket_typed: str | None,
    subject_id: str | None,
    email: str | None,
) -> Parsed | None:
    first = words[0] if words else ""
    rest = cleaned.split(maxsplit=1)[1].strip() if len(cleaned.split(maxsplit=1)) > 1 else None
    if words == ["users"]:
        return Parsed(Intent.USERS)
    if words == ["tickets"]:
        return Parsed(Intent.TICKETS)
    if first in ("ticket", "retry") and ticket_typed:
        intent = Intent.TICKET if first == "ticket" else Intent.RETRY
        return Parsed(intent, ticket_ref=ticket_ref, ticket_typed=ticket_typed)
    if first in ("pause", "resume") and (rest or subject_id):
        intent = Intent.PAUSE if first == "pause" else Intent.RESUME
        return Parsed(intent, subject_id=subject_id, address=email, argument=rest)
    if words[:2] == ["sync", "now"]:
        target = " ".join(cleaned.split()[2:]) or None
        return Parsed(Intent.SYNC_NOW, subject_id=subject_id, address=email, argument=target)
    if "channel" in words and first == "use":
        if "approvals" in words:
            return Parsed(Intent.USE_CHANNEL_FOR_APPROVALS)
        if {"alerts", "alert"} & set(words):
            return Parsed(Intent.USE_CHANNEL)
    if words == ["doctor"]:
        return Parsed(Intent.DOCTOR)
    if words in (["secrets"], ["credentials"]):
        return Parsed(Intent.SECRETS)
    return None


def _ticket_word(text: str) -> str | None:
    """The first "SW-…" in the text whose number part starts like a number (in any script)."""
    for match in _TICKET.finditer(text):
        word = match.group(1)
        if word[0].isnumeric():
            return f"{TICKET_PREFIX}{word}"
    return None


def valid_ticket_ref(text: object) -> str | None:
    """``SW-1042`` for a ticket number as typed or sent on a card, or None when it cannot be one.

    Case, surrounding spaces and a space for the dash are forgiven. The number must be ASCII
    digits (``str.isdecimal`` alone would take "١٠٤٢"; ``int`` would take "1042²" as an error and
    a hundred digits as a number no database column holds), at most 10 of them, and name a row id
    that fits the tickets table. Nothing here raises, whatever it is given.
    """
    if not isinstance(text, str) or len(text) > len(TICKET_PREFIX) + _MAX_TICKET_DIGITS + 8:
        return None
    cleaned = text.strip().upper()
    if not cleaned.startswith(TICKET_PREFIX[:-1]):
        return None
    number = cleaned[len(TICKET_PREFIX) - 1 :]
    if number[:1] in ("-", " "):
        number = number[1:]
    if not (0 < len(number) <= _MAX_TICKET_DIGITS and number.isascii() and number.isdecimal()):
        return None
    value = int(number)
    if not TICKET_NUMBER_OFFSET < value <= _MAX_TICKET_NUMBER:
        return None
    return f"{TICKET_PREFIX}{value}"


def shown_ticket_ref(text: str) -> str:
    """A ticket number as someone gave it, safe to repeat to them: short, and letters, digits
    and dashes only (anything else, markup, control characters, lone surrogates, becomes "?")."""
    shown = "".join(c if c.isalnum() or c == "-" else "?" for c in text[:_MAX_SHOWN].strip())
    return shown.upper() + ("…" if len(text) > _MAX_SHOWN else "")


def _first(items: Sequence[str]) -> str | None:
    return items[0] if items else None
