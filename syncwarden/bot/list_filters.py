"""The words after ``users`` and ``tickets`` that narrow IT's lists, read and written back.

``users failing``, ``users paused name:ann``, ``users error:permission``, ``tickets failed``,
``tickets all name:"ann lee"``, ``tickets error:no_mailbox``: terms in any order, each kind at
most once, case ignored except in a name. A name is one word or a quoted phrase, and matches the
start of the person's name, UPN or sync address (an index reads a prefix; a substring would need
PostgreSQL's pg_trgm, which we may not assume).

The same text travels on the card's Next button, and :func:`users_filter_text` /
:func:`tickets_filter_text` write a filter back in the canonical form that the readers read
as that very filter, so a click is checked by the same reader as the typed command. The readers
are pure and never raise: text that is not a filter gives None. An error kind is read as any
word that could be one; whether it is a kind we know is the dialogue's question
(:func:`unknown_error_kind`), so that the answer can name the kinds rather than not understand.
"""

from __future__ import annotations

import re

from syncwarden.connectors.errors import FailureKind
from syncwarden.core.search_keys import search_key
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import TicketScope, TicketsFilter, UsersFilter, UserState
from syncwarden.workflows.records import ADDRESS_LENGTH

MAX_FILTER_TEXT = 200
MAX_NAME = 64
_ERROR_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
# One term: ``key:value`` (the value quoted, or up to the next space) or a bare word.
_TERM = re.compile(r'\s*(?:([A-Za-z]+):(?:"([^"]*)"|“([^”]*)”|(\S*))|(\S+))')
_QUOTES = frozenset('"“”')

_USER_STATES = {
    "paused": UserState.PAUSED,
    "failing": UserState.FAILING,
    "failed": UserState.FAILING,
    "errors": UserState.FAILING,
    "problems": UserState.FAILING,
    "ok": UserState.OK,
    "healthy": UserState.OK,
}
_TICKET_SCOPES: dict[str, TicketScope | TicketStatus] = {
    "open": TicketScope.OPEN,
    "all": TicketScope.ALL,
    "awaiting": TicketStatus.AWAITING_APPROVAL,
    "pending": TicketStatus.AWAITING_APPROVAL,
    "waiting": TicketStatus.AWAITING_APPROVAL,
    "approved": TicketStatus.APPROVED,
    "provisioning": TicketStatus.PROVISIONING,
    "manual": TicketStatus.WAITING_MANUAL,
    "completed": TicketStatus.COMPLETED,
    "done": TicketStatus.COMPLETED,
    "rejected": TicketStatus.REJECTED,
    "cancelled": TicketStatus.CANCELLED,
    "canceled": TicketStatus.CANCELLED,
    "expired": TicketStatus.EXPIRED,
    "failed": TicketStatus.FAILED,
    "failing": TicketStatus.FAILED,
    **{status.value: status for status in TicketStatus},
}
# The word each scope is written back as.
_SCOPE_WORDS: dict[TicketScope | TicketStatus, str] = {
    TicketScope.OPEN: "open",
    TicketScope.ALL: "all",
    TicketStatus.AWAITING_APPROVAL: "awaiting",
    TicketStatus.APPROVED: "approved",
    TicketStatus.PROVISIONING: "provisioning",
    TicketStatus.WAITING_MANUAL: "manual",
    TicketStatus.COMPLETED: "completed",
    TicketStatus.REJECTED: "rejected",
    TicketStatus.CANCELLED: "cancelled",
    TicketStatus.EXPIRED: "expired",
    TicketStatus.FAILED: "failed",
}
_USER_STATE_WORDS = {state: state.value for state in UserState}
# The kinds each list can hold: a ticket never stops at the sync's safety valve.
USER_ERROR_KINDS = tuple(FailureKind)
TICKET_ERROR_KINDS = tuple(kind for kind in FailureKind if kind is not FailureKind.SAFETY_VALVE)


