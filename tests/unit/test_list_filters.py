"""The words that narrow IT's lists, the cursors on their Next buttons, and the search keys
both are compared by: read from anything without raising, and written back as themselves."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from syncwarden.bot.intents import Intent, parse
from syncwarden.bot.list_filters import (
    MAX_NAME,
    TICKET_ERROR_KINDS,
    USER_ERROR_KINDS,
    parse_tickets_filter,
    parse_users_filter,
    tickets_filter_text,
    unknown_error_kind,
    users_filter_text,
)
from syncwarden.connectors.errors import FailureKind
from syncwarden.core.search_keys import search_key
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import (
    TicketScope,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
    UserState,
    prefix_range,
)

anything = st.one_of(
    st.text(max_size=250),
    st.text(alphabet=st.sampled_from(list('nameror:ki "“”ok paused failing x')), max_size=60),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


def _valid_name(text: str) -> bool:
    return parse_users_filter(f'name:"{text}"') is not None


names = (
    st.text(min_size=1, max_size=MAX_NAME).map(lambda t: " ".join(t.split())).filter(_valid_name)
)
users_filters = st.builds(
    UsersFilter,
    st.none() | st.sampled_from(UserState),
    st.none() | st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
    st.none() | names,
)
error_kinds = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
tickets_filters = st.builds(
    TicketsFilter,
    st.sampled_from([*TicketScope, *TicketStatus]),
    st.none() | names,
    st.none() | st.sampled_from(FailureKind) | error_kinds,
)


@given(anything)
def test_reading_a_filter_never_raises(text: Any) -> None:
    for read in (parse_users_filter, parse_tickets_filter):
        found = read(text)
        assert found is None or isinstance(found, (UsersFilter, TicketsFilter))


@given(users_filters)
def test_a_users_filter_written_back_reads_as_itself(wanted: UsersFilter) -> None:
    assert parse_users_filter(users_filter_text(wanted)) == wanted


@given(tickets_filters)
def test_a_tickets_filter_written_back_reads_as_itself(wanted: TicketsFilter) -> None:
    assert parse_tickets_filter(tickets_filter_text(wanted)) == wanted


@given(anything)
def test_whatever_reads_as_a_filter_is_written_back_to_the_same_filter(text: Any) -> None:
    users = parse_users_filter(text)
    if users is not None:
        assert parse_users_filter(users_filter_text(users)) == users
    tickets = parse_tickets_filter(text)
    if tickets is not None:
        assert parse_tickets_filter(tickets_filter_text(tickets)) == tickets


# Names as people type them in a chat message (no markup, no sentence-ending punctuation).
_WORD = r"[A-Za-zÀ-ÖØ-öø-ÿ0-9@-]{1,12}"
typed_names = st.from_regex(rf"{_WORD}( {_WORD}){{0,2}}", fullmatch=True).filter(
    # Not a negation ("not", "don't" written "dont") nor a ticket number ("SW-1042"), which
    # make a message something else before it is read as a command.
    lambda name: not re.search(r"(?i)\b(?:not|never|\w*nt)\b|\bsw-?\d", name)
)


@given(
    st.builds(
        UsersFilter,
        st.none() | st.sampled_from(UserState),
        st.none() | st.sampled_from(FailureKind) | error_kinds,
        st.none() | typed_names,
    )
)
def test_a_typed_users_filter_is_the_users_command_with_that_filter(wanted: UsersFilter) -> None:
    typed = users_filter_text(wanted)
    assume(typed)
    parsed = parse(f"users {typed}")
    assert (parsed.intent, parsed.listing) == (Intent.USERS, wanted)


@given(
    st.builds(
        TicketsFilter,
        st.sampled_from([*TicketScope, *TicketStatus]),
        typed_names,
        st.none() | st.sampled_from(FailureKind) | error_kinds,
    )
)
def test_a_typed_tickets_filter_is_the_tickets_command_with_that_filter(
    wanted: TicketsFilter,
) -> None:
    parsed = parse(f"tickets {tickets_filter_text(wanted)}")
    assert (parsed.intent, parsed.listing) == (Intent.TICKETS, wanted)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("", UsersFilter()),
        ("failing", UsersFilter(UserState.FAILING)),
        ("Paused", UsersFilter(UserState.PAUSED)),
        ("ok", UsersFilter(UserState.OK)),
        ("error:Permission", UsersFilter(error_kind="permission")),
        ("kind:not_in_scope failed", UsersFilter(UserState.FAILING, "not_in_scope")),
        ("name:ann", UsersFilter(name="ann")),
        ('name:"Ann  Lee" paused', UsersFilter(UserState.PAUSED, name="Ann Lee")),
        ("name:“Ann Lee”", UsersFilter(name="Ann Lee")),
        ("status:ok name:ann@example.edu", UsersFilter(UserState.OK, name="ann@example.edu")),
    ],
)
def test_users_filters_read_as_meant(text: str, wanted: UsersFilter) -> None:
    assert parse_users_filter(text) == wanted


@pytest.mark.parametrize(
    "text",
    [
        "failing paused",  # two states
        "name:ann name:bea",
        "name:",
        'name:"ann',
        'name:"ann"lee',
        "error:",
        "error:two words",
        "error:Ünicode",
        "are complaining",
        "name:\x00",
        "x" * 201,
    ],
)
def test_what_is_not_a_users_filter_is_refused(text: str) -> None:
    assert parse_users_filter(text) is None


@pytest.mark.parametrize(
    "text",
    ["error:", "error:permission kind:other", "error:two words", "error:Ünicode", "error:1x"],
)
def test_what_is_not_a_tickets_error_kind_is_refused(text: str) -> None:
    assert parse_tickets_filter(text) is None


@pytest.mark.parametrize(
    ("kind", "known"),
    [
        ("bogus", TICKET_ERROR_KINDS),
        ("safety_valve", TICKET_ERROR_KINDS),
        ("bogus", USER_ERROR_KINDS),
    ],
)
def test_an_unknown_error_kind_is_answered_with_the_kinds_there_are(
    kind: str, known: tuple[FailureKind, ...]
) -> None:
    answer = unknown_error_kind(kind, known, "tickets")
    assert answer is not None and f"'{kind}'" in answer
    assert all(str(each) in answer for each in known)
    assert unknown_error_kind(None, known, "tickets") is None
    assert all(unknown_error_kind(each, known, "tickets") is None for each in known)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("", TicketsFilter()),
        ("open", TicketsFilter(TicketScope.OPEN)),
        ("all", TicketsFilter(TicketScope.ALL)),
        ("failed", TicketsFilter(TicketStatus.FAILED)),
        ("pending", TicketsFilter(TicketStatus.AWAITING_APPROVAL)),
        ("waiting_manual", TicketsFilter(TicketStatus.WAITING_MANUAL)),
        ("status:done name:ann", TicketsFilter(TicketStatus.COMPLETED, "ann")),
        ("canceled", TicketsFilter(TicketStatus.CANCELLED)),
        ("error:Permission", TicketsFilter(error_kind="permission")),
        ("failed kind:no_mailbox", TicketsFilter(TicketStatus.FAILED, error_kind="no_mailbox")),
        (
            'name:"Ann Lee" all error:other',
            TicketsFilter(TicketScope.ALL, "Ann Lee", error_kind="other"),
        ),
    ],
)
def test_tickets_filters_read_as_meant(text: str, wanted: TicketsFilter) -> None:
    assert parse_tickets_filter(text) == wanted


@pytest.mark.parametrize(
    ("text", "intent", "listing"),
    [
        ("users failing", Intent.USERS, UsersFilter(UserState.FAILING)),
        ("usres paused please", Intent.USERS, UsersFilter(UserState.PAUSED)),
        ('users name:"Ann Lee"?', Intent.USERS, UsersFilter(name="Ann Lee")),
        ("hi, users error:permission thanks", Intent.USERS, UsersFilter(error_kind="permission")),
        ("tickets failed", Intent.TICKETS, TicketsFilter(TicketStatus.FAILED)),
        ("tickets all name:ann", Intent.TICKETS, TicketsFilter(TicketScope.ALL, "ann")),
        (
            "tickets error:permission please",
            Intent.TICKETS,
            TicketsFilter(error_kind="permission"),
        ),
        # "not" in a kind is no negation.
        ("users error:not_in_scope", Intent.USERS, UsersFilter(error_kind="not_in_scope")),
        (
            "tickets failed error:not_in_scope",
            Intent.TICKETS,
            TicketsFilter(TicketStatus.FAILED, error_kind="not_in_scope"),
        ),
        ("users", Intent.USERS, None),
        ("show me all open tickets", Intent.TICKETS, None),
        # Sentences that start with a list's name stay sentences.
        ("users are complaining their calendar is empty", None, None),
        ("tickets faild", None, None),
        ("users not failing", None, None),
    ],
)
def test_the_lists_are_narrowed_in_the_command_itself(
    text: str, intent: Intent | None, listing: object
) -> None:
    parsed = parse(text)
    if intent is None:
        assert parsed.intent not in (Intent.USERS, Intent.TICKETS)
    else:
        assert (parsed.intent, parsed.listing) == (intent, listing)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=400))
def test_a_search_key_is_its_own_key(text: str, longest: int) -> None:
    key = search_key(text, longest)
    assert search_key(key, longest) == key
    assert len(key) <= longest and key.isprintable() and key == key.strip()


def test_search_keys_fold_case_accents_and_spaces() -> None:
    assert search_key("  Zoë   NG\u200b ", 256) == "zoe ng"
    assert search_key("Straße", 256) == search_key("STRASSE", 256) == "strasse"
    assert search_key("Émile", 3) == "emi"


@given(st.text(max_size=20), st.text(max_size=20))
def test_a_prefix_range_holds_exactly_the_strings_that_start_with_it(
    prefix: str, other: str
) -> None:
    low, high = prefix_range(prefix)
    inside = low <= other and (high is None or other < high)
    assert inside == other.startswith(prefix)
    longer = prefix + other
    assert low <= longer and (high is None or longer < high)


def test_a_prefix_range_steps_over_the_last_code_point_and_the_surrogates() -> None:
    assert prefix_range("ab") == ("ab", "ac")
    assert prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert prefix_range("\U0010ffff") == ("\U0010ffff", None)
    assert prefix_range("\ud7ff") == ("\ud7ff", "\ue000")


@given(st.text(max_size=256).map(lambda t: search_key(t, 256)), st.integers(1, 2**31 - 1))
def test_a_users_cursor_reads_back_as_itself(key: str, row_id: int) -> None:
    cursor = UsersCursor(key, row_id)
    assert UsersCursor.parse(cursor.token()) == cursor


@given(st.integers(1, 2**31 - 1))
def test_a_tickets_cursor_reads_back_as_itself(row_id: int) -> None:
    assert TicketsCursor.parse(TicketsCursor(row_id).token()) == TicketsCursor(row_id)


@given(anything)
def test_reading_a_cursor_never_raises(token: Any) -> None:
    for read in (UsersCursor.parse, TicketsCursor.parse):
        found = read(token)
        assert found is None or found.id > 0


@pytest.mark.parametrize(
    "token",
    ["", "12", "0.ann", "-1.ann", "2147483648.ann", "١٢.ann", "12.Ann", "12. ann", "x.ann"],
)
def test_a_users_cursor_that_is_not_one_of_ours_is_refused(token: str) -> None:
    """An id outside the table's range, or a name key the keys are never made like."""
    assert UsersCursor.parse(token) is None


def test_cursors_read_as_meant() -> None:
    assert UsersCursor.parse("12.ann lee") == UsersCursor("ann lee", 12)
    assert UsersCursor.parse("12.") == UsersCursor("", 12)  # a person with no display name
    assert [TicketsCursor.parse(t) for t in ("7", "07", "0", "1e3", " 7", "2147483648")] == [
        TicketsCursor(7),
        TicketsCursor(7),
        None,
        None,
        None,
        None,
    ]
