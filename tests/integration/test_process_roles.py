"""``serve --no-background`` and ``worker`` split one service into processes that scale apart.

A web process answers Teams and Graph and runs no background work; a worker runs the background
work (its scheduled jobs among it) and answers only the operational routes. Both are real child
processes on the test's database and sandbox tenant, followed through their JSON logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from syncwarden.sandbox.server import SandboxTenant
from tests.support.replicas import LogBook, Replica, replica_environment

SCAN = "credentials.scan"  # runs when the background work starts


async def test_a_web_process_and_a_worker_divide_the_work(
    tenant: SandboxTenant, migrated_engine: object, database_url: str, tmp_path: Path
) -> None:
    book = LogBook()
    group = tenant.seed.group_ids["Calendar Sync"]
    web_env = replica_environment(tenant, database_url, GRAPH__SYNC_GROUP_ID=group)
    worker_env = replica_environment(tenant, database_url, GRAPH__SYNC_GROUP_ID=group)
    web = await Replica.start("web", web_env, book, "--no-background", cwd=tmp_path)
    worker: Replica | None = None
    try:
        worker = await Replica.start("worker", worker_env, book, cwd=tmp_path, command="worker")
        await book.wait_until(
            lambda: len(book.where("syncwarden.started")) == 2, "both processes started"
        )
        [web_started] = book.where("syncwarden.started", replica="web")
        [worker_started] = book.where("syncwarden.started", replica="worker")
        assert (web_started.get("role"), web_started.get("background")) == ("web", False)
        assert (worker_started.get("role"), worker_started.get("background")) == ("worker", True)
        await book.wait_until(
            lambda: bool(book.where("job.done", job=SCAN)), "the worker ran a scheduled job"
        )

        async with aiohttp.ClientSession() as http:
            for replica in (web, worker):
                async with http.get(f"{replica.base_url}/readyz") as ready:
                    assert ready.status == 200, (replica.name, await ready.text())
            async with http.post(f"{worker.base_url}/api/messages", json={}) as refused:
                assert refused.status == 404, "Teams is never answered by a worker"
            async with http.post(f"{web.base_url}/api/messages", json={}) as answered:
                assert answered.status == 400, "the web process answers Teams (here: bad input)"
        assert await web.terminate() == 0
        assert await worker.terminate() == 0
    finally:
        for started in (web, worker):
            if started is not None:
                with contextlib.suppress(Exception):
                    await started.kill()
    assert not [line for line in book.where(replica="web") if line.event.startswith("job.")]
    assert book.where("job.done", replica="worker")


async def test_a_worker_with_background_work_turned_off_refuses_to_start(
    tenant: SandboxTenant, migrated_engine: object, database_url: str, tmp_path: Path
) -> None:
    book = LogBook()
    group = tenant.seed.group_ids["Calendar Sync"]
    env = replica_environment(
        tenant, database_url, GRAPH__SYNC_GROUP_ID=group, SCHEDULER__ENABLED="false"
    )
    worker = await Replica.start("worker", env, book, cwd=tmp_path, command="worker")
    try:
        async with asyncio.timeout(60):  # it ends by itself, at once
            code = await worker.service.process.wait()
            await worker.reader
    finally:
        await worker.kill()
    assert code == 2
    said = "".join(book.raw["worker"])
    assert "SYNCWARDEN_SCHEDULER__ENABLED=false" in said and "Traceback" not in said
