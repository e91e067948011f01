"""Who may read a ticket (workflows.access): its subject, its requester, approvers, IT admins."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.workflows.access import Reader, ReadGrant, Role, may_read, read_grant, readable
from syncwarden.workflows.ports import Person, TicketView
from tests.support.tickets import sample_ticket

SUBJECT = "0b1c2d3e-0000-4000-8000-00000000000a"
REQUESTER = "0b1c2d3e-0000-4000-8000-00000000000b"
STRANGER = "0b1c2d3e-0000-4000-8000-00000000000c"


def ticket(subject: str = SUBJECT, requester: str = REQUESTER, ref: str = "SW-1042") -> TicketView:
    return dataclasses.replace(
        sample_ticket(),
        ref=ref,
        subject=Person(subject, "Sasha", "sasha@example.edu"),
        requester=Person(requester, "Dana", "dana@example.edu"),
    )


@pytest.mark.parametrize(
    ("reader", "grant"),
    [
        (Reader(SUBJECT), ReadGrant.SUBJECT),
        (Reader(REQUESTER), ReadGrant.REQUESTER),
        (Reader(STRANGER, frozenset({Role.APPROVER})), ReadGrant.APPROVER),
        (Reader(STRANGER, frozenset({Role.IT_ADMIN})), ReadGrant.IT_ADMIN),
        (Reader(SUBJECT, frozenset({Role.IT_ADMIN, Role.APPROVER})), ReadGrant.IT_ADMIN),
        (Reader(STRANGER), None),
    ],
)
def test_each_allowed_reader_and_a_stranger(reader: Reader, grant: ReadGrant | None) -> None:
    assert read_grant(ticket(), reader) is grant
    assert may_read(ticket(), reader) is (grant is not None)


def test_object_ids_compare_without_case_or_padding() -> None:
    assert read_grant(ticket(), Reader(f" {SUBJECT.upper()} ")) is ReadGrant.SUBJECT
    assert read_grant(ticket(), Reader(REQUESTER.upper())) is ReadGrant.REQUESTER


def test_an_empty_reader_id_matches_nobody_not_even_a_ticket_with_empty_ids() -> None:
    blank = ticket(subject="", requester=" ")
    assert not may_read(blank, Reader(""))
    assert not may_read(blank, Reader("  "))


def test_names_and_addresses_grant_nothing_only_object_ids() -> None:
    """A reader is their Entra object id; a matching name or UPN is not the same person."""
    view = ticket()
    assert not may_read(view, Reader("sasha@example.edu"))
    assert not may_read(view, Reader("Sasha"))


def test_roles_read_every_ticket_and_others_do_not_learn_unknown_numbers() -> None:
    assert Reader(STRANGER, frozenset({Role.APPROVER})).reads_every_ticket
    assert Reader(STRANGER, frozenset({Role.IT_ADMIN})).reads_every_ticket
    assert not Reader(SUBJECT).reads_every_ticket


ids = st.uuids().map(str)
roles = st.frozensets(st.sampled_from(list(Role)))


@given(subject=ids, requester=ids, reader=ids, held=roles, upper=st.booleans())
def test_may_read_exactly_when_involved_or_holding_a_role(
    subject: str, requester: str, reader: str, held: frozenset[Role], upper: bool
) -> None:
    view = ticket(subject, requester)
    who = Reader(reader.upper() if upper else reader, held)
    involved = reader.lower() in (subject.lower(), requester.lower())
    assert may_read(view, who) is (involved or bool(held))


@given(
    tickets=st.lists(st.tuples(ids, ids), max_size=12),
    reader=ids,
    held=roles,
)
def test_readable_keeps_order_and_only_what_may_be_read(
    tickets: list[tuple[str, str]], reader: str, held: frozenset[Role]
) -> None:
    views = [ticket(s, r, ref=f"SW-{1001 + i}") for i, (s, r) in enumerate(tickets)]
    who = Reader(reader, held)
    shown = readable(views, who)
    assert shown == [view for view in views if may_read(view, who)]
    if held:
        assert shown == views


@given(ticket_ids=st.lists(ids, min_size=2, max_size=6, unique=True))
def test_one_ticket_s_people_read_it_and_not_another_one(ticket_ids: list[str]) -> None:
    """Being the subject or requester of one ticket grants nothing on someone else's."""
    mine = ticket(ticket_ids[0], ticket_ids[0])
    theirs = ticket(ticket_ids[1], ticket_ids[1])
    assert may_read(mine, Reader(ticket_ids[0]))
    assert not may_read(theirs, Reader(ticket_ids[0]))
