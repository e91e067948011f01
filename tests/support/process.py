"""Running ``syncwarden`` as a real child process and following its JSON log lines."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cli_environment(**settings: str) -> dict[str, str]:
    """The current environment without SYNCWARDEN_* variables, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWARDEN_")}
    env.update(settings)
    return env


@dataclass
class ServiceProcess:
    """A ``syncwarden serve`` child whose stderr log lines are parsed as they arrive."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    # The reader :meth:`follow` started, if any.
    follower: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        env: dict[str, str],
        *arguments: str,
        cwd: Path | None = None,
        python: Path | str = sys.executable,
        command: str = "serve",
    ) -> ServiceProcess:
        """``python`` is the interpreter to run it with (another virtualenv's, say);
        ``command`` is ``serve`` or ``worker``."""
        process = await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "syncwarden",
            command,
            *arguments,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def wait_for_event(
        self, event: str, limit_seconds: float = STARTUP_TIMEOUT_SECONDS
    ) -> dict[str, Any]:
        """Read log lines until one has ``event``; fail with all lines read if the process ends."""
        async with asyncio.timeout(limit_seconds):
            while True:
                assert self.process.stderr is not None
                line = await self.process.stderr.readline()
                if not line:
                    raise AssertionError(
                        f"process ended before logging {event!r}:\n" + "".join(self.raw)
                    )
                text = line.decode()
                self.raw.append(text)
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError:
                    continue
                self.lines.append(parsed)
                if isinstance(parsed, dict) and parsed.get("event") == event:
                    return parsed

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def follow(self) -> asyncio.Task[None]:
        """Keep reading log lines in the background until the process ends.

        A child whose stderr pipe nobody reads blocks on its next log line once the pipe's buffer
        is full, so a child that runs on after :meth:`wait_for_event` (the service crash test's)
        must be drained. Call it after the last :meth:`wait_for_event`: both read the same pipe.
        """

        async def read() -> None:
            assert self.process.stderr is not None
            while line := await self.process.stderr.readline():
                text = line.decode(errors="replace")
                self.raw.append(text)
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(parsed, dict):
                    self.lines.append(parsed)

        if self.follower is None:
            self.follower = asyncio.create_task(read(), name="service-log-reader")
        return self.follower
