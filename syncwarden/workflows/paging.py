"""What IT's lists ask for and where a page ends: filters, cursors and pages (pure values).

The lists page in the database by *keyset*, never by offset: a page is "the next N rows after
this one" in a fixed total order (users by name key then row id; tickets newest first by row
id), so each page is one index range read whatever page it is, and rows added or removed
between two clicks neither repeat a row nor skip one that was there all along. A cursor is the
sort key of the last row shown; it travels on the card's Next button as text, so reading it
back (:meth:`UsersCursor.parse`, :meth:`TicketsCursor.parse`) treats it as untrusted input and
never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from syncwarden.core.search_keys import search_key
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.records import NAME_LENGTH

PAGE_SIZE = 25
# Row ids are 32-bit integers on PostgreSQL.
_MAX_ID = 2**31 - 1
_MAX_ID_DIGITS = 10
# A Unicode code point's last value; a string cannot grow past it.
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)

Row = TypeVar("Row")


class UserState(StrEnum):
    """How a person's sync is doing, as IT filters the users list by it."""

    PAUSED = "paused"
    FAILING = "failing"  # the last run left an error
    OK = "ok"  # running, and the last run left no error


@dataclass(frozen=True)
class UsersFilter:
    """Which enrolled people to list. ``name`` is a prefix, as typed, of the person's name,
    UPN or sync address (compared as search keys, :mod:`core.search_keys`); ``error_kind`` is
    the kind of the last sync error (``permission``, ``not_in_scope``, …)."""

    state: UserState | None = None
    error_kind: str | None = None
    name: str | None = None


class TicketScope(StrEnum):
    """Sets of ticket statuses the tickets list offers besides single statuses."""

    OPEN = "open"
    ALL = "all"


@dataclass(frozen=True)
class TicketsFilter:
    """Which tickets to list: open ones (the default), all, or one status; ``error_kind`` is
    the kind of the ticket's (last) failure, as for users; ``name`` is a prefix of the
    subject's name or UPN."""

    scope: TicketScope | TicketStatus = TicketScope.OPEN
    name: str | None = None
    error_kind: str | None = None


@dataclass(frozen=True)
class UsersCursor:
    """Where a users page ended: the last row's name key and id."""

    name_key: str
    id: int

    def token(self) -> str:
        return f"{self.id}.{self.name_key}"

    @classmethod
    def parse(cls, token: object) -> UsersCursor | None:
        """The cursor a Next button carried, or None when it cannot be one of ours: an id that
        fits the table and a name key exactly as :func:`search_key` makes them."""
        if not isinstance(token, str) or len(token) > _MAX_ID_DIGITS + 1 + NAME_LENGTH:
            return None
        number, dot, key = token.partition(".")
        row_id = _row_id(number)
        if row_id is None or not dot or search_key(key, NAME_LENGTH) != key:
            return None
        return cls(key, row_id)


@dataclass(frozen=True)
class TicketsCursor:
    """Where a tickets page ended: the last (oldest) row's id."""

    id: int

    def token(self) -> str:
        return str(self.id)

    @classmethod
    def parse(cls, token: object) -> TicketsCursor | None:
        row_id = _row_id(token) if isinstance(token, str) else None
        return cls(row_id) if row_id is not None else None


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of a list and where the next begins (None: this is the last page)."""

    rows: tuple[Row, ...]
    after: UsersCursor | TicketsCursor | None = None


def _row_id(text: str) -> int | None:
    """A row id from text: ASCII digits only, no sign or spaces, within the column's range."""
    if not (0 < len(text) <= _MAX_ID_DIGITS and text.isascii() and text.isdecimal()):
        return None
    value = int(text)
    return value if 0 < value <= _MAX_ID else None


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The range ``[low, high)`` of strings that start with ``prefix`` in code-point order
    (``high`` None: no upper bound), which is how the search keys are compared, so a btree
    index on a key column answers "starts with" as one range read."""
    head = prefix
    while head and ord(head[-1]) == _LAST_CODE_POINT:
        head = head[:-1]
    if not head:
        return prefix, None
    following = ord(head[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return prefix, head[:-1] + chr(following)
