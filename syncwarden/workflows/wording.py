"""The words of every ticket message, for each kind of ticket (enroll, change, remove).

A removal that "is set up" or a change being "set up now" tells people the wrong thing, so each
kind has its own phrase at every stage. Messages to people name no internals (no step names, no
URLs, no ids); the technical detail stays in the log and on the ticket's audit trail. IT's status
lines already start with the ticket number and the person, so their text repeats neither.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from syncwarden.workflows.model import TicketKind
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.steps import StepName

_URL = re.compile(r"https?://\S+")


def _kind(view: TicketView) -> TicketKind:
    try:
        return TicketKind(view.kind)
    except ValueError:
        return TicketKind.ENROLL


def _until(view: TicketView) -> str:
    """' until 31 Mar 2027' for time-bound access, nothing for open-ended access."""
    return f" until {last_day(view.access_until)}" if view.access_until else ""


def last_day(until: datetime) -> str:
    """The last day of access that ends at ``until`` (the midnight after it), as people say it."""
    return (until - timedelta(seconds=1)).strftime("%d %b %Y")


def asked(view: TicketView) -> str:
    """What the ticket asks for, as approvers read it."""
    subject, mailbox = view.subject.name, view.mailbox
    if view.requester.id.lower() == view.subject.id.lower():
        return {
            TicketKind.ENROLL: f"{subject} asks for calendar sync",
            TicketKind.CHANGE: f"{subject} asks to move their calendar sync to {mailbox}",
            TicketKind.REMOVE: f"{subject} asks to stop their calendar sync",
            TicketKind.EXTEND: f"{subject} asks to keep their calendar sync{_until(view)}",
            **_repairs_asked(view, subject, by=f"{subject} asks to "),
        }[_kind(view)]
    requester = view.requester.name
    return {
        TicketKind.ENROLL: f"{requester} asks for calendar sync for {subject}",
        TicketKind.CHANGE: f"{requester} asks to move {subject}'s calendar sync to {mailbox}",
        TicketKind.REMOVE: f"{requester} asks to stop calendar sync for {subject}",
        TicketKind.EXTEND: f"{requester} asks to keep calendar sync for {subject}{_until(view)}",
        **_repairs_asked(view, subject, by=f"{requester} asks to "),
    }[_kind(view)]


def _repairs_asked(view: TicketView, subject: str, *, by: str) -> dict[TicketKind, str]:
    """The one-step repairs IT chooses on a drift finding."""
    return {
        TicketKind.READD: f"{by}put {subject} back into the sync group",
        TicketKind.REMAP: f"{by}map {subject}'s scheduling profile to {view.mailbox} again",
        TicketKind.UNGROUP: f"{by}take {subject} out of the sync group (not enrolled)",
    }


def what(view: TicketView) -> str:
    """The ticket's request in a few words, for IT's status lines."""
    return {
        TicketKind.ENROLL: "calendar sync request",
        TicketKind.CHANGE: f"request to move calendar sync to {view.mailbox}",
        TicketKind.REMOVE: "request to stop calendar sync",
        TicketKind.EXTEND: f"request to keep calendar sync{_until(view)}",
        TicketKind.READD: "repair: back into the sync group",
        TicketKind.REMAP: "repair: scheduling mapping written again",
        TicketKind.UNGROUP: "repair: out of the sync group (not enrolled)",
    }[_kind(view)]


def under_way(view: TicketView) -> str:
    """What happens now that it is approved."""
    return {
        TicketKind.ENROLL: "setting it up now",
        TicketKind.CHANGE: "moving it now",
        TicketKind.REMOVE: "turning it off now",
        TicketKind.EXTEND: "extending it now",
        TicketKind.READD: "adding them back now",
        TicketKind.REMAP: "mapping the profile again now",
        TicketKind.UNGROUP: "taking them out of the group now",
    }[_kind(view)]


def done(view: TicketView) -> str:
    """The outcome, told to the people it concerns."""
    who = view.subject.name
    return {
        TicketKind.ENROLL: f"calendar sync is set up for {who}",
        TicketKind.CHANGE: f"calendar sync for {who} now goes to {view.mailbox}",
        TicketKind.REMOVE: f"calendar sync is turned off for {who}",
        TicketKind.EXTEND: f"calendar sync for {who} is extended{_until(view)}",
        TicketKind.READD: f"{who} is back in the sync group",
        TicketKind.REMAP: f"{who}'s scheduling profile is mapped to {view.mailbox} again",
        TicketKind.UNGROUP: f"{who} is out of the sync group",
    }[_kind(view)]


def not_finished(view: TicketView) -> str:
    """A failed ticket, for the people it concerns: no internals, and what happens next."""
    doing = {
        TicketKind.ENROLL: "setting up calendar sync",
        TicketKind.CHANGE: "moving calendar sync",
        TicketKind.REMOVE: "turning off calendar sync",
        TicketKind.EXTEND: "extending calendar sync",
        TicketKind.READD: "putting them back into the sync group",
        TicketKind.REMAP: "mapping the scheduling profile again",
        TicketKind.UNGROUP: "taking them out of the sync group",
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
    StepName.EXTEND_ACCESS: "moving the end date of their access",
}


def step_label(step: str) -> str:
    try:
        return STEP_LABELS[StepName(step)]
    except ValueError:
        return step.replace("_", " ")


def plain(message: str) -> str:
    """An error for a message to people: addresses of services (which carry tenant ids) cut."""
    return _URL.sub("(address in the log)", message).strip()
