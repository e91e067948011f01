"""The Adaptive Cards Syncwarden sends, built from ticket snapshots (pure functions, no I/O).

Buttons are ``Action.Execute`` (the Universal Actions model: the click comes back to us as an
``adaptiveCard/action`` invoke and we answer with the updated card) with an ``Action.Submit``
fallback for clients that predate it. Every action on a ticket carries the ticket reference and
the card's version, so a stale or repeated click is recognised; a list's Next button carries the
list's filter and where its page ended. Who may click is decided on the server from the
clicker's identity, never from anything in the card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from syncwarden.bot.list_filters import tickets_filter_text, users_filter_text
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.workflows import wording
from syncwarden.workflows.drift_digest import DriftDigest, DriftItem
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import Page, TicketScope, TicketsFilter, UsersFilter
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.repairs import FIX_LABELS, Fix
from syncwarden.workflows.service import EnrollmentView

CARD_VERSION = "1.5"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_REFRESH_USERS = 60  # Teams refreshes a card for at most 60 listed users

Card = dict[str, Any]


class Verb:
    APPROVE = "approve"
    REJECT = "reject"
    REFRESH = "refresh"
    RETRY = "retry"
    CANCEL = "cancel"
    MANUAL_DONE = "manual_done"
    SUBMIT_REQUEST = "submit_request"
    ACKNOWLEDGE = "credential_acknowledge"
    SNOOZE = "credential_snooze"
    USERS_PAGE = "users_page"
    TICKETS_PAGE = "tickets_page"
    DRIFT_FIX = "drift_fix"
    DRIFT_IGNORE = "drift_ignore"


def _card(body: list[Card], actions: list[Card] | None = None, **extra: Any) -> Card:
    card: Card = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": CARD_VERSION, "body": body}
    if actions:
        card["actions"] = actions
    card.update(extra)
    return card


def _title(text: str) -> Card:
    return {"type": "TextBlock", "text": text, "weight": "Bolder", "size": "Medium", "wrap": True}


def _text(text: str, **extra: Any) -> Card:
    return {"type": "TextBlock", "text": text, "wrap": True, **extra}


def _facts(facts: Sequence[tuple[str, str]]) -> Card:
    return {
        "type": "FactSet",
        "facts": [{"title": title, "value": value} for title, value in facts if value],
    }


def _execute(verb: str, title: str, data: Mapping[str, Any], *, style: str | None = None) -> Card:
    """An Action.Execute with an Action.Submit fallback carrying the same verb and data."""
    payload = {"verb": verb, **data}
    action: Card = {
        "type": "Action.Execute",
        "verb": verb,
        "title": title,
        "data": dict(payload),
        "fallback": {"type": "Action.Submit", "title": title, "data": dict(payload)},
    }
    if style:
        action["style"] = style
    return action


def _when(moment: datetime) -> str:
    return moment.strftime("%d %b %Y %H:%M UTC")


def age_text(created_at: datetime, now: datetime) -> str:
    minutes = max(0, int((now - created_at).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def _ticket_facts(view: TicketView, now: datetime) -> list[tuple[str, str]]:
    facts = [
        ("Person", f"{view.subject.name} ({view.subject.upn})"),
        ("Mailbox", view.mailbox),
        ("Scheduling profile", view.profile_name or "not named"),
        (
            "Requested by",
            view.requester.name if view.requester.id != view.subject.id else "themself",
        ),
        ("Why", view.justification),
    ]
    if view.previous_mailbox:
        facts.insert(2, ("Replaces", view.previous_mailbox))
    if view.access_until:
        facts.append(("Until", wording.last_day(view.access_until)))
    if view.status == TicketStatus.AWAITING_APPROVAL:
        facts.append(("Waiting", age_text(view.created_at, now)))
    return facts


_KIND_TITLES = {
    "enroll": "Calendar sync request",
    "change": "Calendar sync change",
    "remove": "Calendar sync removal",
    "extend": "Calendar sync extension",
}


def _decisions(view: TicketView) -> list[Card]:
    lines = []
    for decision in view.decisions:
        verdict = "Approved" if decision.approve else "Rejected"
        comment = f": “{decision.comment}”" if decision.comment else ""
        lines.append(
            _text(
                f"**{verdict}** by {decision.approver_name}, {_when(decision.decided_at)}{comment}"
            )
        )
    return lines


def approval_card(
    view: TicketView,
    *,
    now: datetime,
    approver_ids: Sequence[str] = (),
    notice: str | None = None,
) -> Card:
    """What everyone sees: the request and its state. Approvers get buttons via ``refresh``;
    ``notice`` says why a click changed nothing, on the card the clicker keeps."""
    body = [
        _title(f"{_KIND_TITLES.get(view.kind, 'Request')} · {view.ref}"),
        _facts(_ticket_facts(view, now)),
        *_decisions(view),
        _text(f"Status: **{TicketStatus(view.status).label}**", spacing="Medium"),
    ]
    if notice:
        body.append(_text(notice, color="Attention"))
    extra: dict[str, Any] = {}
    if view.status == TicketStatus.AWAITING_APPROVAL and approver_ids:
        extra["refresh"] = {
            "action": {
                "type": "Action.Execute",
                "verb": Verb.REFRESH,
                "data": {"verb": Verb.REFRESH, "ticket": view.ref, "version": view.version},
            },
            "userIds": list(approver_ids)[:MAX_REFRESH_USERS],
        }
    return _card(body, **extra)


def approver_card(view: TicketView, *, now: datetime, notice: str | None = None) -> Card:
    """The approver's view: the same facts, a comment box and Approve / Reject."""
    if view.status != TicketStatus.AWAITING_APPROVAL:
        return approval_card(view, now=now, notice=notice)
    data = {"ticket": view.ref, "version": view.version}
    body = [
        _title(f"{_KIND_TITLES.get(view.kind, 'Request')} · {view.ref}"),
        _facts(_ticket_facts(view, now)),
        *_decisions(view),
        {
            "type": "Input.Text",
            "id": "comment",
            "label": "Comment (optional)",
            "isMultiline": True,
            "maxLength": 500,
        },
    ]
    if notice:
        body.append(_text(notice, color="Attention"))
    actions = [
        _execute(Verb.APPROVE, "Approve", data, style="positive"),
        _execute(Verb.REJECT, "Reject", data, style="destructive"),
    ]
    return _card(body, actions)


