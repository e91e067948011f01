"""Ticket snapshots as JSON: the outbox and the card store read back exactly what they wrote."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.workflows.ports import DecisionView, Person, TicketView
from syncwarden.workflows.view_json import ticket_from_json, ticket_to_json

_text = st.text(max_size=20)
_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_people = st.builds(Person, id=_text, name=_text, upn=_text)
_decisions = st.builds(
    DecisionView, approver_name=_text, approve=st.booleans(), comment=_text, decided_at=_moments
)
_views = st.builds(
    TicketView,
    ref=_text,
    kind=_text,
    status=_text,
    version=st.integers(min_value=0, max_value=2**31),
    subject=_people,
    subject_mail=_text,
    requester=_people,
    mailbox=_text,
    previous_mailbox=st.none() | _text,
    profile_id=st.none() | _text,
    profile_name=st.none() | _text,
    justification=_text,
    created_at=_moments,
    decisions=st.lists(_decisions, max_size=3).map(tuple),
    failure_reason=st.none() | _text,
    waiting_step=st.none() | _text,
)


def _as_first_written(view: TicketView) -> dict[str, Any]:
    """The JSON as the first version wrote it (``dataclasses.asdict``), which rows already in
    the outbox and the card store hold."""
    data = asdict(view)
    data["created_at"] = view.created_at.isoformat()
    data["decisions"] = [
        {**asdict(d), "decided_at": d.decided_at.isoformat()} for d in view.decisions
    ]
    return data


@given(_views)
def test_a_view_is_written_as_before_and_reads_back_the_same(view: TicketView) -> None:
    written = ticket_to_json(view)
    assert written == _as_first_written(view)
    assert ticket_from_json(json.loads(json.dumps(written))) == view


@given(_views)
def test_the_json_shares_nothing_with_the_view(view: TicketView) -> None:
    """Each message gets its own copy: changing one payload changes no other, nor the view."""
    first, second = ticket_to_json(view), ticket_to_json(view)
    first["subject"]["name"] = "changed"
    for decision in first["decisions"]:
        decision["comment"] = "changed"
    assert second == ticket_to_json(view) == _as_first_written(view)
