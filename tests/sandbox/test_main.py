"""``python -m syncwarden.sandbox`` as a child process: one ready line, then a working server."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_prints_ready_line_and_serves(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncwarden.sandbox", "--state-dir", str(tmp_path), "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        ready = json.loads(line)
        assert ready["event"] == "sandbox.ready"
        context = ssl.create_default_context(cafile=ready["ca_path"])
        async with httpx.AsyncClient(verify=context) as client:
            health = await client.get(f"{ready['base_url']}/_sandbox/health")
        assert health.json()["tenant_id"] == ready["tenant_id"]
    finally:
        process.terminate()
        await process.wait()
    assert process.returncode == 0


async def test_help_explains_running_alone() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncwarden.sandbox", "--help",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert b"--mailbox-concurrency" in out and b"sandbox.ready" in out
