"""Starting the sandbox tenant as a child process for ``syncwarden serve --sandbox``.

Product code never imports the sandbox; it runs it as its own program
(``python -m syncwarden.sandbox``), reads the one ``sandbox.ready`` JSON line it prints, and points
the settings at it: the same addresses, CA bundle and app credentials a real tenant would be
configured with.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from syncwarden.core.errors import SyncwardenError
from syncwarden.core.settings import Settings, sandbox_target_problem

READY_TIMEOUT_SECONDS = 30.0
SYNC_GROUP = "Calendar Sync"
APPROVERS_GROUP = "Calendar Sync Approvers"
IT_ADMINS_GROUP = "IT Admins"
GRAPH_APP = "Syncwarden"
# A seed person in the sync group, so `doctor` has a mailbox to read.
SANDBOX_TEST_MAILBOX = "avery.quinlan@example.edu"


class SandboxStartError(SyncwardenError):
    """The sandbox tenant did not start; the message carries what it printed."""


@dataclass
class SandboxProcess:
    process: asyncio.subprocess.Process
    ready: dict[str, Any]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_sandbox(state_dir: Path) -> SandboxProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncwarden.sandbox",
        "--state-dir",
        str(state_dir),
        "--exit-with-parent",
        # The child exits when this pipe closes, which is also what happens when we are killed
        # outright (SIGKILL runs no clean-up of ours), so no sandbox is ever left behind.
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_SECONDS)
        ready = json.loads(line) if line else {}
    except (TimeoutError, json.JSONDecodeError):
        ready = {}
    if ready.get("event") != "sandbox.ready":
        process.kill()
        errors = (await process.stderr.read()).decode(errors="replace").strip().splitlines()[-5:]
        raise SandboxStartError(
            "the sandbox tenant did not start: " + (" / ".join(errors) or "no output")
        )
    return SandboxProcess(process, ready)


def settings_for_sandbox(settings: Settings, ready: dict[str, Any]) -> Settings:
    """``settings`` aimed at the running sandbox; explicitly configured group ids are kept.

    Every Microsoft 365 address is replaced by the sandbox's, so nothing reaches a real tenant.
    """
    app = ready["apps"][GRAPH_APP]
    groups = ready.get("groups", {})
    graph = settings.graph.model_copy(
        update={
            "tenant_id": ready["tenant_id"],
            "client_id": app["client_id"],
            "client_secret": SecretStr(app["client_secret"]),
            "certificate_path": None,
            "managed_identity": False,
            "login_url": ready["base_url"],
            "base_url": f"{ready['base_url']}/v1.0",
            "ca_bundle": Path(ready["ca_path"]),
            "sync_group_id": settings.graph.sync_group_id or groups.get(SYNC_GROUP),
            "test_mailbox": settings.graph.test_mailbox or SANDBOX_TEST_MAILBOX,
        }
    )
    approvals = settings.approvals.model_copy(
        update={
            "approvers_group_id": settings.approvals.approvers_group_id
            or groups.get(APPROVERS_GROUP),
            "it_admins_group_id": settings.approvals.it_admins_group_id
            or groups.get(IT_ADMINS_GROUP),
        }
    )
    exchange = settings.exchange.model_copy(update={"base_url": ready["base_url"]})
    # The sandbox can reach this process directly, so change notifications work locally too.
    local = f"http://{settings.http.host}:{settings.http.port}/api/graph/notifications"
    sync = settings.sync.model_copy(
        update={"notification_url": settings.sync.notification_url or local}
    )
    aimed = settings.model_copy(
        update={"graph": graph, "exchange": exchange, "approvals": approvals, "sync": sync}
    )
    # Sandbox mode reaches nothing but the sandbox; a child that reported another address is not it.
    problem = sandbox_target_problem(aimed)
    if problem:
        raise SandboxStartError(f"the sandbox tenant cannot be used: {problem}")
    return aimed
