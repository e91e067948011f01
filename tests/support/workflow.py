"""Everything the workflow needs, wired as the composition root will, over the sandbox tenant."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.groups import SyncGroupMembership
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory
from syncwarden.core.settings import (
    AccessSettings,
    ApprovalSettings,
    ProvisioningSettings,
    ReviewSettings,
)
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.handlers import ProvisioningHandlers
from syncwarden.workflows.instructions import InstructionsTemplate
from syncwarden.workflows.ports import Person
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.runner import StepRunner
from syncwarden.workflows.service import WorkflowService
from syncwarden.workflows.steps import StepHandler, StepName
from tests.support.notifier import RecordingNotifier, recording_units

SYNC_GROUP = "Calendar Sync"
PEOPLE = {
    "avery": "avery.quinlan@example.edu",
    "blake": "blake.okonkwo-reyes@example.edu",
    "casey": "casey.lindqvist@example.edu",  # approver
    "dana": "dana.whitfield@example.edu",  # IT admin, fallback approver
    "emerson": "emerson.tal@example.edu",  # approver and IT admin
    "finley": "finley.marsh@example.edu",  # disabled
    "harper": "harper.osei@example.edu",  # no mailbox
    "rowan": "rowan.ibarra@example.edu",
    "sasha": "sasha.verhoeven@example.edu",
}


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class Harness:
    engine: AsyncEngine
    handlers: dict[StepName, StepHandler]
    provisioning: ProvisioningSettings
    tenant: SandboxTenant
    m365: Microsoft365
    sessions: async_sessionmaker[AsyncSession]
    scheduling: BuiltinScheduling
    notifier: RecordingNotifier
    clock: FakeClock
    service: WorkflowService
    runner: StepRunner
    group_id: str
    roster: Roster
    approvals: ApprovalSettings

    def person(self, key: str) -> Person:
        upn = PEOPLE[key]
        return Person(
            self.tenant.seed.user_ids[upn], upn.split("@")[0].replace(".", " ").title(), upn
        )

    def in_sync_group(self, key: str) -> bool:
        return self.tenant.seed.user_ids[PEOPLE[key]] in self.tenant.group_member_ids(self.group_id)


@asynccontextmanager
async def workflow_harness(
    engine: AsyncEngine,
    tenant: SandboxTenant,
    m365: Microsoft365,
    *,
    approvals: dict[str, Any] | None = None,
    provisioning: dict[str, Any] | None = None,
    access: dict[str, Any] | None = None,
    reviews: dict[str, Any] | None = None,
    writes_mappings: bool = True,
    group: str = SYNC_GROUP,
) -> AsyncIterator[Harness]:
    sessions = session_factory(engine)
    clock = FakeClock()
    notifier = RecordingNotifier()
    scheduling = BuiltinScheduling(sessions, writes_mappings=writes_mappings)
    for key, upn in PEOPLE.items():
        await scheduling.upsert_profile(Profile(f"prof-{key}", key.title(), upn))
    approval_settings = ApprovalSettings.model_validate(
        {
            "approvers_group_id": tenant.seed.group_ids["Calendar Sync Approvers"],
            "it_admins_group_id": tenant.seed.group_ids["IT Admins"],
            "fallback_approvers": [PEOPLE["dana"]],
            **(approvals or {}),
        }
    )
    provisioning_settings = ProvisioningSettings.model_validate(
        {"lease_seconds": 60, **(provisioning or {})}
    )
    group_id = tenant.seed.group_ids[group]
    roster = Roster(m365.directory, approval_settings)
    handlers = dict(
        ProvisioningHandlers(
            directory=m365.directory,
            calendar=m365.calendar,
            group=SyncGroupMembership(m365.directory, m365.exchange, group_id),
            scheduling=scheduling,
            notifier=notifier,
            instructions=InstructionsTemplate(),
            clock=clock,
        ).as_mapping()
    )
    units = recording_units(sessions, notifier, clock=clock)
    runner = StepRunner(units, handlers, provisioning_settings, clock=clock)
    service = WorkflowService(
        units,
        directory=m365.directory,
        scheduling=scheduling,
        roster=roster,
        approvals=approval_settings,
        provisioning=provisioning_settings,
        clock=clock,
        on_steps_queued=runner.wake,
        access=AccessSettings.model_validate(access or {}),
        reviews=ReviewSettings.model_validate(reviews or {}),
        managers=m365.directory_changes,
    )
    yield Harness(
        engine,
        handlers,
        provisioning_settings,
        tenant,
        m365,
        sessions,
        scheduling,
        notifier,
        clock,
        service,
        runner,
        group_id,
        roster,
        approval_settings,
    )
