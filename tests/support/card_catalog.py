"""Every card the product sends, in every state, for the renderer check and for previews."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from syncwarden.bot import cards, review_cards
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.workflows.drift_digest import DriftDigest, DriftItem
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
from syncwarden.workflows.review_views import ReviewDecision, ReviewPage, ReviewRow
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
        "drift report": cards.drift_card(
            DriftDigest(
                open_count=9,
                counts=(("leaver", 1), ("missing_member", 2), ("unenrolled_member", 6)),
                items=(
                    DriftItem(
                        "unenrolled_member:u-7",
                        "f1",
                        "unenrolled_member",
                        "Rowan Ibarra",
                        "in the sync group but not enrolled (added by hand?)",
                        (("in_group", "yes"), ("account", "enabled")),
                        ("adopt", "remove_from_group"),
                    ),
                    DriftItem(
                        "missing_member:u-2",
                        "f2",
                        "missing_member",
                        "Avery Quinlan",
                        "enrolled but not in the sync group (removed by hand?)",
                        (("in_group", "no"), ("mailbox", "avery.quinlan@example.edu")),
                        ("readd", "end_enrollment"),
                    ),
                ),
                more=4,
                opened=("SW-1044",),
            )
        ),
        "drift report: valve held": cards.drift_card(
            DriftDigest(
                open_count=40,
                counts=(("leaver", 40),),
                items=(),
                held=tuple(f"Person {n}" for n in range(40)),
                held_reason="40 leavers are past their grace period: more than the valve lets "
                "one run remove. Check the directory; if they really left, run "
                "`syncwarden reconcile --allow-mass-removal`.",
            )
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
        "request: until, with a policy maximum": cards.request_card(
            name="Ada Byron",
            upn="ada@example.edu",
            addresses=["ada@example.edu"],
            primary="ada@example.edu",
            profiles=profiles[:1],
            until="2027-06-30",
            latest=dt.date(2027, 11, 21),
            errors={"until": "the last day must be after today"},
        ),
        "approval: time-bound extension": cards.approver_card(
            dataclasses.replace(
                waiting, kind="extend", access_until=dt.datetime(2027, 7, 1, tzinfo=dt.UTC)
            ),
            now=NOW,
        ),
        "access ending: reminder with Extend": review_cards.access_ending_card(
            "Your calendar sync ends after **30 Jun 2027**. If you still need it, choose a new "
            "last day and press Extend; it is decided like a new request.",
            dt.datetime(2027, 7, 1, tzinfo=dt.UTC),
            dt.date(2027, 11, 21),
        ),
        "access ending: extension asked": review_cards.access_ending_card(
            "You asked to keep your calendar sync.",
            dt.datetime(2027, 12, 1, tzinfo=dt.UTC),
            None,
            outcome="Extension asked for: **SW-1050**. An approver has been asked.",
        ),
        "review: invitation": review_cards.review_invite_card(
            "Access review AR-3: please confirm whether 12 people still need calendar sync, "
            "by 05 Dec 2026 UTC.",
            "AR-3",
        ),
        "review: a page with more": review_cards.review_page_card(
            ReviewPage(
                "AR-3",
                NOW,
                "keep",
                tuple(
                    ReviewRow(
                        n,
                        f"Person {n}",
                        f"person.{n}@example.edu",
                        f"person.{n}@example.edu",
                        (None, ReviewDecision.KEEP, ReviewDecision.REMOVE)[n % 3],
                        None if n % 3 == 0 else "Casey Lindqvist",
                    )
                    for n in range(1, 11)
                ),
                0,
                10,
                7,
            ),
            notice="Removal requested.",
        ),
        "review: nothing left": review_cards.review_page_card(
            ReviewPage("AR-3", NOW, "remove", (), 0, None, 0)
        ),
        "review: closed": review_cards.review_page_card(
            ReviewPage("AR-3", NOW, "keep", (), 0, None, 0, closed=True),
            notice="AR-3 is closed; nothing more can be decided.",
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
