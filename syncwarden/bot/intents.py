"""Understanding what people type to the bot, typos and all.

Teams delivers text with HTML-ish markup (``<at>Syncwarden</at>`` for mentions, ``&nbsp;``,
``<p>``). We strip that, split the message into clauses and words ("don't" becomes "do not", "I'd"
"I would"), correct near-miss words against the vocabulary below ("calender", "snyc", "remvoe"),
and then read the message the way a person would, in this order:

1. A ticket number ("SW-1042") makes it about that ticket: retry it when asked to, else show it.
2. An admin command, when the whole message is one ("users", "any open tickets?", "run a health
   check", "pause ada@…", "sync everyone now"). They are matched whole, so "I need to pause for a
   minute" and "the doctor is in" are not commands.
3. A request: a verb that asks for something (add, sign up, turn on, take off, stop, change …), in
   a clause that is not a question ("did you add me?" asks about the past) and not negated ("don't
   add me" asks for nothing), about the sync service. Change needs an address or a mailbox; a
   removal verb beats an enrolment verb ("I want to leave calendar sync").
4. Anything else is answered, never acted on: about the sender's own sync or request, status;
   about the bot or the service, help; the rest, unknown (which the dialogue answers with help).

"About the sync service" is what keeps calendar talk from opening requests: "add a meeting to my
calendar" and "cancel my appointment" are not about calendar sync. A message is about the service
when it names sync as a thing ("calendar sync", "sign me up for sync", "stop syncing") or puts the
calendar and Outlook together ("I'd like my appointments to show up in Outlook").

Who a request is about comes from the mention entities (never from names in the text) or from an
email address typed in the message. The phrasings this is measured on, with the rules for what
each should mean, are in ``tests/fixtures/phrasings.tsv``: add a line there for every fix.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise
from typing import Literal

from syncwarden.bot.list_filters import parse_tickets_filter, parse_users_filter
from syncwarden.workflows.paging import TicketsFilter, UsersFilter
from syncwarden.workflows.records import TICKET_NUMBER_OFFSET, TICKET_PREFIX

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
MAX_TEXT = 2000
_PERSON = "<person>"  # the word the rules see for an email address or a mentioned person


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
    REVIEW_START = "review_start"
    RECONCILE = "reconcile"
    UNKNOWN = "unknown"


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
    # What ``users`` or ``tickets`` is narrowed to ("users failing"); None for the whole list.
    listing: UsersFilter | TicketsFilter | None = None


# --- Vocabulary --------------------------------------------------------------------------------
# Grouped by the part each word plays in the rules below. The words that carry a command are also
# targets for typo correction (_TYPO_TARGETS), so a misspelt "unsubscibe" still plays its part.

_E, _R, _C = Intent.ENROLL, Intent.REMOVE, Intent.CHANGE
# Verbs that ask for something, by what they ask for ("set" and "switch" alone change the address;
# with a particle they are in _PHRASAL).
_VERBS: dict[str, Intent] = {
    **dict.fromkeys(
        ("add", "enroll", "enrol", "subscribe", "join", "register", "enable", "activate", "start",
         "connect", "include", "give", "put", "get", "request", "setup", "signup", "onboard"),
        _E,
    ),
    **dict.fromkeys(
        ("remove", "unsubscribe", "unenroll", "unenrol", "stop", "leave", "cancel", "delete",
         "disable", "deactivate", "end", "quit", "drop", "disconnect", "exclude", "offboard"),
        _R,
    ),
    **dict.fromkeys(
        ("change", "update", "switch", "move", "modify", "edit", "correct", "point", "set", "use"),
        _C,
    ),
}  # fmt: skip
# Phrasal verbs; the particle may come after the object ("turn calendar sync off").
_PHRASAL: dict[tuple[str, str], Intent] = {
    ("sign", "up"): _E,
    ("set", "up"): _E,
    ("hook", "up"): _E,
    ("turn", "on"): _E,
    ("switch", "on"): _E,
    ("opt", "in"): _E,
    ("get", "on"): _E,
    ("turn", "off"): _R,
    ("switch", "off"): _R,
    ("take", "off"): _R,
    ("get", "off"): _R,
    ("opt", "out"): _R,
    ("get", "rid"): _R,
    ("take", "out"): _R,
}
_PARTICLE_REACH = 4
# Past participles: a request after "be" or "get" ("I'd like to be added"), else a fact ("Ada
# added me", "have I been removed?") that asks for nothing.
_PARTICIPLES = {
    "added": "add", "enrolled": "enroll", "subscribed": "subscribe", "registered": "register",
    "enabled": "enable", "activated": "activate", "connected": "connect", "included": "include",
    "signed": "sign", "hooked": "hook", "turned": "turn", "switched": "switch", "opted": "opt",
    "taken": "take", "removed": "remove", "unsubscribed": "unsubscribe",
    "unenrolled": "unenroll", "stopped": "stop", "cancelled": "cancel", "canceled": "cancel",
    "deleted": "delete", "disabled": "disable", "deactivated": "deactivate", "dropped": "drop",
    "changed": "change", "updated": "update", "moved": "move", "synced": "sync",
}  # fmt: skip
# "-ing" forms ask only after "would you mind" / "how about"; "thanks for adding me" does not.
_GERUNDS = {
    "adding": "add", "enrolling": "enroll", "signing": "sign", "setting": "set",
    "turning": "turn", "putting": "put", "removing": "remove", "taking": "take",
    "stopping": "stop", "changing": "change", "switching": "switch", "updating": "update",
}  # fmt: skip
_PARTICLES = frozenset(particle for _, particle in _PHRASAL)
# Verbs that ask only with a particle or in a certain shape (see _asked_for).
_OTHER_VERBS = frozenset({"sign", "hook", "turn", "opt", "take", "sync", "have", "ask"})
# Wishes ask for their object ("I need calendar sync"); "like", "love" and "appreciate" only
# after "would" ("I'd really like …"). "I want off/out" wishes to leave.
_WISHES = frozenset({"want", "wants", "need", "needs", "wish", "like", "love", "appreciate"})
_WOULD_WISHES = frozenset({"like", "love", "appreciate"})
# A determiner and then one of _EVENTS make a verb's object one event, not the service: "add a
# meeting to my outlook calendar", "cancel my appointment".
_DETERMINERS = frozenset(
    {"a", "an", "the", "this", "that", "any", "my", "your", "our", "his", "her", "their", "its",
     "some", "no", "each", "every"}
)  # fmt: skip
_EVENTS = frozenset(
    {"meeting", "meetings", "appointment", "event", "invite", "invitation", "call", "reminder",
     "booking", "session", "entry", "lesson", "class", "room"}
)  # fmt: skip
_NEGATORS = frozenset({"not", "never"})
_NEGATION_REACH = 4

# What the service is about (see the module docstring).
_SYNC_WORDS = frozenset(
    {"sync", "syncs", "synced", "syncing", "synchronise", "synchronize", "synchronisation",
     "synchronization", "synchronising", "synchronizing"}
)  # fmt: skip
_CALENDARS = frozenset({"calendar", "calendars", "appointments", "schedule", "diary"})
# "sync" after one of these is the service ("sign me up for sync"), not a meeting ("can we sync").
_SYNC_AS_A_THING = frozenset(
    {"for", "to", "from", "of", "off", "on", "in", "into", "with", "the", "my", "our", "your",
     "this", "stop", "start", "calendar", "outlook"}
)  # fmt: skip
_ADDRESS_WORDS = frozenset({"address", "mailbox", "email", "mail", "inbox"})
# With an address word, these ask to change it: "my new sync address is …", "wrong address".
_CHANGE_HINTS = frozenset({"new", "wrong", "different", "other", "instead"})

# How a clause opens decides whether it asks a question.
_QUESTION_WORDS = frozenset({"what", "who", "when", "where", "why", "which", "how", "whose"})
_AUXILIARIES = frozenset(
    {"is", "am", "are", "was", "were", "do", "does", "did", "has", "have", "had", "should"}
)
_MODALS = frozenset({"can", "could", "would", "will", "may", "might", "shall"})
# Polite requests that open like questions.
_POLITE_OPENINGS = (
    ("is", "it", "possible"),
    ("is", "there", "a", "way"),
    ("is", "there", "any", "way"),
    ("would", "it", "be", "possible"),
    ("do", "you", "mind"),
    ("how", "about"),
)
_FILLERS = frozenset(
    {"hi", "hello", "hey", "hiya", "yo", "dear", "ok", "okay", "so", "well", "um", "uh", "hmm",
     "oh", "yes", "yeah", "yep", "sure", "please", "pls", "plz", "kindly", "also", "and", "just",
     "then", "good", "morning", "afternoon", "evening", "sorry"}
)  # fmt: skip
_FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "we", "us", "our"})
_THE_SENDER = frozenset({"me", "my", "us", "our", "myself", _PERSON})
_STATUS_WORDS = frozenset({"status", "state"})
# With the sender's own "my"/"I", these make a question or a complaint about their sync.
_STATUS_CONTEXT = frozenset(
    {"request", "requests", "enrolled", "enrollment", "enrolment", "removal", "approved",
     "approval", "approve", "pending", "added", "removed", "subscribed", "ticket", "progress",
     "rejected", "decided", "processed"}
)  # fmt: skip
_PROBLEMS = frozenset(
    {"not", "never", "broken", "stopped", "missing", "wrong", "failed", "failing", "fails",
     "error", "errors", "problem", "problems", "issue", "issues", "empty", "yet", "still",
     "disappeared", "gone", "duplicate", "duplicated", "nothing", "working"}
)  # fmt: skip
_HELP_WORDS = frozenset({"help", "commands", "command", "options", "menu"})
_ABOUT_THE_BOT = re.compile(
    r"\b(?:(?:who|what) (?:are|is) (?:you|syncwarden|this bot|the bot)"
    r"|what (?:can|do|does) (?:you|syncwarden|this bot|the bot|it) do"
    r"|what can i (?:say|ask|do)"
    r"|how (?:do|does) (?:you|it|this|syncwarden|this bot|the bot) work"
    r"|how (?:do|can) (?:i|we) use (?:you|it|this|syncwarden|this bot|the bot))\b"
)
# About the service, "how do I …", "tell me about …": asking how, not asking for it.
_HOW_TO = re.compile(
    r"\b(?:how (?:do|does|can|could|should|would|to)|tell me (?:more )?about|explain"
    r"|what (?:do|should) (?:i|we) (?:need to |have to )?do"
    r"|information|info)\b"
)
# Gratitude, not a request: "thanks for the help".
_THANKS_FOR_HELP = re.compile(r"\b(?:the|your|all) help\b")
# Turning the offer down: "no thanks", "I'm not interested".
_DECLINES = re.compile(r"\b(?:no thanks|no thank you|not interested)\b")
# A message that only names the service: "calendar sync please" asks for it, "calendar sync?"
# asks what it is.
_BARE = frozenset(
    {"calendar", "outlook", "sync", "syncing", "appointments", "the", "my", "for", "me", "a",
     "please", "pls", "plz"}
)  # fmt: skip
_PLEASE = frozenset({"please", "pls", "plz"})

# Admin commands, matched against the whole message without its greeting and "please".
_OPENINGS = (
    ("can", "you"),
    ("could", "you"),
    ("would", "you"),
    ("will", "you"),
    ("can", "u"),
    ("i", "want", "to"),
    ("i", "would", "like", "to"),
    ("i", "need", "to"),
    ("go", "ahead", "and"),
    ("syncwarden",),
    ("bot",),
)
_CLOSINGS = frozenset({"please", "pls", "plz", "thanks", "thx", "ty", "cheers"})
_ADMIN_PHRASES: tuple[tuple[Intent, re.Pattern[str]], ...] = tuple(
    (intent, re.compile(pattern))
    for intent, pattern in (
        (
            Intent.USERS,
            r"(?:(?:list|show|see|view|display) )?(?:me )?(?:all )?(?:the )?(?:enrolled )?"
            r"(?:users|enrollments|enrolments)(?: enrolled)?",
        ),
        (
            Intent.USERS,
            r"(?:list|show)(?: me)? (?:everyone|everybody|people)(?: who is| who are)?"
            r"(?: enrolled)?(?: (?:on|in|using)(?: calendar| outlook)* sync)?",
        ),
        (
            Intent.USERS,
            r"who(?: is| are)? (?:enrolled|subscribed|syncing)"
            r"(?: (?:in|on|for|to)(?: calendar| outlook)* sync)?",
        ),
        (
            Intent.USERS,
            r"who (?:is |are |has |uses |have )(?:on |in |using )?(?:calendar |outlook )*sync",
        ),
        (
            Intent.TICKETS,
            r"(?:(?:list|show|see|view) )?(?:me )?(?:all )?(?:the )?(?:open |pending |waiting )?"
            r"tickets",
        ),
        (
            Intent.TICKETS,
            r"(?:(?:are|is) there )?any (?:open |pending |waiting )?(?:tickets|requests)"
            r"(?: open| pending| waiting)?",
        ),
        (
            Intent.TICKETS,
            r"(?:what|which) (?:tickets|requests) are (?:open|pending|waiting)(?: for approval)?",
        ),
        (
            Intent.TICKETS,
            r"(?:list|show)(?: me)?(?: all)?(?: the)? (?:open |pending |waiting )?requests",
        ),
        (
            Intent.REVIEW_START,
            r"(?:start|begin|run|open) (?:an |the |a )?(?:new )?access review(?: now)?",
        ),
        (
            Intent.DOCTOR,
            r"(?:(?:run|start|do) )?(?:the |a )?"
            r"(?:doctor|diagnostics|health check|healthcheck|self check|self test)",
        ),
        (
            Intent.SECRETS,
            r"(?:(?:check|scan|show|list) )?(?:me )?(?:the |all |our |app )*"
            r"(?:secrets|credentials|certificates)",
        ),
        (
            Intent.SECRETS,
            r"(?:(?:are|is) )?(?:there )?any (?:expiring )?(?:app )?"
            r"(?:secrets|credentials|certificates)(?: expiring| expired| about to expire)?",
        ),
        (
            Intent.SECRETS,
            r"which (?:app )?(?:secrets|credentials|certificates) (?:are )?(?:expiring|expired)",
        ),
        (
            Intent.RECONCILE,
            r"(?:(?:run|start|do) )?(?:a |an |the )?(?:access )?reconcil(?:e|iation)(?: now)?"
            r"|(?:(?:check|show|find|any) )?(?:the )?(?:access )?drift",
        ),
    )
)
_SYNC_NOW = re.compile(
    rf"(?:re )?sync now(?: .+)?"
    rf"|resync(?: now)?(?: .+)?"
    rf"|(?:re )?sync (?:everyone|everybody|all|{_PERSON})(?: now)?"
    rf"|(?:run|force|trigger|start|do) (?:a |an |the )?(?:re)?sync(?: now)?"
    rf"(?: (?:for|of) (?:everyone|everybody|all|{_PERSON}))?(?: now)?"
)
_EVERYONE = {"everyone": "everyone", "everybody": "everyone", "all": "all"}
_LISTS = frozenset({"users", "tickets"})
_CHANNEL_VERBS = frozenset({"use", "send", "post", "put", "make", "set", "route"})
_ALERTS = frozenset({"alerts", "alert", "notifications"})
_APPROVALS = frozenset({"approvals", "approval"})
_PAUSE = {"pause": Intent.PAUSE, "resume": Intent.RESUME, "unpause": Intent.RESUME}
# Words between "pause" and the person: "pause calendar sync for ada@…".
_BEFORE_THE_PERSON = frozenset({"calendar", "outlook", "sync", "syncing", "for", "of"})
# A person's name is one to four words, none of these: "pause for a minute" names nobody.
_NOT_A_NAME = frozenset(
    {"a", "an", "the", "this", "that", "it", "its", "to", "me", "my", "i", "you", "your", "we",
     "our", "here", "there", "now", "later", "today", "tomorrow", "minute", "moment", "second",
     "bit", "while", "meeting", "call", "music", "video", "everything", "work", "and", "or",
     "with", "in", "on", "at", "is"}
)  # fmt: skip
_RETRY_WORDS = frozenset({"retry", "rerun", "restart"})

_CONTRACTIONS: dict[str, tuple[str, ...]] = {
    "can't": ("can", "not"),
    "cant": ("can", "not"),
    "cannot": ("can", "not"),
    "won't": ("will", "not"),
    "wont": ("will", "not"),
    "shan't": ("shall", "not"),
    "let's": ("let", "us"),
    "lets": ("let", "us"),
    "im": ("i", "am"),
    "id": ("i", "would"),
    "ive": ("i", "have"),
    "whats": ("what", "is"),
    "hows": ("how", "is"),
    "wheres": ("where", "is"),
    "whos": ("who", "is"),
    **{
        bare: (bare[:-2], "not")
        for bare in (
            "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "havent", "hasnt",
            "couldnt", "wouldnt", "shouldnt",
        )
    },
}  # fmt: skip
_SUFFIXES = {"m": "am", "re": "are", "ve": "have", "ll": "will", "d": "would"}
# "'s" is "is" after these ("what's my status"), else a possessive ("doctor's").
_IS_BEFORE = frozenset(
    {"what", "who", "where", "when", "how", "it", "that", "there", "here", "he", "she"}
)

# Typo correction aims at the words that carry a command (four letters or more, and "add"): a
# short word is too close to too many others ("sent" would become "set"), and a participle or
# "like" too close to ordinary words ("joined", "link").
_TYPO_TARGETS = tuple(
    sorted(
        word
        for word in (
            *_VERBS, *(verb for verb, _ in _PHRASAL), *_SYNC_WORDS, *_CALENDARS,
            *_ADDRESS_WORDS, *_HELP_WORDS, *_RETRY_WORDS, *_PAUSE, *_ALERTS, *_APPROVALS,
            "status", "outlook", "users", "tickets", "ticket", "doctor", "diagnostics", "health",
            "check", "secrets", "credentials", "certificates", "channel", "resync", "everyone",
            "enrolled", "requests", "syncwarden", "instead", "want", "need",
        )
        if len(word) >= 4 or word == "add"
    )
)  # fmt: skip
# Ordinary words one letter away from a target; never "corrected" into it ("remote" is not
# "remove", "with" is not "wish").
_ORDINARY = frozenset(
    {"remote", "uses", "used", "user", "step", "steps", "shop", "sigh", "sight", "sent", "seat",
     "cause", "parse", "phase", "held", "hell", "chance", "charge", "more", "mode", "exit",
     "went", "wait", "quite", "quiet", "print", "paint", "joint", "john", "given", "gives",
     "gave", "stars", "star", "stare", "smart", "stats", "store", "since", "stuff", "sense",
     "hello", "heal", "heat", "cheque", "chick", "cheap", "sure", "send", "sends", "seen",
     "some", "same", "seem", "ending", "adds", "dear", "deal", "dean", "near", "next", "nice",
     "none", "note", "know", "news", "stay", "stays", "stall", "shall", "small", "shell",
     "spell", "still", "stick", "stock", "stood", "story", "study", "thing", "think", "thanks",
     "thank", "ticked", "tickle", "docker", "doctors", "poster", "posted", "rescue", "result",
     "retro", "entry", "reply", "really", "index", "alerted", "altered", "after", "again",
     "about", "above", "while", "white", "whole", "meet", "meets", "mind", "mine", "fine",
     "line", "likes", "liked", "live", "leaves", "league", "lease", "least", "left", "date",
     "data", "changes", "channels", "secret", "credential", "credit", "wealth", "with", "were",
     "activity", "link", "life", "level", "movie", "door", "lovely", "joined", "helped",
     "something", "delivered", "settings", "approve", "starts", "stops", "adding"}
)  # fmt: skip
# Words the rules read as they are: never corrected.
_KNOWN = frozenset(
    {*_TYPO_TARGETS, *_ORDINARY, *_VERBS, *_PARTICIPLES, *_GERUNDS, *_WISHES, *_PARTICLES,
     *_DETERMINERS, *_EVENTS, *_NEGATORS, *_SYNC_AS_A_THING, *_CHANGE_HINTS, *_QUESTION_WORDS,
     *_AUXILIARIES, *_MODALS, *_FILLERS, *_FIRST_PERSON, *_STATUS_WORDS, *_STATUS_CONTEXT,
     *_PROBLEMS, *_BARE, *_CLOSINGS, *_CHANNEL_VERBS, *_BEFORE_THE_PERSON, *_NOT_A_NAME,
     *_EVERYONE, "appointment", "meeting", "approved", "pending", "request", "again", "anymore",
     "longer", "commands", "everybody", "bot", "here", "there"}
)  # fmt: skip
_MENTIONED = "\ue000"  # stands in the text for a mentioned person while the text is read
_TOKEN = re.compile(
    rf"(?P<person>{_EMAIL.pattern}|{_MENTIONED})|(?P<word>[a-z]+(?:'[a-z]+)?)", re.IGNORECASE
)
# What ends a clause: punctuation, or a dash between spaces ("calendar sync - unsubscribe").
_CLAUSE_END = re.compile(r"[,;.!?:()\u2014\u2013]|\s-\s")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


def clean_text(text: str, bot_names: Sequence[str] = ()) -> str:
    """Message text without markup and without the bot's own @mention."""
    text = text[:MAX_TEXT]

    def keep_unless_bot(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        return "" if not bot_names or name in bot_names else f" {name} "

    text = _AT.sub(keep_unless_bot, text)
    text = _TAG.sub(" ", text)
    return " ".join(html.unescape(text).split())


# --- Reading a message -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    word: str  # lower case, contractions expanded, typos corrected; _PERSON for a person
    start: int  # where the word was in the cleaned text, for an admin command's argument
    end: int
    clause: int


@dataclass(frozen=True)
class _Clause:
    words: tuple[str, ...]
    # Opens like a question ("did you add me?"): its verbs ask for nothing.
    questioning: bool
    # Opens with "can"/"could"/…: a polite request ("could I have …") whose "I" may ask.
    modal: bool
    # A question of either kind, or ends in "?".
    asks: bool


@dataclass(frozen=True)
class _Act:
    """A verb said as a request, and what it asks for."""

    intent: Intent | None  # None for a wish ("I need …"), which asks for what follows it
    negated: bool  # "don't add me": asks for nothing, and says so
    # About something other than the sender's sync: "add the team lunch to my outlook calendar".
    elsewhere: bool
    clause: _Clause
    position: int  # in the clause's words

    @property
    def verb(self) -> str:
        return self.clause.words[self.position]


class _Reading:
    """One message, read: its words, its clauses, whether it is about the service, and the
    verbs in it that are said as requests."""

    def __init__(self, cleaned: str) -> None:
        self.cleaned = cleaned
        self.tokens = _tokens(cleaned)
        self.words = [token.word for token in self.tokens]
        self.word_set = frozenset(self.words)
        self.clauses = _clauses(cleaned, self.tokens)
        self.names_sync = _names_sync(self.words)
        calendar_and_outlook = bool(self.word_set & _CALENDARS) and "outlook" in self.word_set
        self.about_service = self.names_sync or calendar_and_outlook
        self.acts = [act for clause in self.clauses for act in self._acts(clause)]

    @property
    def asks(self) -> bool:
        return any(clause.asks for clause in self.clauses)

    def follows(self, pair: tuple[str, str]) -> bool:
        """Whether the two words come one after the other somewhere in the message."""
        return pair in pairwise(self.words)

    def _acts(self, clause: _Clause) -> list[_Act]:
        """The verbs of a clause said as requests.

        A command ("add me"), an infinitive ("I'd like to sign up"), a polite question ("can you
        add me", "could I have …") and a passive after be/get ("I'd like to be removed") ask; a
        statement ("Ada added me"), a question ("did you add me?") and a noun ("the end", "my
        request") do not. A wish ("I need …") asks wherever it is.
        """
        if clause.questioning:
            return []
        acts = []
        for i in range(len(clause.words)):
            asked = _asked_for(clause, i)
            if asked is False:
                continue
            elsewhere = _object_is_an_event(clause.words, i) or (
                # Calendar and Outlook alone are the service only for the sender's own calendar.
                asked is not _C and not self.names_sync and not _about_the_sender(clause.words, i)
            )
            acts.append(_Act(asked, _negated(clause.words, i), elsewhere, clause, i))
        return acts


def _tokens(cleaned: str) -> list[_Token]:
    text = cleaned.translate(_APOSTROPHES)  # one character for one: positions stay the same
    tokens: list[_Token] = []
    clause = 0
    previous_end = 0
    for match in _TOKEN.finditer(text):
        if _CLAUSE_END.search(text, previous_end, match.start()):
            clause += 1
        previous_end = match.end()
        if match.lastgroup == "person":
            words: tuple[str, ...] = (_PERSON,)
        else:
            words = _normal(match.group().lower())
        for word in words:
            if word == "but":
                clause += 1
                continue
            tokens.append(_Token(word, match.start(), match.end(), clause))
    return tokens


def _clauses(cleaned: str, tokens: list[_Token]) -> list[_Clause]:
    clauses: list[_Clause] = []
    for number in sorted({token.clause for token in tokens}):
        mine = [token for token in tokens if token.clause == number]
        following = next((t.start for t in tokens if t.clause > number), len(cleaned))
        end = _CLAUSE_END.search(cleaned, mine[-1].end, following)
        ends_asking = end is not None and end.group() == "?"
        clauses.append(_clause(tuple(token.word for token in mine), ends_asking))
    return clauses


def _clause(words: tuple[str, ...], ends_asking: bool) -> _Clause:
    """How a clause opens: with a question word ("what", "did"), with a modal ("can you"), or
    neither. "Do not …" is a command, and "is it possible to …" a request, not questions."""
    opening = _without_fillers(words)
    first = opening[0] if opening else ""
    polite = any(opening[: len(start)] == start for start in _POLITE_OPENINGS)
    commanding = first == "do" and opening[1:2] == ("not",)
    future = first in ("will", "would", "shall") and opening[1:2] != ("you",)
    questioning = (
        (first in _QUESTION_WORDS or first in _AUXILIARIES or future)
        and not polite
        and not commanding
    )
    modal = (first in _MODALS and not questioning) or polite
    return _Clause(words, questioning, modal, questioning or modal or ends_asking)


def _without_fillers(words: tuple[str, ...]) -> tuple[str, ...]:
    start = 0
    while start < len(words) and words[start] in _FILLERS:
        start += 1
    return words[start:]


@lru_cache(maxsize=8192)
def _normal(word: str) -> tuple[str, ...]:
    """A lower-case word as the rules see it: contractions expanded ("don't" is "do not", "I'd"
    "I would"), and a near miss of a command word corrected to it."""
    if word in _CONTRACTIONS:
        return _CONTRACTIONS[word]
    head, apostrophe, tail = word.partition("'")
    if not apostrophe:
        return (_corrected(word),)
    if tail == "t" and head.endswith("n"):
        return (*_normal(head[:-1]), "not")
    if tail in _SUFFIXES:
        return (*_normal(head), _SUFFIXES[tail])
    if tail == "s" and head in _IS_BEFORE:
        return (*_normal(head), "is")
    return _normal(head)


def _corrected(word: str) -> str:
    """The command word a typo was meant to be. Typos keep the first letter and the length
    give or take a letter ("calender", "snyc", "usres", "doctr"), so only such words are
    candidates; ordinary words a letter away from one ("remote", "with", "uses") are left
    alone."""
    if len(word) < 4 or word in _KNOWN:
        return word
    candidates = [t for t in _TYPO_TARGETS if t[0] == word[0] and abs(len(t) - len(word)) <= 1]
    close = get_close_matches(word, candidates, n=1, cutoff=0.75)
    return close[0] if close else word


def _names_sync(words: Sequence[str]) -> bool:
    """Whether the message names sync as a thing: "calendar sync", "sign me up for sync", "stop
    syncing my calendar"; not "can we sync up tomorrow"."""
    context = bool(_CALENDARS.intersection(words)) or "outlook" in words
    return any(
        word in _SYNC_WORDS and (context or (i > 0 and words[i - 1] in _SYNC_AS_A_THING))
        for i, word in enumerate(words)
    )


def _asked_for(clause: _Clause, i: int) -> Intent | Literal[False] | None:
    """What the word at ``i`` asks for when it is a verb said as a request (None: a wish), or
    False."""
    words = clause.words
    word = words[i]
    before = _anchor(words, i)
    if word in _WISHES:
        if word in _WOULD_WISHES and "would" not in words[max(0, i - 2) : i]:
            return False
        following = words[i + 1 : i + 2]
        if following in (("off",), ("out",)):
            return _R
        # "I need help", "I'd like to know …": the wish is for something else.
        return None if following not in (("help",), ("to",)) else False
    if word in _GERUNDS:
        base, asks = _GERUNDS[word], before in ("mind", "about")
    elif word in _PARTICIPLES:
        base, asks = _PARTICIPLES[word], before in ("be", "get", "being")
    elif word in _VERBS or word in _OTHER_VERBS:
        base = word
        asks = (
            before in ("", "to", "you", "u")
            or (before in ("i", "we") and clause.modal)
            or (before in ("me", "us") and i > 1 and words[i - 2] in ("let", "help"))
        )
    else:
        return False
    if not asks:
        return False
    reach = words[i + 1 : i + 1 + _PARTICLE_REACH]
    particle = next((w for w in reach if (base, w) in _PHRASAL), None)
    if particle is not None:
        return _PHRASAL[(base, particle)]
    if base == "sync":  # "sync my calendar with outlook", "be synced"; not "can we sync up"
        return _E if word == "synced" or _CALENDARS.intersection(words[i + 1 : i + 3]) else False
    if base == "have":  # "could I have outlook sync?", "I'd like to have …"
        return _E if before in ("i", "we", "to") else False
    if base == "ask":  # "I was told to ask you for calendar sync"
        return _E if "for" in words[i + 1 : i + 4] else False
    return _VERBS.get(base, False)


def _anchor(words: Sequence[str], i: int) -> str:
    """The word a verb follows, past "just", "do" and a negation: "" when it opens the clause
    or follows "please", so that "please don't add me" is a command (a negated one)."""
    j = i - 1
    while j >= 0 and (words[j] in _FILLERS or words[j] in _NEGATORS or words[j] == "do"):
        if words[j] in _PLEASE:  # "to calendar sync please add me"
            return ""
        j -= 1
    return words[j] if j >= 0 else ""


def _negated(words: Sequence[str], i: int) -> bool:
    """Whether "not", "never" or "no longer" comes shortly before the word (in its clause)."""
    window = words[max(0, i - _NEGATION_REACH) : i]
    return bool(_NEGATORS.intersection(window)) or ("no", "longer") in pairwise(window)


def _object_is_an_event(words: Sequence[str], i: int) -> bool:
    """ "add a meeting …", "cancel my appointment …": the object is one event, not the sync."""
    following = words[i + 1 : i + 5]
    if not following or following[0] not in _DETERMINERS:
        return False
    return bool(_EVENTS.intersection(following[1:4]))


def _about_the_sender(words: Sequence[str], i: int) -> bool:
    """Whether the sender (or a person they name) is near the verb: "put my appointments in
    Outlook", "can my appointments be synced"; not "add the team lunch to my outlook
    calendar", whose "my" is three words past the verb's own object."""
    return bool(_THE_SENDER.intersection(words[max(0, i - 3) : i + 3]))


# --- Deciding --------------------------------------------------------------------------------


def parse(
    text: str,
    *,
    mentions: Sequence[Mention] = (),
    bot_id: str | None = None,
    bot_names: Sequence[str] = (),
) -> Parsed:
    """What a message asks for. Never raises; anything unrecognised is ``Intent.UNKNOWN``."""
    others = [m for m in mentions if m.user_id != bot_id]
    # A mention entity's text is "<at>Name</at>"; the name inside is what the message shows.
    names = [_AT.sub(r"\1", m.text).strip() for m in mentions if m.user_id == bot_id]
    cleaned = clean_text(text, [*names, *bot_names])
    for mention in others:
        name = _AT.sub(r"\1", mention.text).strip()
        if name:
            cleaned = cleaned.replace(name, f" {_MENTIONED} ")
    email = _first(_EMAIL.findall(cleaned))
    ticket_word = _ticket_word(cleaned)
    ticket_ref = valid_ticket_ref(ticket_word)
    ticket_typed = shown_ticket_ref(ticket_word) if ticket_word else None
    subject_id = next((m.aad_object_id or m.user_id for m in others), None)
    reading = _Reading(cleaned)
    if not reading.words:
        bare = cleaned.replace(_MENTIONED, "").strip()
        return Parsed(Intent.HELP if bare in ("?", "") else Intent.UNKNOWN)
    if ticket_typed:
        intent = Intent.RETRY if _asks_to_retry(reading.words) else Intent.TICKET
        return Parsed(intent, ticket_ref=ticket_ref, ticket_typed=ticket_typed)
    admin = _admin_command(reading, subject_id, email)
    if admin is not None:
        return admin
    request = _request(reading, email)
    if request is Intent.CHANGE:
        return Parsed(Intent.CHANGE, address=email)
    if request is not None:
        return Parsed(request, subject_id=subject_id, address=email)
    return Parsed(_answer(reading))


def _asks_to_retry(words: Sequence[str]) -> bool:
    """ "retry SW-1042", "try SW-1042 again", "rerun …"; not "don't retry …"."""
    for i, word in enumerate(words):
        again = word in ("try", "run") and "again" in words[i + 1 :]
        if (word in _RETRY_WORDS or again) and not _negated(words, i):
            return True
    return False


def _request(reading: _Reading, email: str | None) -> Intent | None:
    """The request a message makes, if it makes one (see the module docstring)."""
    wanted = [act for act in reading.acts if not act.negated and not act.elsewhere]
    words = reading.word_set
    if _asks_to_change(reading, wanted, email):
        return _C
    if not reading.about_service:
        return None
    if any(act.intent is _R for act in wanted):
        return _R
    # "I don't want my calendar synced anymore", "I no longer need …", "no more calendar sync".
    no_more = any(_without_fillers(c.words)[:2] == ("no", "more") for c in reading.clauses)
    unwished = any(act.intent is None and act.negated for act in reading.acts)
    if no_more or (
        unwished and (words & {"anymore", "longer"} or reading.follows(("any", "more")))
    ):
        return _R
    if any(act.intent in (_E, None) for act in wanted):
        return _E
    # "calendar sync please", "outlook sync for me" (but "calendar sync?" asks what it is).
    if words <= _BARE and (words & _PLEASE or reading.follows(("for", "me"))):
        return _E
    return None


def _asks_to_change(reading: _Reading, wanted: list[_Act], email: str | None) -> bool:
    """A change of address: a change verb about an address or mailbox ("change my sync address
    to …", "switch my calendar sync to ada@…"), or an address typed with "new", "wrong",
    "instead" ("my new sync address is ada@…"). An "email" alone is too often a message for
    that: "I got a new email about calendar sync" changes nothing."""
    words = reading.word_set
    if any(act.intent is _C for act in wanted) and (email or words & _ADDRESS_WORDS):
        return True
    hinted = any(
        _CHANGE_HINTS.intersection(clause.words)
        for clause in reading.clauses
        if not clause.questioning
    )
    return hinted and bool(email or words & {"address", "mailbox"})


def _answer(reading: _Reading) -> Intent:
    """Help, status or unknown for a message that asks for nothing to be done."""
    words = reading.word_set
    text = " ".join(reading.words)
    about = reading.about_service or bool(words & {"syncwarden", "bot"})
    asks_for_help = bool(words & _HELP_WORDS) and not _THANKS_FOR_HELP.search(text)
    if asks_for_help or _ABOUT_THE_BOT.search(text) or (about and _HOW_TO.search(text)):
        return Intent.HELP
    if any(act.negated or act.elsewhere for act in reading.acts) or _DECLINES.search(text):
        # "don't add me" declines; "add the team lunch to my calendar" is not for us.
        return Intent.UNKNOWN
    if words & _STATUS_WORDS:
        return Intent.STATUS
    own = bool(words & _FIRST_PERSON)
    context = reading.about_service or bool(words & _STATUS_CONTEXT)
    if own and context and (reading.asks or words & _PROBLEMS):
        return Intent.STATUS  # "am I enrolled?", "my appointments are not showing up"
    if about and reading.asks and not own:
        return Intent.HELP  # "what is calendar sync?", "who can use calendar sync?"
    if reading.about_service and words <= _BARE:
        return Intent.HELP  # "calendar sync?"
    return Intent.UNKNOWN


def _admin_command(reading: _Reading, subject_id: str | None, email: str | None) -> Parsed | None:
    """An admin command said as the whole message, or None."""
    core = _core(reading.tokens)
    words = [token.word for token in core]
    if not words:
        return None
    if _NEGATORS & set(words):
        # A list's filter terms are read whole, and in them "not" is a word of an error kind
        # (``users error:not_in_scope``), not a negation.
        if words[0] in _LISTS and len(core) > 1:
            return _narrowed_list(reading.cleaned, reading.tokens, core)
        return None
    text = " ".join(words)
    for intent, pattern in _ADMIN_PHRASES:
        if pattern.fullmatch(text):
            return Parsed(intent)
    if words[0] in _LISTS and len(core) > 1:
        return _narrowed_list(reading.cleaned, reading.tokens, core)
    if words[0] in _CHANNEL_VERBS and {"channel", "here"} & set(words):
        if _APPROVALS & set(words):
            return Parsed(Intent.USE_CHANNEL_FOR_APPROVALS)
        if _ALERTS & set(words):
            return Parsed(Intent.USE_CHANNEL)
    if words[0] in _PAUSE:
        return _pause_or_resume(reading.cleaned, core, _PAUSE[words[0]], subject_id, email)
    if _SYNC_NOW.fullmatch(text):
        return Parsed(
            Intent.SYNC_NOW,
            subject_id=subject_id,
            address=email,
            argument=_sync_target(reading.cleaned, core),
        )
    return None


def _core(tokens: list[_Token]) -> list[_Token]:
    """The message without its greeting, "could you please" and closing "thanks"."""
    start, end = 0, len(tokens)
    moved = True
    while moved:
        moved = False
        while start < end and tokens[start].word in _FILLERS:
            start, moved = start + 1, True
        for opening in _OPENINGS:
            if tuple(t.word for t in tokens[start : start + len(opening)]) == opening:
                start, moved = start + len(opening), True
    while end > start and tokens[end - 1].word in _CLOSINGS:
        end -= 1
    if end - start >= 2 and (tokens[end - 2].word, tokens[end - 1].word) == ("thank", "you"):
        end -= 2
    return tokens[start:end]


def _narrowed_list(cleaned: str, tokens: list[_Token], core: list[_Token]) -> Parsed | None:
    """ "users failing", "tickets failed name:ann": a list and its filter, when all that
    follows the list's name is filter terms (see :mod:`bot.list_filters`), with or without a
    closing "please"/"thanks" and a "?" or "."; else None, so that "users are complaining"
    stays a sentence."""
    closing = next((t.start for t in tokens if t.start >= core[-1].end), len(cleaned))
    read = parse_users_filter if core[0].word == "users" else parse_tickets_filter
    for end in dict.fromkeys((len(cleaned), closing)):
        wanted = read(cleaned[core[0].end : end].rstrip().rstrip("?!."))
        if wanted is not None:
            intent = Intent.USERS if core[0].word == "users" else Intent.TICKETS
            return Parsed(intent, listing=wanted)
    return None


def _pause_or_resume(
    cleaned: str, core: list[_Token], intent: Intent, subject_id: str | None, email: str | None
) -> Parsed | None:
    """ "pause ada@…", "resume syncing for <at>Ada</at>", "pause Grace Hopper", or "pause" alone
    (the dialogue asks whom); not "pause for a minute"."""
    rest = _up_to_the_person(core[1:])
    named = [token.word for token in rest]
    is_person = _PERSON in named[:1]
    is_name = 0 < len(named) <= 4 and not set(named) & _NOT_A_NAME
    if named and not (is_person or is_name):
        return None
    argument = _text_of(cleaned, rest)
    return Parsed(intent, subject_id=subject_id, address=email, argument=argument)


def _sync_target(cleaned: str, core: list[_Token]) -> str | None:
    """Whom "sync now" is for: "all"/"everyone", the text after "sync now"/"resync", or None
    (everyone; the dialogue decides)."""
    for token in core:
        if token.word in _EVERYONE:
            return _EVERYONE[token.word]
    words = [token.word for token in core]
    for marker in ("now", "resync"):
        if marker in words and words[0] in ("sync", "resync", "re"):
            return _text_of(cleaned, _up_to_the_person(core[words.index(marker) + 1 :]))
    return None


def _up_to_the_person(tokens: list[_Token]) -> list[_Token]:
    """Without the words before whom a command is for: "(the) calendar sync for …"."""
    while tokens and (
        tokens[0].word in _BEFORE_THE_PERSON
        or (tokens[0].word == "the" and len(tokens) > 1 and tokens[1].word in _SYNC_WORDS)
    ):
        tokens = tokens[1:]
    return tokens


def _text_of(cleaned: str, tokens: list[_Token]) -> str | None:
    """The text the tokens were read from, as typed (names keep their capitals)."""
    if not tokens:
        return None
    text = cleaned[tokens[0].start : tokens[-1].end].replace(_MENTIONED, " ")
    return " ".join(text.split()) or None


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
