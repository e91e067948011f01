"""Every card the product sends, in every state, for the renderer check and for previews."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from syncwarden.bot import cards
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import (
    Page,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
    UserState,
)
from syncwarden.workflows.ports import DecisionView
from syncwarden.workflows.service import EnrollmentView
from tests.support.tickets import sample_ticket

NOW = dt.datetime(2026, 11, 21, 15, 0, tzinfo=dt.UTC)


def _enrolled(number: int) -> EnrollmentView:
    return EnrollmentView(
        f"u-{number}",
        f"Person {number}",
        f"person.{number}@example.edu",
        f"person.{number}@example.edu",
        False,
        NOW,
        "Syncwarden's app is missing a Microsoft Graph application permission",
        last_error_kind="permission",
    )


def catalog() -> dict[str, dict[str, Any]]:
    done = sample_ticket()
    waiting = dataclasses.replace(done, status="awaiting_approval", decisions=(), version=1)
    on_behalf = dataclasses.replace(
        waiting, requester=dataclasses.replace(done.requester, id="u-2", name="Dana Whitfield")
    )
    rejected = dataclasses.replace(
        done,
        status="rejected",
        decisions=(DecisionView("Casey Lindqvist", False, "Not this term", NOW),),
    )
    failed = dataclasses.replace(
        done, status="failed", failure_reason="add_to_group: the app lacks Exchange.ManageAsApp"
    )
    change = dataclasses.replace(waiting, kind="change", previous_mailbox="ada.old@example.edu")
    profiles = [
        Profile("p-1", "Ada Byron (Advising)", "ada@example.edu"),
        Profile("p-2", "Ada Byron (Careers)", None),
    ]
    return {
        "approval: waiting, seen by all": cards.approval_card(
            waiting, now=NOW, approver_ids=["29:casey", "29:emerson"]
        ),
        "approval: waiting, on behalf": cards.approval_card(
            on_behalf, now=NOW, approver_ids=["29:casey"]
        ),
        "approval: approver's view": cards.approver_card(waiting, now=NOW),
        "approval: approver's view, stale click": cards.approver_card(
            waiting, now=NOW, notice="SW-1042 changed since this card was sent."
        ),
        "approval: refused click, no buttons": cards.approval_card(
            waiting, now=NOW, notice="You cannot approve a request about yourself."
        ),
        "request: sent": cards.request_sent_card(waiting, now=NOW),
        "approval: decided, approved": cards.approval_card(done, now=NOW),
        "approval: decided, rejected": cards.approval_card(rejected, now=NOW),
        "approval: change request": cards.approver_card(change, now=NOW),
        "status: completed": cards.status_card(done, "SW-1042 · Ada Byron · completed", now=NOW),
        "status: failed with retry": cards.status_card(
            failed,
            "SW-1042 · Ada Byron · failed while adding them to the sync group: access denied",
            now=NOW,
        ),
        "manual task": cards.manual_task_card(
            done,
            {
                "action": "Map the scheduling profile",
                "profile_id": "p-1",
                "mailbox": "ada@example.edu",
                "active": "yes",
            },
            now=NOW,
        ),
        "request: one profile": cards.request_card(
            name="Ada Byron",
            upn="ada@example.edu",
            addresses=["ada@example.edu", "ada.byron@example.org"],
            primary="ada@example.edu",
            profiles=profiles[:1],
        ),
        "request: candidates and errors": cards.request_card(
            name="Ada Byron",
            upn="ada@example.edu",
            addresses=["ada@example.edu"],
            primary="ada@example.edu",
            profiles=profiles,
            errors={"profile": "Several profiles match; choose one.", "mailbox": "Not yours"},
        ),
        "users: two people": cards.users_card(
            Page(
                (
                    EnrollmentView(
                        "u-1",
                        "Ada Byron",
                        "ada@example.edu",
                        "ada@example.edu",
                        False,
                        NOW,
                        None,
                        last_sync_summary=(
                            "2 created, 0 updated, 0 deleted, 0 re-created, 5 busy blocks"
                        ),
                    ),
                    EnrollmentView(
                        "u-2",
                        "Alan Turing",
                        "alan@example.edu",
                        "alan@example.edu",
                        True,
                        None,
                        "Exchange refuses the mailbox (ErrorAccessDenied)",
                        last_error_kind="not_in_scope",
                    ),
                )
            ),
            now=NOW,
        ),
        "users: nobody": cards.users_card(Page(()), now=NOW),
        "users: failing, a page with more": cards.users_card(
            Page(tuple(_enrolled(n) for n in range(25)), UsersCursor("person 24", 1024)),
            now=NOW,
            wanted=UsersFilter(UserState.FAILING, "permission", "Ann Lee"),
            first=26,
        ),
        "users: nobody matches": cards.users_card(
            Page(()), now=NOW, wanted=UsersFilter(UserState.PAUSED)
        ),
        "tickets: open, the whole list": cards.tickets_card(
            Page((waiting, on_behalf, failed)), now=NOW
        ),
        "tickets: failed, a page with more": cards.tickets_card(
            Page(tuple(failed for _ in range(25)), TicketsCursor(42)),
            now=NOW,
            wanted=TicketsFilter(TicketStatus.FAILED, "ann"),
        ),
        "credential alert": cards.credential_alert_card(
            "The client secret of **Payroll Feed** expires in 7 days (Sat 29 Nov 2026)\n\n"
            "App: Payroll Feed (app id 1111) · credential 'payroll' (abc…) · key id k-1\n\n"
            "Owners: Dana Whitfield\n\n1. Create a new client secret…\n2. …",
            "applications:o-1:k-1:7",
        ),
        "credential alert: acknowledged": cards.credential_alert_card(
            "The client secret of **Payroll Feed** expires in 7 days",
            None,
            outcome="Acknowledged by Dana Whitfield: Payroll Feed",
        ),
        "request: no profile": cards.request_card(
            name="Ada Byron",
            upn="ada@example.edu",
            addresses=["ada@example.edu"],
            primary="ada@example.edu",
            profiles=[],
            errors={"profile": "No scheduling profile matches you yet."},
        ),
    }
