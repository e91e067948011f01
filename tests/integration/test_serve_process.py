"""``syncwarden serve`` as a real process: start-up, readiness, and a clean SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.support.process import ServiceProcess, cli_environment, free_port
from tests.support.recorder import ConnectorRecorder, message_activity


async def test_sigterm_lets_the_in_flight_request_finish(tmp_path: Path) -> None:
    port = free_port()
    env = cli_environment(
        SYNCWARDEN_MODE="sandbox",
        SYNCWARDEN_HTTP__PORT=str(port),
        SYNCWARDEN_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path}/sw.db",
        SYNCWARDEN_LOG__FORMAT="json",
    )
    service = await ServiceProcess.start(env)
    recorder = await ConnectorRecorder().start()
    base = f"http://127.0.0.1:{port}"
    try:
        started = await service.wait_for_event("syncwarden.started")
        assert started["mode"] == "sandbox" and started["anonymous_bot_auth"] is True
        # SQLite's planner is given its statistics before the first turn (core.planner_statistics).
        assert "database.statistics_refreshed" in [line.get("event") for line in service.lines]
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(base + path) as response:
                    assert response.status == 200, path

            recorder.release.clear()  # hold the bot's reply so the request stays in flight
            in_flight = asyncio.create_task(
                http.post(f"{base}/api/messages", json=message_activity(recorder.url))
            )
            await recorder.received.wait()

            service.process.send_signal(signal.SIGTERM)
            await service.wait_for_event("syncwarden.stopping")
            recorder.release.set()

            response = await in_flight
            assert response.status in (200, 201, 202)
        await service.wait_for_event("syncwarden.stopped")
        assert await asyncio.wait_for(service.process.wait(), 30) == 0
        assert len(recorder.requests) == 1
    finally:
        await service.stop()
        await recorder.close()


async def test_serve_with_sandbox_reaches_microsoft365_through_the_real_connectors(
    tmp_path: Path,
) -> None:
    env = cli_environment(
        SYNCWARDEN_MODE="sandbox",  # as `make run` sets it; production is the default
        SYNCWARDEN_HTTP__PORT=str(free_port()),
        SYNCWARDEN_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path}/sw.db",
        SYNCWARDEN_LOG__FORMAT="json",
    )
    service = await ServiceProcess.start(env, "--sandbox", cwd=tmp_path)
    try:
        started = await service.wait_for_event("sandbox.started")
        assert started["base_url"].startswith("https://127.0.0.1:")
        connected = await service.wait_for_event("m365.connected")
        assert connected["sync_group"] == "Calendar Sync"
        assert connected["write_path"] == "exchange"
        await service.wait_for_event("syncwarden.started")
        service.process.send_signal(signal.SIGTERM)
        await service.wait_for_event("syncwarden.stopped")
        assert await asyncio.wait_for(service.process.wait(), 30) == 0
        assert (tmp_path / "var" / "sandbox").is_dir()
    finally:
        await service.stop()
