"""A ticket snapshot for tests that need one without running the workflow."""

from __future__ import annotations

import datetime as dt

from syncwarden.workflows.ports import DecisionView, Person, TicketView


def sample_ticket() -> TicketView:
    ada = Person("u-1", "Ada Byron", "ada@example.edu")
    return TicketView(
        ref="SW-1042",
        kind="enroll",
        status="completed",
        version=5,
        subject=ada,
        subject_mail="ada@example.edu",
        requester=ada,
        mailbox="ada@example.edu",
        previous_mailbox=None,
        profile_id="p-1",
        profile_name="Ada B.",
        justification="tutoring",
        created_at=dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC),
        decisions=(
            DecisionView("Casey", True, "ok", dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)),
        ),
    )
