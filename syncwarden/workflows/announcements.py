"""Who hears what when a ticket moves, queued on the unit of work that moves it.

The workflow decides the audience and the words; the bot decides how they look. Every message
carries a key that names the ticket, what happened and to whom (and the ticket's version where the
same thing can happen twice), so a use case repeated after a crash queues nothing twice.
"""

from __future__ import annotations

from syncwarden.workflows import wording
from syncwarden.workflows.model import TicketEvent
from syncwarden.workflows.ports import Channel, Notification, NotificationKind, Person, TicketView
from syncwarden.workflows.records import Ticket
from syncwarden.workflows.system_actors import people_told
from syncwarden.workflows.unit_of_work import UnitOfWork
from syncwarden.workflows.views import ticket_view

APPROVAL_TEXT = {
    NotificationKind.APPROVAL_REQUESTED: "{ref}: {asked}",
    NotificationKind.APPROVAL_REMINDER: (
        "Reminder: {ref} ({asked}) is still waiting for your decision"
    ),
    NotificationKind.APPROVAL_ESCALATED: (
        "{ref} ({asked}) has waited too long for a decision and is escalated to you"
    ),
}


def status_line(view: TicketView, text: str) -> Notification:
    """The one-line status the IT channel gets as a ticket moves."""
    return Notification(NotificationKind.STATUS, view, f"{view.ref} · {view.subject.name} · {text}")


def ask_for_approval(
    work: UnitOfWork, ticket: Ticket, approvers: frozenset[str], kind: NotificationKind
) -> None:
    """Each eligible approver in a chat, and the approvals channel, get the approval card."""
    notification, eligible = _approval_request(ticket, approvers, kind)
    ref = notification.require_ticket().ref
    for approver in eligible:
        work.to_user(approver, notification, key=f"{ref}:{kind.value}:{approver}")
    work.to_channel(Channel.APPROVALS, notification, key=f"{ref}:{kind.value}:channel")


def show_in_approvals_channel(
    work: UnitOfWork, ticket: Ticket, approvers: frozenset[str], channel_key: str
) -> None:
    """The waiting ticket's card, posted to an approvals channel named after it was asked.

    ``channel_key`` names the channel, so naming the same channel again asks the bot again
    (which updates the card it already posted there) while a new channel gets its own copy.
    """
    kind = NotificationKind.APPROVAL_REQUESTED
    notification, _ = _approval_request(ticket, approvers, kind)
    key = f"{ticket.ref}:{kind.value}:channel:{channel_key}"
    work.to_channel(Channel.APPROVALS, notification, key=key)


def _approval_request(
    ticket: Ticket, approvers: frozenset[str], kind: NotificationKind
) -> tuple[Notification, list[str]]:
    """The approval card's notification, and who may decide (never the person it is about,
    nor its requester)."""
    view = ticket_view(ticket)
    excluded = {ticket.subject_id.lower(), ticket.requester_id.lower()}
    text = APPROVAL_TEXT[kind].format(ref=view.ref, asked=wording.asked(view))
    eligible = sorted(approvers - excluded)
    # The approvals channel's card lists who may see the buttons (object ids; the bot maps them
    # to Teams ids).
    return Notification(kind, view, text, {"approvers": ",".join(eligible)}), eligible


def announce_created(work: UnitOfWork, ticket: Ticket) -> None:
    view = ticket_view(ticket)
    work.to_channel(
        Channel.IT,
        status_line(view, f"new {wording.what(view)}, waiting for approval"),
        key=f"{view.ref}:status:created",
    )


def announce(
    work: UnitOfWork, ticket: Ticket, event: TicketEvent, actor: Person, comment: str = ""
) -> None:
    """A decision, an end or a retry: requester and subject hear it in their words, IT gets a
    status line, and every posted card shows the new state."""
    view = ticket_view(ticket)
    said = f' ("{comment.strip()}")' if comment.strip() else ""
    news: dict[TicketEvent, tuple[NotificationKind, str, str]] = {
        TicketEvent.APPROVE: (
            NotificationKind.APPROVED,
            f"{view.ref} was approved by {actor.name}{said}; {wording.under_way(view)}",
            f"approved by {actor.name}{said}; {wording.under_way(view)}",
        ),
        TicketEvent.REJECT: (
            NotificationKind.REJECTED,
            f"{view.ref} was rejected by {actor.name}{said}",
            f"rejected by {actor.name}{said}",
        ),
        TicketEvent.CANCEL: (
            NotificationKind.CANCELLED,
            f"{view.ref} was cancelled by {actor.name}{said}",
            f"cancelled by {actor.name}{said}",
        ),
        TicketEvent.EXPIRE: (
            NotificationKind.EXPIRED,
            f"{view.ref} expired: nobody decided in time. Ask again if you still need it.",
            "expired: nobody decided in time",
        ),
        TicketEvent.RETRY: (
            NotificationKind.STATUS,
            f"{view.ref}: IT is trying again to finish it; I'll tell you when it is done.",
            f"retried by {actor.name}",
        ),
    }
    if event not in news:
        return
    kind, to_people, to_it = news[event]
    notification = Notification(kind, view, to_people)
    # Approve, reject, cancel and expire happen once in a ticket's life; a retry may happen again.
    once = event is not TicketEvent.RETRY
    for person in people_told(view):
        key = f"{view.ref}:{kind.value}:{person}" if once else f"{view.ref}:retry:{person}"
        work.to_user(person, notification, key=key if once else f"{key}:{view.version}")
    work.to_channel(
        Channel.IT, status_line(view, to_it), key=f"{view.ref}:status:{event.value}:{view.version}"
    )
    refresh_card(work, view)


def announce_completed(work: UnitOfWork, view: TicketView) -> None:
    done = Notification(
        NotificationKind.COMPLETED, view, f"{view.ref} is done: {wording.done(view)}"
    )
    for person in people_told(view):
        work.to_user(person, done, key=f"{view.ref}:{done.kind.value}:{person}")
    tell_it(work, status_line(view, "completed"))
    refresh_card(work, view)


def announce_failed(work: UnitOfWork, view: TicketView, step: str, reason: str) -> None:
    """IT gets what failed, in plain words, with Retry and Cancel; the people it concerns are
    told it is not finished yet, without internals (they would otherwise hear nothing)."""
    text = f"failed while {wording.step_label(step)}: {wording.plain(reason)}"
    line = f"{view.ref} · {view.subject.name} · {text}"  # like every other status line
    tell_it(work, Notification(NotificationKind.FAILED, view, line))
    refresh_card(work, view)
    told = Notification(NotificationKind.FAILED, view, wording.not_finished(view))
    for person in people_told(view):
        work.to_user(person, told, key=f"{view.ref}:failed:{person}:{view.version}")


def tell_it(work: UnitOfWork, notification: Notification) -> None:
    """A ticket's news for the IT channel, once per kind and ticket version."""
    view = notification.require_ticket()
    key = f"{view.ref}:{notification.kind.value}:{view.version}"
    work.to_channel(Channel.IT, notification, key=key)


def refresh_card(work: UnitOfWork, view: TicketView) -> None:
    work.update_card(view, key=f"{view.ref}:card:{view.version}")
