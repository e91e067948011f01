"""The provisioning plan of each ticket kind, and the states a step moves through.

A plan is fixed when the ticket is approved: its steps are written as rows at that moment, each
with an idempotency key derived from the ticket and the step, so nothing can queue a step twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from syncwarden.workflows.model import TicketKind
from syncwarden.workflows.ports import TicketView


class StepName(StrEnum):
    MAP_PROFILE = "map_profile"
    ADD_TO_GROUP = "add_to_group"
    SEND_INSTRUCTIONS = "send_instructions"
    REQUEST_INITIAL_SYNC = "request_initial_sync"
    REMOVE_FROM_GROUP = "remove_from_group"
    DEACTIVATE_MAPPING = "deactivate_mapping"
    REMOVE_SYNCED_EVENTS = "remove_synced_events"
    EXTEND_ACCESS = "extend_access"


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_MANUAL = "waiting_manual"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def plan(kind: TicketKind, *, remove_synced_events: bool) -> list[StepName]:
    if kind is TicketKind.ENROLL:
        return [
            StepName.MAP_PROFILE,
            StepName.ADD_TO_GROUP,
            StepName.SEND_INSTRUCTIONS,
            StepName.REQUEST_INITIAL_SYNC,
        ]
    if kind is TicketKind.REMOVE:
        # Leaving the sync group ends our access to the mailbox (the access policy is scoped to
        # it), so the synced events are removed *before* that, and the mapping is deactivated
        # first of all so that no new events are pushed meanwhile.
        cleanup = [StepName.REMOVE_SYNCED_EVENTS] if remove_synced_events else []
        return [StepName.DEACTIVATE_MAPPING, *cleanup, StepName.REMOVE_FROM_GROUP]
    if kind is TicketKind.EXTEND:
        # Nothing changes outside: the runner moves the enrollment's end date in the same
        # transaction as the step's success.
        return [StepName.EXTEND_ACCESS]
    if kind is TicketKind.READD:
        return [StepName.ADD_TO_GROUP]
    if kind is TicketKind.REMAP:
        return [StepName.MAP_PROFILE]
    if kind is TicketKind.UNGROUP:
        return [StepName.REMOVE_FROM_GROUP]
    return [StepName.MAP_PROFILE, StepName.SEND_INSTRUCTIONS]


def idempotency_key(ticket_ref: str, position: int, name: StepName) -> str:
    return f"{ticket_ref}:{position}:{name.value}"


@dataclass(frozen=True)
class StepOutcome:
    """What a handler did: finished (with a result to keep), or handed over to a person."""

    result: dict[str, Any]
    manual_task: dict[str, str] | None = None


@dataclass(frozen=True)
class StepContext:
    """Everything a handler may know about its step; handlers never touch the database."""

    ticket: TicketView
    step: StepName
    idempotency_key: str
    attempt: int
    manual_confirmed: bool


class StepHandler(Protocol):
    async def __call__(self, context: StepContext) -> StepOutcome: ...
