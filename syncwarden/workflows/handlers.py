"""What each provisioning step does in the outside world.

Every handler is safe to run twice: the group port treats "already a member" / "not a member" as
success, mappings are upserts keyed by profile, and the instructions message carries the step's
idempotency key so a notifier with an outbox can drop a repeat. Handlers never touch our database;
the runner records their outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from syncwarden.connectors.errors import MailboxNotEnabledError, NotFoundError
from syncwarden.connectors.ports import Directory, GroupMembership, TaggedCalendar
from syncwarden.connectors.scheduling.ports import SchedulingSystem
from syncwarden.core.db import utc_now
from syncwarden.workflows.instructions import InstructionsTemplate
from syncwarden.workflows.ports import Notification, NotificationKind, Notifier
from syncwarden.workflows.steps import StepContext, StepHandler, StepName, StepOutcome

# How far around today the removal looks for events we pushed (wider than any sync window).
CLEANUP_PAST = timedelta(days=62)
CLEANUP_FUTURE = timedelta(days=400)


class ProvisioningHandlers:
    def __init__(
        self,
        *,
        directory: Directory,
        group: GroupMembership,
        scheduling: SchedulingSystem,
        notifier: Notifier,
        instructions: InstructionsTemplate,
        calendar: TaggedCalendar,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._calendar = calendar
        self._clock = clock
        self._directory = directory
        self._group = group
        self._scheduling = scheduling
        self._notifier = notifier
        self._instructions = instructions

    def as_mapping(self) -> Mapping[StepName, StepHandler]:
        return {
            StepName.MAP_PROFILE: self.map_profile,
            StepName.ADD_TO_GROUP: self.add_to_group,
            StepName.SEND_INSTRUCTIONS: self.send_instructions,
            StepName.REQUEST_INITIAL_SYNC: self.request_initial_sync,
            StepName.REMOVE_FROM_GROUP: self.remove_from_group,
            StepName.DEACTIVATE_MAPPING: self.deactivate_mapping,
            StepName.REMOVE_SYNCED_EVENTS: self.remove_synced_events,
            StepName.EXTEND_ACCESS: self.extend_access,
        }

    async def extend_access(self, context: StepContext) -> StepOutcome:
        """Nothing to do outside: the new end date is the runner's local effect."""
        until = context.ticket.access_until
        return StepOutcome({"until": until.isoformat() if until else None})

    async def map_profile(self, context: StepContext) -> StepOutcome:
        ticket = context.ticket
        profile_id = ticket.profile_id or ""
        if not self._scheduling.writes_mappings:
            return self._manual(
                context,
                action="Map the scheduling profile to the mailbox and mark it active",
                profile_id=profile_id,
                mailbox=ticket.mailbox,
                active="yes",
            )
        mapping = await self._scheduling.upsert_mapping(profile_id, ticket.mailbox)
        return StepOutcome({"profile_id": mapping.profile_id, "mailbox": mapping.mailbox})

    async def deactivate_mapping(self, context: StepContext) -> StepOutcome:
        profile_id = context.ticket.profile_id or ""
        if not self._scheduling.writes_mappings:
            return self._manual(
                context,
                action="Mark the person's mapping inactive (or delete it)",
                profile_id=profile_id,
                mailbox=context.ticket.mailbox,
                active="no",
            )
        mapping = await self._scheduling.deactivate_mapping(profile_id)
        return StepOutcome({"profile_id": profile_id, "had_mapping": mapping is not None})

    async def add_to_group(self, context: StepContext) -> StepOutcome:
        user = await self._directory.get_user(context.ticket.subject.id)
        change = await self._group.add_member(user)
        return StepOutcome({"changed": change.changed, "path": change.path})

    async def remove_from_group(self, context: StepContext) -> StepOutcome:
        try:
            user = await self._directory.get_user(context.ticket.subject.id)
        except NotFoundError:
            # Deleted from the directory: Entra already removed them from every group.
            return StepOutcome({"changed": False, "path": "none", "note": "user no longer exists"})
        change = await self._group.remove_member(user)
        return StepOutcome({"changed": change.changed, "path": change.path})

    async def send_instructions(self, context: StepContext) -> StepOutcome:
        text = self._instructions.render(context.ticket)
        notification = Notification(NotificationKind.INSTRUCTIONS, context.ticket, text)
        await self._notifier.to_user(
            context.ticket.subject.id, notification, key=context.idempotency_key
        )
        return StepOutcome({"sent_to": context.ticket.subject.id})

    async def request_initial_sync(self, context: StepContext) -> StepOutcome:
        # The runner marks the enrollment; the sync worker picks marked enrollments up first.
        return StepOutcome({"requested": True})

    async def remove_synced_events(self, context: StepContext) -> StepOutcome:
        """Delete every event in the mailbox that carries our tag, and nothing else.

        Found by the tag rather than by our own records, so events pushed before a lost link are
        removed too. Repeating the step deletes what is left; an event already gone is no error.
        """
        mailbox = context.ticket.subject.id
        now = self._clock()
        try:
            events = await self._calendar.tagged_events(
                mailbox, now - CLEANUP_PAST, now + CLEANUP_FUTURE
            )
        except NotFoundError:
            # A deleted leaver: their mailbox went with the account, and our events with it.
            return StepOutcome({"removed": 0, "note": "mailbox no longer exists"})
        except MailboxNotEnabledError:
            # Unlicensed, inactive or moved on-premises: nothing can reach the events, and the
            # removal must not fail for it (the sync has stopped pushing already). Should the
            # mailbox come back, our tagged events come back with it; the note says so.
            return StepOutcome(
                {
                    "removed": 0,
                    "note": "mailbox unreachable (unlicensed, inactive or on-premises); synced "
                    "events left in it, if any, return with it",
                }
            )
        removed = 0
        for event in events:
            removed += await self._calendar.delete_event(mailbox, event["id"])
        return StepOutcome({"removed": removed})

    def _manual(self, context: StepContext, *, action: str, **values: str) -> StepOutcome:
        if context.manual_confirmed:
            return StepOutcome({"manual": True, **values})
        task = {"action": action, "person": context.ticket.subject.name, **values}
        return StepOutcome({}, manual_task=task)
