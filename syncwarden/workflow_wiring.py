"""Building the ticket workflow from settings and connectors.

The workflow writes every notification to the durable outbox. Delivering the outbox to Teams is
the bot's job (its proactive messaging); until it is wired, messages wait in the outbox rather
than being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.scheduling.builtin import BuiltinScheduling
from core.settings import SchedulingAdapter, Settings
from syncwarden.m365 import Microsoft365
from workflows.handlers import ProvisioningHandlers
from workflows.instructions import InstructionsTemplate
from workflows.outbox import OutboxNotifier
from workflows.roster import Roster
from workflows.runner import StepRunner
from workflows.service import WorkflowService


@dataclass
class Workflows:
    service: WorkflowService
    runner: StepRunner
    outbox: OutboxNotifier
    scheduling: BuiltinScheduling
    roster: Roster


def build_workflows(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], m365: Microsoft365
) -> Workflows | None:
    """The workflow, or None when there is no sync group to provision into."""
    if m365.sync_group is None:
        return None
    scheduling = BuiltinScheduling(
        sessions,
        writes_mappings=settings.provisioning.scheduling_adapter is SchedulingAdapter.BUILTIN,
    )
    outbox = OutboxNotifier(sessions)
    roster = Roster(m365.directory, settings.approvals)
    handlers = ProvisioningHandlers(
        directory=m365.directory,
        calendar=m365.calendar,
        group=m365.sync_group,
        scheduling=scheduling,
        notifier=outbox,
        instructions=InstructionsTemplate(
            settings.provisioning.instructions_template, settings.provisioning.help_article_url
        ),
    )
    runner = StepRunner(sessions, handlers.as_mapping(), outbox, settings.provisioning)
    service = WorkflowService(
        sessions,
        directory=m365.directory,
        scheduling=scheduling,
        notifier=outbox,
        roster=roster,
        approvals=settings.approvals,
        provisioning=settings.provisioning,
        on_steps_queued=runner.wake,
    )
    return Workflows(service, runner, outbox, scheduling, roster)