def parse_users_filter(text: object) -> UsersFilter | None:
    """The users filter ``text`` says ("" is everyone), or None when it says something else."""
    terms = _terms(text)
    if terms is None:
        return None
    state: UserState | None = None
    error_kind: str | None = None
    name: str | None = None
    for key, value in terms:
        word = value.lower()
        if key in ("", "status") and word in _USER_STATES and state is None:
            state = _USER_STATES[word]
        elif key in ("error", "kind") and error_kind is None and _ERROR_KIND.fullmatch(word):
            error_kind = word
        elif key == "name" and name is None:
            name = _name(value)
            if name is None:
                return None
        else:
            return None
    return UsersFilter(state=state, error_kind=error_kind, name=name)


def parse_tickets_filter(text: object) -> TicketsFilter | None:
    """The tickets filter ``text`` says ("" is the open tickets), or None."""
    terms = _terms(text)
    if terms is None:
        return None
    scope: TicketScope | TicketStatus | None = None
    error_kind: str | None = None
    name: str | None = None
    for key, value in terms:
        word = value.lower()
        if key in ("", "status") and word in _TICKET_SCOPES and scope is None:
            scope = _TICKET_SCOPES[word]
        elif key in ("error", "kind") and error_kind is None and _ERROR_KIND.fullmatch(word):
            error_kind = word
        elif key == "name" and name is None:
            name = _name(value)
            if name is None:
                return None
        else:
            return None
    return TicketsFilter(scope=scope or TicketScope.OPEN, name=name, error_kind=error_kind)


def users_filter_text(wanted: UsersFilter) -> str:
    """``wanted`` as :func:`parse_users_filter` reads it back: "" for everyone."""
    terms = [
        _USER_STATE_WORDS[wanted.state] if wanted.state else "",
        f"error:{wanted.error_kind}" if wanted.error_kind else "",
        _name_term(wanted.name),
    ]
    return " ".join(term for term in terms if term)


def tickets_filter_text(wanted: TicketsFilter) -> str:
    """``wanted`` as :func:`parse_tickets_filter` reads it back: "" for the open tickets."""
    terms = [
        "" if wanted.scope is TicketScope.OPEN else _SCOPE_WORDS[wanted.scope],
        f"error:{wanted.error_kind}" if wanted.error_kind else "",
        _name_term(wanted.name),
    ]
    return " ".join(term for term in terms if term)


def unknown_error_kind(
    kind: str | None, known: tuple[FailureKind, ...], example: str
) -> str | None:
    """What to answer when ``kind`` is none of the ``known`` kinds (None when it is one, or no
    kind was asked for): the kinds there are, and the list's command ``example`` with one. A
    mistyped kind would otherwise list nothing, which reads as "no such failures"."""
    if kind is None or kind in known:
        return None
    kinds = ", ".join(known)
    return (
        f"There is no error kind '{kind}'. The kinds are: {kinds}. "
        f"For example: **{example} error:{FailureKind.PERMISSION}**"
    )


def _terms(text: object) -> list[tuple[str, str]] | None:
    """``(key, value)`` for each term (key "" for a bare word; keys in lower case), or None
    when the text is not made of terms."""
    if not isinstance(text, str) or len(text) > MAX_FILTER_TEXT:
        return None
    terms = []
    position = 0
    rest = text.rstrip()
    while position < len(rest):
        match = _TERM.match(rest, position)
        if match is None or match.end() == position:
            return None
        key, double, curly, plain, bare = match.groups()
        if bare is not None:
            if _QUOTES.intersection(bare):
                return None
            terms.append(("", bare))
        else:
            value = next(v for v in (double, curly, plain) if v is not None)
            terms.append((key.lower(), value))
        position = match.end()
        if position < len(rest) and not rest[position].isspace():
            return None  # "name:"ann"x": a quoted value runs into the next word
    return terms


def _name(value: str) -> str | None:
    """A name prefix as typed, spaces collapsed: printable, no quotes, and not empty once
    folded into a search key."""
    name = " ".join(value.split())
    if (
        not name
        or len(name) > MAX_NAME
        or not name.isprintable()
        or _QUOTES.intersection(name)
        or not search_key(name, ADDRESS_LENGTH)
    ):
        return None
    return name


def _name_term(name: str | None) -> str:
    if not name:
        return ""
    return f'name:"{name}"' if " " in name else f"name:{name}"
