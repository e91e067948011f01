"""``serve --no-background`` and ``worker`` split one service into processes that scale apart.

A web process answers Teams and Graph and runs no background work; a worker runs the background
work (its scheduled jobs among it) and answers only the operational routes. Both are real child
processes on the test's database and sandbox tenant, followed through their JSON logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.job_runs import last_run
from syncwarden.sandbox.server import SandboxTenant
from tests.conftest import POSTGRES_ENV
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


async def test_a_worker_whose_port_is_taken_ends_before_any_job_begins(
    tenant: SandboxTenant, migrated_engine: object, database_url: str, tmp_path: Path
) -> None:
    """Listening comes first: a second worker started on the first one's port stops at once,
    without cutting short scheduled runs it would otherwise have begun."""
    book = LogBook()
    group = tenant.seed.group_ids["Calendar Sync"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = replica_environment(tenant, database_url, port=port, GRAPH__SYNC_GROUP_ID=group)
        worker = await Replica.start("worker", env, book, cwd=tmp_path, command="worker")
        try:
            async with asyncio.timeout(60):  # it ends by itself, at once
                code = await worker.service.process.wait()
                await worker.reader
        finally:
            await worker.kill()
    assert code != 0
    assert "address already in use" in "".join(book.raw["worker"])
    assert not book.where("background.started") and not book.where("job.done")
    assert not [line for line in book.lines if line.get("level") == "error"], book.tail()


DIGEST = "credentials.weekly_digest"  # calendar-bound: due at start while no run is on record


@pytest.mark.skipif(
    POSTGRES_ENV not in os.environ,
    reason=f"workers share one PostgreSQL database; set {POSTGRES_ENV} to run this test",
)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_workers_on_one_database_run_a_scheduled_job_once(
    tenant: SandboxTenant, migrated_engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """Scaled out to two workers, the weekly digest (due at start, no run on record) runs on one
    of them: the other skips it if it found it due too, or finds its run on record and does not
    schedule it; neither trips over the other."""
    book = LogBook()
    group = tenant.seed.group_ids["Calendar Sync"]
    workers: list[Replica] = []
    try:
        for name in ("w1", "w2"):
            env = replica_environment(tenant, database_url, GRAPH__SYNC_GROUP_ID=group)
            workers.append(await Replica.start(name, env, book, cwd=tmp_path, command="worker"))

        def digest_settled() -> bool:
            """One worker ran the digest; the other either skipped it or started after the run
            was on record (then it is not due there at all)."""
            done = book.where("job.done", job=DIGEST)
            started = {line.replica: line for line in book.where("background.started")}
            if not done or len(started) < 2:
                return False
            other = started["w2" if done[0].replica == "w1" else "w1"]
            came_after = str(other.get("timestamp")) > str(done[0].get("timestamp"))
            return bool(book.where("job.skipped", job=DIGEST)) or came_after

        await book.wait_until(digest_settled, "both workers reached the weekly digest")
        for worker in workers:
            assert await worker.terminate() == 0
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.kill()
    done = book.where("job.done", job=DIGEST)
    skipped = book.where("job.skipped", job=DIGEST)
    assert len(done) == 1 and len(skipped) <= 1, [line.fields for line in done + skipped]
    assert all(line.replica != done[0].replica for line in skipped)
    assert await last_run(migrated_engine, DIGEST) is not None
    # The digest's and the drift report's messages have no IT channel to go to here; those
    # give-ups are the only errors.
    errors = [
        line.fields
        for line in book.lines
        if line.get("level") in ("error", "critical") and line.event != "outbox.gave_up"
    ]
    assert errors == [], book.tail()
