"""Who hears what when a ticket moves, queued on the unit of work that moves it.

The workflow decides the audience and the words; the bot decides how they look. Every message
carries a key that names the ticket, what happened and to whom (and the ticket's version where the
same thing can happen twice), so a use case repeated after a crash queues nothing twice.
"""

from __future__ import annotations

from workflows.model import TicketEvent
from workflows.ports import Channel, Notification, NotificationKind, Person, TicketView
from workflows.records import Ticket
from workflows.unit_of_work import UnitOfWork
from workflows.views import ticket_view

APPROVAL_TEXT = {
    NotificationKind.APPROVAL_REQUESTED: "{ref}: {requester} asks for calendar sync for {subject}",
    NotificationKind.APPROVAL_REMINDER: "Reminder: {ref} is still waiting for your decision",
    NotificationKind.APPROVAL_ESCALATED: (
        "{ref} has waited too long for a decision and is escalated to you"
    ),
}


def status_line(view: TicketView, text: str) -> Notification:
    """The one-line status the IT channel gets as a ticket moves."""
    return Notification(NotificationKind.STATUS, view, f"{view.ref} · {view.subject.name} · {text}")


def ask_for_approval(
    work: UnitOfWork, ticket: Ticket, approvers: frozenset[str], kind: NotificationKind
) -> None:
    """Each eligible approver in a chat, and the approvals channel, get the approval card."""
    view = ticket_view(ticket)
    excluded = {ticket.subject_id.lower(), ticket.requester_id.lower()}
    text = APPROVAL_TEXT[kind].format(
        ref=view.ref, requester=view.requester.name, subject=view.subject.name
    )
    eligible = sorted(approvers - excluded)
    # The approvals channel's card lists who may see the buttons (object ids; the bot maps them
    # to Teams ids).
    notification = Notification(kind, view, text, {"approvers": ",".join(eligible)})
    for approver in eligible:
        work.to_user(approver, notification, key=f"{view.ref}:{kind.value}:{approver}")
    work.to_channel(Channel.APPROVALS, notification, key=f"{view.ref}:{kind.value}:channel")


def announce_created(work: UnitOfWork, ticket: Ticket) -> None:
    view = ticket_view(ticket)
    work.to_channel(
        Channel.IT,
        status_line(view, "created, waiting for approval"),
        key=f"{view.ref}:status:created",
    )


def announce(
    work: UnitOfWork, ticket: Ticket, event: TicketEvent, actor: Person, comment: str = ""
) -> None:
    """A decision or an end: requester and subject hear it, IT sees a status line, cards update."""
    view = ticket_view(ticket)
    said = f' ("{comment.strip()}")' if comment.strip() else ""
    news = {
        TicketEvent.APPROVE: (
            NotificationKind.APPROVED,
            f"{view.ref} was approved by {actor.name}{said}; setting it up now",
        ),
        TicketEvent.REJECT: (
            NotificationKind.REJECTED,
            f"{view.ref} was rejected by {actor.name}{said}",
        ),
        TicketEvent.CANCEL: (
            NotificationKind.CANCELLED,
            f"{view.ref} was cancelled by {actor.name}{said}",
        ),
        TicketEvent.EXPIRE: (
            NotificationKind.EXPIRED,
            f"{view.ref} expired: nobody decided in time. Ask again if you still need it.",
        ),
    }
    if event not in news:
        return
    kind, text = news[event]
    notification = Notification(kind, view, text)
    for person in sorted({view.requester.id, view.subject.id}):
        work.to_user(person, notification, key=f"{view.ref}:{kind.value}:{person}")
    work.to_channel(
        Channel.IT, status_line(view, text), key=f"{view.ref}:status:{event.value}:{view.version}"
    )
    refresh_card(work, view)


def announce_completed(work: UnitOfWork, view: TicketView) -> None:
    done = Notification(
        NotificationKind.COMPLETED,
        view,
        f"{view.ref} is done: calendar sync is set up for {view.subject.name}",
    )
    for person in sorted({view.requester.id, view.subject.id}):
        work.to_user(person, done, key=f"{view.ref}:{done.kind.value}:{person}")
    tell_it(work, status_line(view, "completed"))
    refresh_card(work, view)


def tell_it(work: UnitOfWork, notification: Notification) -> None:
    """A ticket's news for the IT channel, once per kind and ticket version."""
    view = notification.require_ticket()
    key = f"{view.ref}:{notification.kind.value}:{view.version}"
    work.to_channel(Channel.IT, notification, key=key)


def refresh_card(work: UnitOfWork, view: TicketView) -> None:
    work.update_card(view, key=f"{view.ref}:card:{view.version}")
