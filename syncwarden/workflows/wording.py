"""The words of every ticket message, for each kind of ticket (enroll, change, remove).

A removal that "is set up" or a change being "set up now" tells people the wrong thing, so each
kind has its own phrase at every stage. Messages to people name no internals (no step names, no
URLs, no ids); the technical detail stays in the log and on the ticket's audit trail. IT's status
lines already start with the ticket number and the person, so their text repeats neither.
"""

from __future__ import annotations

import re

from syncwarden.workflows.model import TicketKind
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.steps import StepName

_URL = re.compile(r"https?://\S+")


def _kind(view: TicketView) -> TicketKind:
    try:
        return TicketKind(view.kind)
    except ValueError:
        return TicketKind.ENROLL


def asked(view: TicketView) -> str:
    """What the ticket asks for, as approvers read it."""
    subject, mailbox = view.subject.name, view.mailbox
    if view.requester.id.lower() == view.subject.id.lower():
        return {
            TicketKind.ENROLL: f"{subject} asks for calendar sync",
            TicketKind.CHANGE: f"{subject} asks to move their calendar sync to {mailbox}",
            TicketKind.REMOVE: f"{subject} asks to stop their calendar sync",
        }[_kind(view)]
    requester = view.requester.name
    return {
        TicketKind.ENROLL: f"{requester} asks for calendar sync for {subject}",
        TicketKind.CHANGE: f"{requester} asks to move {subject}'s calendar sync to {mailbox}",
        TicketKind.REMOVE: f"{requester} asks to stop calendar sync for {subject}",
    }[_kind(view)]


def what(view: TicketView) -> str:
    """The ticket's request in a few words, for IT's status lines."""
    return {
        TicketKind.ENROLL: "calendar sync request",
        TicketKind.CHANGE: f"request to move calendar sync to {view.mailbox}",
        TicketKind.REMOVE: "request to stop calendar sync",
    }[_kind(view)]


def under_way(view: TicketView) -> str:
    """What happens now that it is approved."""
    return {
        TicketKind.ENROLL: "setting it up now",
        TicketKind.CHANGE: "moving it now",
        TicketKind.REMOVE: "turning it off now",
    }[_kind(view)]


def done(view: TicketView) -> str:
    """The outcome, told to the people it concerns."""
    who = view.subject.name
    return {
        TicketKind.ENROLL: f"calendar sync is set up for {who}",
        TicketKind.CHANGE: f"calendar sync for {who} now goes to {view.mailbox}",
        TicketKind.REMOVE: f"calendar sync is turned off for {who}",
    }[_kind(view)]


def not_finished(view: TicketView) -> str:
    """A failed ticket, for the people it concerns: no internals, and what happens next."""
    doing = {
        TicketKind.ENROLL: "setting up calendar sync",
        TicketKind.CHANGE: "moving calendar sync",
        TicketKind.REMOVE: "turning off calendar sync",
    }[_kind(view)]
    return (
        f"{view.ref}: {doing} for {view.subject.name} could not be finished yet. IT has been "
        "told and will try again or get in touch; there is nothing you need to do."
    )


STEP_LABELS = {
    StepName.MAP_PROFILE: "linking the scheduling profile to the mailbox",
    StepName.ADD_TO_GROUP: "adding them to the sync group",
    StepName.SEND_INSTRUCTIONS: "sending the set-up instructions",
    StepName.REQUEST_INITIAL_SYNC: "starting the first sync",
    StepName.REMOVE_FROM_GROUP: "removing them from the sync group",
    StepName.DEACTIVATE_MAPPING: "unlinking the scheduling profile",
    StepName.REMOVE_SYNCED_EVENTS: "removing the synced events from their calendar",
}


def step_label(step: str) -> str:
    try:
        return STEP_LABELS[StepName(step)]
    except ValueError:
        return step.replace("_", " ")


def plain(message: str) -> str:
    """An error for a message to people: addresses of services (which carry tenant ids) cut."""
    return _URL.sub("(address in the log)", message).strip()
