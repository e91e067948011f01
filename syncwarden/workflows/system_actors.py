"""The service's own names, for the tickets it files itself.

Reconciliation opens tickets without a person asking: a leaver's removal after the grace
period, a mover's new address. Their requester is one of these, so the audit and the cards say
where the change came from, and nobody tries to send a chat message to an id that is not a
person.
"""

from __future__ import annotations

from syncwarden.workflows.ports import Person, TicketView

SYSTEM_PREFIX = "syncwarden:"

RECONCILIATION = Person(id=f"{SYSTEM_PREFIX}reconcile", name="Access reconciliation")
# A leaver's removal: the person has left, so they are not told (their account is disabled or
# gone; a message could only fail or reach someone who no longer works here).
LEAVER_REMOVAL = Person(id=f"{SYSTEM_PREFIX}leaver", name="Access reconciliation (leaver)")
# Time-bound access that ended: the removal ticket's requester (workflows/expiry.py).
EXPIRY = Person(
    id=f"{SYSTEM_PREFIX}expiry",
    name="Syncwarden (time-bound access ended)",
    upn=f"{SYSTEM_PREFIX}expiry",
)
# An access review: everything it does by itself, and the removals it opens
# (workflows/review_lifecycle.py, workflows/review_removals.py).
REVIEW = Person(
    id=f"{SYSTEM_PREFIX}review", name="Syncwarden (access review)", upn=f"{SYSTEM_PREFIX}review"
)


def is_system(person_id: str) -> bool:
    return person_id.lower().startswith(SYSTEM_PREFIX)


def people_told(view: TicketView) -> list[str]:
    """Who hears of a ticket in their chat: its requester and its subject, but never the
    service itself, nor a leaver."""
    people = {view.requester.id, view.subject.id}
    if view.requester.id == LEAVER_REMOVAL.id:
        people.discard(view.subject.id)
    return sorted(person for person in people if not is_system(person))
