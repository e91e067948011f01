"""A provisioning worker that kills itself (SIGKILL) at a chosen point, for the crash test.

Run as ``python -m tests.support.crash_worker CONFIG.json CRASH_AT``. It wires the production
runner, handlers, connectors and outbox exactly as the service does, then works until no ticket
is provisioning any more, unless ``CRASH_AT`` fires first:

- ``claimed:N``: right after the N-th claim is committed (the step is running, nothing done yet);
- ``effect:STEP:N``: inside the N-th run of STEP, after its outside effect, before it is recorded;
- ``committed:STEP:N``: right after the N-th success of STEP is committed;
- ``none``: never (the final, clean run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from syncwarden.connectors.groups import SyncGroupMembership
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.settings import ProvisioningSettings, Settings
from syncwarden.m365 import build_microsoft365
from syncwarden.workflows.handlers import ProvisioningHandlers
from syncwarden.workflows.instructions import InstructionsTemplate
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxNotifier
from syncwarden.workflows.records import Ticket
from syncwarden.workflows.runner import ClaimedStep, StepRunner
from syncwarden.workflows.steps import StepContext, StepHandler, StepOutcome
from syncwarden.workflows.unit_of_work import UnitsOfWork

seen: Counter[str] = Counter()


def die_at(point: str, crash_at: str) -> None:
    seen[point] += 1
    if f"{point}:{seen[point]}" == crash_at:
        sys.stdout.write(f"crashing at {crash_at}\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingRunner(StepRunner):
    crash_at = "none"

    async def claim(self) -> ClaimedStep | None:
        claimed = await super().claim()
        if claimed is not None:
            die_at("claimed", self.crash_at)
        return claimed

    async def _record_success(self, claimed: ClaimedStep, outcome: StepOutcome) -> None:
        await super()._record_success(claimed, outcome)
        die_at(f"committed:{claimed.context.step.value}", self.crash_at)


def crashing(handler: StepHandler, crash_at: str) -> StepHandler:
    async def run(context: StepContext) -> StepOutcome:
        outcome = await handler(context)
        die_at(f"effect:{context.step.value}", crash_at)
        return outcome

    return run


async def work(config: dict[str, Any], crash_at: str) -> None:
    settings = Settings.model_validate(config["settings"])
    engine = create_engine(config["database_url"])
    m365 = build_microsoft365(settings)
    sessions = session_factory(engine)
    outbox = OutboxNotifier(sessions)
    handlers = ProvisioningHandlers(
        directory=m365.directory,
        calendar=m365.calendar,
        group=SyncGroupMembership(m365.directory, m365.exchange, config["group_id"]),
        scheduling=BuiltinScheduling(sessions),
        notifier=outbox,
        instructions=InstructionsTemplate(),
    ).as_mapping()
    runner = CrashingRunner(
        UnitsOfWork(sessions),
        {name: crashing(handler, crash_at) for name, handler in handlers.items()},
        ProvisioningSettings(lease_seconds=10),
    )
    runner.crash_at = crash_at
    try:
        while await _provisioning(sessions) > 0:
            if await runner.run_until_idle() == 0:
                await asyncio.sleep(0.2)  # a crashed run's lease has not run out yet
    finally:
        await m365.aclose()
        await engine.dispose()


async def _provisioning(sessions: Any) -> int:
    async with sessions() as session:
        count: int = await session.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.status == TicketStatus.PROVISIONING.value)
        )
        return count


if __name__ == "__main__":
    asyncio.run(work(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]))