def status_card(view: TicketView, text: str, *, now: datetime) -> Card:
    """The IT channel's line for a ticket; a failed ticket gets Retry and Cancel."""
    body = [_text(text, weight="Bolder"), _facts(_ticket_facts(view, now))]
    if view.failure_reason:
        body.append(_text(f"Failure: {view.failure_reason}", color="Attention"))
    actions = None
    if view.status == TicketStatus.FAILED:
        data = {"ticket": view.ref, "version": view.version}
        actions = [
            _execute(Verb.RETRY, "Retry", data, style="positive"),
            _execute(Verb.CANCEL, "Cancel", data, style="destructive"),
        ]
    return _card(body, actions)


def manual_task_card(view: TicketView, task: Mapping[str, str], *, now: datetime) -> Card:
    """A task for IT where no API exists: the exact values to enter, and a Done button."""
    values = [
        (key.replace("_", " ").capitalize(), str(value))
        for key, value in task.items()
        if key != "action"
    ]
    body = [
        _title(f"Manual step · {view.ref}"),
        _text(task.get("action", "Complete this step by hand"), weight="Bolder"),
        _facts(values),
        _text("Enter these values in the scheduling system's admin console, then press Done."),
    ]
    data = {"ticket": view.ref, "version": view.version}
    return _card(body, [_execute(Verb.MANUAL_DONE, "Done", data, style="positive")])


