"""`serve --sandbox` starts the sandbox tenant as a child; killing the parent outright must not
leave that child running (SIGKILL runs none of the parent's clean-up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

PARENT = """
import asyncio, sys
from pathlib import Path
from syncwarden.sandbox_process import start_sandbox

async def main() -> None:
    started = await start_sandbox(Path(sys.argv[1]))
    print(started.process.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def exited(pid: int) -> None:
    """Until ``pid`` exits, woken by the kernel (a pidfd turns readable), not by polling."""
    loop = asyncio.get_running_loop()
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    gone = asyncio.Event()
    loop.add_reader(descriptor, gone.set)
    try:
        await gone.wait()
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


async def test_a_killed_parent_takes_its_sandbox_child_with_it(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    async with asyncio.timeout(60):
        child = int((await parent.stdout.readline()).decode())
    os.kill(child, 0)  # the sandbox child is running

    try:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()

        async with asyncio.timeout(30):
            await exited(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # only if the check above failed
