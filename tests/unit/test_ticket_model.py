"""The ticket transition table, checked for every status against every event."""

from __future__ import annotations

import itertools

import pytest

from syncwarden.workflows.model import (
    FINAL_STATUSES,
    IllegalTransitionError,
    TicketEvent,
    TicketStatus,
    allowed_events,
    next_status,
)

S, E = TicketStatus, TicketEvent

EXPECTED: dict[tuple[TicketStatus, TicketEvent], TicketStatus] = {
    (S.AWAITING_APPROVAL, E.APPROVE): S.APPROVED,
    (S.AWAITING_APPROVAL, E.REJECT): S.REJECTED,
    (S.AWAITING_APPROVAL, E.CANCEL): S.CANCELLED,
    (S.AWAITING_APPROVAL, E.EXPIRE): S.EXPIRED,
    (S.APPROVED, E.START): S.PROVISIONING,
    (S.APPROVED, E.CANCEL): S.CANCELLED,
    (S.PROVISIONING, E.WAIT_MANUAL): S.WAITING_MANUAL,
    (S.PROVISIONING, E.COMPLETE): S.COMPLETED,
    (S.PROVISIONING, E.FAIL): S.FAILED,
    (S.WAITING_MANUAL, E.MANUAL_DONE): S.PROVISIONING,
    (S.WAITING_MANUAL, E.CANCEL): S.CANCELLED,
    (S.FAILED, E.RETRY): S.PROVISIONING,
    (S.FAILED, E.CANCEL): S.CANCELLED,
}


@pytest.mark.parametrize(("status", "event"), list(itertools.product(TicketStatus, TicketEvent)))
def test_every_status_and_event(status: TicketStatus, event: TicketEvent) -> None:
    if (status, event) in EXPECTED:
        assert next_status(status, event) is EXPECTED[(status, event)]
    else:
        with pytest.raises(IllegalTransitionError) as raised:
            next_status(status, event)
        assert raised.value.status is status
        assert str(raised.value).startswith(f"a ticket that is {status.label} cannot be ")


def test_final_statuses_have_no_way_out() -> None:
    for status in FINAL_STATUSES:
        assert allowed_events(status) == []
        assert not status.is_open


def test_every_open_status_can_be_left() -> None:
    for status in TicketStatus:
        if status.is_open:
            assert allowed_events(status), f"{status} is a dead end"


def test_messages_read_naturally() -> None:
    with pytest.raises(
        IllegalTransitionError, match="a ticket that is completed cannot be approved"
    ):
        next_status(S.COMPLETED, E.APPROVE)


def test_ticket_refs_that_cannot_be_row_ids_are_none() -> None:
    from syncwarden.workflows.records import ticket_id_from_ref

    assert ticket_id_from_ref("SW-1001") == 1
    assert ticket_id_from_ref(" sw - 1042 ") == 42
    for ref in ("SW-1001²", "SW-99999999999999999999", "SW-1000", "SW-", "SW-١٠٠٢"):
        assert ticket_id_from_ref(ref) is None, ref