def request_card(
    *,
    name: str,
    upn: str,
    addresses: Sequence[str],
    primary: str,
    profiles: Sequence[Profile],
    chosen_profile: str | None = None,
    justification: str = "",
    errors: Mapping[str, str] | None = None,
    subject_id: str | None = None,
    until: str = "",
    latest: date | None = None,
) -> Card:
    """What a person fills in to ask for calendar sync; ``errors`` are shown next to the fields.

    ``subject_id`` is set when IT asks on someone's behalf; the server checks again who may.
    ``latest`` is the policy's last possible day for time-bound access (None: no limit, and the
    "until" field may stay empty for access with no end).
    """
    errors = errors or {}
    body: list[Card] = [
        _title("Ask for calendar sync"),
        _facts([("Person", f"{name} ({upn})")]),
        {
            "type": "Input.ChoiceSet",
            "id": "mailbox",
            "label": "Sync into the mailbox of",
            "isRequired": True,
            "errorMessage": "Choose one of your addresses",
            "value": primary,
            "choices": [{"title": address, "value": address} for address in addresses or [primary]],
        },
    ]
    if errors.get("mailbox"):
        body.append(_text(errors["mailbox"], color="Attention"))
    if profiles:
        body.append(
            {
                "type": "Input.ChoiceSet",
                "id": "profile",
                "label": "Your scheduling profile",
                "isRequired": True,
                "errorMessage": "Choose your profile",
                "value": chosen_profile or (profiles[0].id if len(profiles) == 1 else ""),
                "choices": [
                    {"title": f"{p.name} ({p.email})" if p.email else p.name, "value": p.id}
                    for p in profiles
                ],
            }
        )
    else:
        body.append(_text("No scheduling profile matches your addresses yet.", color="Attention"))
    if errors.get("profile"):
        body.append(_text(errors["profile"], color="Attention"))
    body.append(
        {
            "type": "Input.Text",
            "id": "justification",
            "label": "Why do you need it? (optional)",
            "isMultiline": True,
            "maxLength": 500,
            "value": justification,
        }
    )
    body.append(until_input(until, latest, label="Until (last day"))
    if errors.get("until"):
        body.append(_text(errors["until"], color="Attention"))
    if errors.get("subject"):
        body.append(_text(errors["subject"], color="Attention"))
    data = {"subject": subject_id} if subject_id else {}
    return _card(body, [_execute(Verb.SUBMIT_REQUEST, "Send request", data)])


def until_input(value: str, latest: date | None, *, label: str) -> Card:
    """The date field of time-bound access; the server checks the date again."""
    field: Card = {"type": "Input.Date", "id": "until", "value": value}
    if latest is None:
        field["label"] = f"{label}; optional)"
    else:
        field["label"] = f"{label}; at most {latest.strftime('%d %b %Y')})"
        field["max"] = latest.isoformat()
    return field


def request_sent_card(view: TicketView, *, now: datetime) -> Card:
    """The request card once sent: what was asked, its number and state, and no button left to
    press again (the confirmation itself goes into the chat)."""
    body = [
        _title(f"{_KIND_TITLES.get(view.kind, 'Request')} · {view.ref}"),
        _facts(_ticket_facts(view, now)),
        _text(f"Sent · **{TicketStatus(view.status).label}**", spacing="Medium"),
    ]
    return _card(body)


USERS_HINT = (
    "Narrow the list: **users failing**, **users paused**, **users ok**, "
    "**users error:permission**, **users name:ann** (the start of a name or address)."
)
TICKETS_HINT = (
    "Other tickets: **tickets all**, **tickets failed**, **tickets completed**, "
    "**tickets awaiting**, **tickets error:permission**, **tickets name:ann** (the start of a "
    "name or UPN)."
)


def _hint(text: str) -> Card:
    return _text(text, isSubtle=True, size="Small", spacing="Medium")


