"""The cards of time-bound access and access reviews (pure functions, no I/O).

Like every card of ours, buttons are ``Action.Execute`` with an ``Action.Submit`` fallback, and
their data only says what was clicked: whether the clicker may extend this access or decide for
this person is asked again on the server (:mod:`workflows.review_decisions`,
:mod:`workflows.requests`).
"""

from __future__ import annotations

from datetime import date, datetime

from syncwarden.bot.cards import Card, _card, _execute, _facts, _text, _title, _when, until_input
from syncwarden.workflows import wording
from syncwarden.workflows.ports import Notification, NotificationKind
from syncwarden.workflows.review_views import ReviewDecision, ReviewPage, ReviewRow

REVIEW_PAGE_SIZE = 10


class AccessVerb:
    EXTEND = "access_extend"
    REVIEW_PAGE = "review_page"
    REVIEW_DECIDE = "review_decide"
    REVIEW_KEEP_ALL = "review_keep_all"


VERBS = frozenset(
    {
        AccessVerb.EXTEND,
        AccessVerb.REVIEW_PAGE,
        AccessVerb.REVIEW_DECIDE,
        AccessVerb.REVIEW_KEEP_ALL,
    }
)


def access_ending_card(
    text: str,
    until: datetime,
    latest: date | None,
    *,
    chosen: str = "",
    outcome: str | None = None,
) -> Card:
    """The reminder that time-bound access ends soon, with a new last day and Extend.

    Once an extension is asked for (``outcome``), the card says so and has no button left."""
    body = [_title("Your calendar sync is ending"), _text(text)]
    body.append(_facts([("Last day", wording.last_day(until))]))
    if outcome is not None:
        body.append(_text(outcome, weight="Bolder", spacing="Medium"))
        return _card(body)
    body.append(until_input(chosen, latest, label="Keep it until (new last day"))
    return _card(body, [_execute(AccessVerb.EXTEND, "Extend", {}, style="positive")])


def notification_card(notification: Notification) -> Card | None:
    """The card a message of time-bound access or of a review is delivered as (None: text)."""
    details = notification.details
    if notification.kind is NotificationKind.ACCESS_ENDING and details.get("until"):
        latest = date.fromisoformat(details["latest"]) if details.get("latest") else None
        until = datetime.fromisoformat(details["until"])
        return access_ending_card(notification.text, until, latest)
    if notification.kind in _REVIEW_INVITES and details.get("review"):
        return review_invite_card(notification.text, details["review"])
    return None


_REVIEW_INVITES = frozenset({NotificationKind.REVIEW_REQUESTED, NotificationKind.REVIEW_REMINDER})


def review_invite_card(text: str, review_ref: str) -> Card:
    """A reviewer's invitation: what to do, by when, and a button to the first page."""
    body = [_title(f"Access review · {review_ref}"), _text(text)]
    return _card(
        body,
        [_execute(AccessVerb.REVIEW_PAGE, "Start reviewing", {"review": review_ref, "after": 0})],
    )


def _row(row: ReviewRow, review_ref: str, start: int) -> list[Card]:
    decided = (
        f"**{'Keep' if row.decision is ReviewDecision.KEEP else 'Remove'}**"
        f" · {row.decided_by or ''}"
        if row.decision is not None
        else "not decided yet"
    )
    block: Card = {
        "type": "Container",
        "separator": True,
        "items": [
            _text(f"**{row.name}** ({row.upn})"),
            _text(f"Syncing into {row.mailbox} · {decided}", isSubtle=True, spacing="None"),
        ],
    }
    data = {"review": review_ref, "item": row.item_id, "after": start}
    actions = {
        "type": "ActionSet",
        "actions": [
            _execute(AccessVerb.REVIEW_DECIDE, "Keep", {**data, "decision": "keep"}),
            _execute(
                AccessVerb.REVIEW_DECIDE,
                "Remove",
                {**data, "decision": "remove"},
                style="destructive",
            ),
        ],
    }
    return [block, actions]


def review_page_card(page: ReviewPage, *, notice: str | None = None) -> Card:
    """One page of the people a reviewer must review: Keep / Remove per person, Keep all (the
    undecided people on this page), and Next while there are more."""
    default = "keep their access" if page.default_decision == "keep" else "lose their access"
    body: list[Card] = [_title(f"Access review · {page.ref}")]
    if notice:
        body.append(_text(notice, color="Attention"))
    if page.closed:
        body.append(_text("This review is closed; nothing more can be decided here."))
        return _card(body)
    body.append(
        _text(
            f"Does each person still need calendar sync? Open until {_when(page.closes_at)}; "
            f"people nobody decides on by then {default}. {page.undecided} left for you."
        )
    )
    if not page.rows:
        body.append(_text("Nobody left for you to review. Thank you!", weight="Bolder"))
        return _card(body)
    for row in page.rows:
        body.extend(_row(row, page.ref, page.start))
    actions: list[Card] = []
    undecided = [str(row.item_id) for row in page.rows if row.decision is None]
    if undecided:
        actions.append(
            _execute(
                AccessVerb.REVIEW_KEEP_ALL,
                "Keep all on this page",
                {"review": page.ref, "items": ",".join(undecided), "after": page.start},
                style="positive",
            )
        )
    if page.after is not None:
        actions.append(
            _execute(AccessVerb.REVIEW_PAGE, "Next", {"review": page.ref, "after": page.after})
        )
    return _card(body, actions)