def users_card(
    page: Page[EnrollmentView], *, now: datetime, wanted: UsersFilter | None = None, first: int = 1
) -> Card:
    """One page of the users-to-sync registry as a table: name, address, sync on/off, last
    sync, status; with a Next button while there are more. ``first`` is the number of the
    page's first row, for the title."""
    wanted = wanted or UsersFilter()
    filters = users_filter_text(wanted)
    rows = page.rows
    header = _row(["Name", "Address", "Sync", "Last sync", "Status"], bold=True)
    lines = [
        _row(
            [
                row.name,
                row.mailbox,
                "off" if row.paused else "on",
                age_text(row.last_success_at, now) + " ago" if row.last_success_at else "never",
                _sync_status(row),
            ]
        )
        for row in rows
    ]
    body: list[Card] = [_title(_list_title("Calendar sync users", filters, page, first))]
    if not rows:
        body.append(_text(_no_users(filters, first)))
    else:
        body.append(
            {
                "type": "Table",
                "firstRowAsHeaders": True,
                "columns": [{"width": w} for w in (3, 4, 2, 2, 3)],
                "rows": [header, *lines],
            }
        )
    body.append(_hint(USERS_HINT))
    return _card(body, _next_page(Verb.USERS_PAGE, filters, page, first))


def _no_users(filters: str, first: int) -> str:
    if first > 1:
        return "No more people on the list."  # those after the last page went since
    return "Nobody matches." if filters else "Nobody is enrolled yet."


def tickets_card(
    page: Page[TicketView], *, now: datetime, wanted: TicketsFilter | None = None, first: int = 1
) -> Card:
    """One page of tickets, newest first: number, person, kind, status and age; with a Next
    button while there are more."""
    wanted = wanted or TicketsFilter()
    filters = tickets_filter_text(wanted)
    header = _row(["Ticket", "Person", "Kind", "Status", "Age"], bold=True)
    lines = [
        _row(
            [
                view.ref,
                view.subject.name,
                view.kind,
                _ticket_status(view),
                age_text(view.created_at, now),
            ]
        )
        for view in page.rows
    ]
    body: list[Card] = [_title(_list_title(tickets_heading(wanted), _named(wanted), page, first))]
    if not page.rows:
        body.append(_text("No more tickets."))
    else:
        body.append(
            {
                "type": "Table",
                "firstRowAsHeaders": True,
                "columns": [{"width": w} for w in (2, 3, 2, 3, 2)],
                "rows": [header, *lines],
            }
        )
    body.append(_hint(TICKETS_HINT))
    return _card(body, _next_page(Verb.TICKETS_PAGE, filters, page, first))


def tickets_heading(wanted: TicketsFilter) -> str:
    """ "Open tickets", "All tickets", "Failed tickets", …"""
    if wanted.scope is TicketScope.ALL:
        return "All tickets"
    if wanted.scope is TicketScope.OPEN:
        return "Open tickets"
    return f"{TicketStatus(wanted.scope).label.capitalize()} tickets"


def _named(wanted: TicketsFilter) -> str:
    """The filter but its status (the heading says the status): error kind and name."""
    return tickets_filter_text(
        TicketsFilter(scope=TicketScope.OPEN, name=wanted.name, error_kind=wanted.error_kind)
    )


def _ticket_status(view: TicketView) -> str:
    label = TicketStatus(view.status).label
    return f"{label}: {view.waiting_step}" if view.waiting_step else label


def _list_title(heading: str, filters: str, page: Page[Any], first: int) -> str:
    """The heading, the filter, and the count when this page is the whole list, else which
    rows these are ("rows 26 to 50"): neither needs a COUNT over the whole table."""
    named = f"{heading} · {filters}" if filters else heading
    if first == 1 and page.after is None:
        return f"{named} ({len(page.rows)})"
    last = first + len(page.rows) - 1
    return f"{named}: rows {first} to {last}" if page.rows else named


def _next_page(verb: str, filters: str, page: Page[Any], first: int) -> list[Card] | None:
    """The Next button: the filter as text and the cursor where this page ended. The server
    reads both as untrusted input and checks again who clicked."""
    if page.after is None:
        return None
    data = {"filters": filters, "after": page.after.token(), "first": first + len(page.rows)}
    return [_execute(verb, "Next page", data)]


def _sync_status(row: EnrollmentView) -> str:
    if row.last_error:
        return f"problem ({row.last_error_kind or 'other'}): {row.last_error[:80]}"
    return f"ok: {row.last_sync_summary}" if row.last_sync_summary else "ok"


def _row(cells: Sequence[str], *, bold: bool = False) -> Card:
    return {
        "type": "TableRow",
        "cells": [
            {"type": "TableCell", "items": [_text(cell, weight="Bolder") if bold else _text(cell)]}
            for cell in cells
        ],
    }


def credential_alert_card(text: str, alert_key: str | None, *, outcome: str | None = None) -> Card:
    """A credential alert for the IT channel; Acknowledge and Snooze until someone has acted."""
    paragraphs = [_text(part) for part in text.split("\n\n") if part.strip()]
    body = [*paragraphs]
    if outcome:
        body.append(_text(outcome, weight="Bolder", spacing="Medium"))
    actions = None
    if alert_key and not outcome:
        data = {"alert": alert_key}
        actions = [
            _execute(Verb.ACKNOWLEDGE, "Acknowledge", data, style="positive"),
            _execute(Verb.SNOOZE, "Snooze 1 day", data),
        ]
    return _card(body, actions)


DRIFT_KIND_LABELS = {
    "unenrolled_member": "In the group, not enrolled",
    "missing_member": "Enrolled, not in the group",
    "mapping_missing": "Scheduling mapping missing",
    "leaver": "Left (account disabled or deleted)",
    "mover": "Moved (new primary address)",
    "mailbox_gone": "Mailbox gone",
}


def drift_card(digest: DriftDigest, *, title: str | None = None) -> Card:
    """Reconciliation's report for the IT channel: the open differences by kind, the first
    new ones each with its fixes and Ignore, and what the run did by itself."""
    new = len(digest.items) + digest.more
    heading = title or (
        f"Access drift: {new} new difference{'s' if new != 1 else ''}"
        if new
        else "Access drift: what reconciliation did"
    )
    body: list[Card] = [
        _title(heading),
        _text(f"{digest.open_count} open in all", isSubtle=True, spacing="None"),
        _facts([(DRIFT_KIND_LABELS.get(kind, kind), str(count)) for kind, count in digest.counts]),
    ]
    for item in digest.items:
        body.append(_drift_item(item))
    if digest.more:
        body.append(
            _hint(f"And {digest.more} more: `syncwarden reconcile` lists and fixes them all.")
        )
    if digest.opened:
        body.append(
            _text("Opened by reconciliation: " + ", ".join(digest.opened), spacing="Medium")
        )
    if digest.held_reason:
        body.append(_text(digest.held_reason, color="Attention", weight="Bolder", spacing="Medium"))
    return _card(body)


def _drift_item(item: DriftItem) -> Card:
    facts = " · ".join(f"{name.replace('_', ' ')}: {value}" for name, value in item.facts)
    buttons = [
        _execute(
            Verb.DRIFT_FIX,
            _fix_label(fix),
            {"finding": item.key, "fix": fix, "seen": item.fingerprint},
            style="positive" if position == 0 else None,
        )
        for position, fix in enumerate(item.fixes)
    ]
    buttons.append(
        _execute(Verb.DRIFT_IGNORE, "Ignore", {"finding": item.key, "seen": item.fingerprint})
    )
    return {
        "type": "Container",
        "separator": True,
        "spacing": "Medium",
        "items": [
            _text(f"**{item.name}**: {item.meaning}"),
            _text(facts, isSubtle=True, size="Small", spacing="None"),
            {"type": "ActionSet", "actions": buttons},
        ],
    }


def _fix_label(fix: str) -> str:
    try:
        return FIX_LABELS[Fix(fix)]
    except ValueError:
        return fix.replace("_", " ").capitalize()
