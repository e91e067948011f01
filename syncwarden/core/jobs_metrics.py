"""Scheduled job runs and per-person sync runs, counted in the process for ``/metrics``.

The scheduler's wrapper (``syncwarden.background.logged_job``) records every run this replica
made of a job and whether it failed; ``/metrics`` exports the counts as
``syncwarden_job_runs_total{job=...}`` and ``syncwarden_job_failures_total{job=...}``. A run
skipped because another replica held the job's lock is not a run here.

The sync worker (``sync.worker``) records each person's run by its outcome, and a failed one by
the kind of failure; ``/metrics`` exports ``syncwarden_sync_runs_total{outcome=...}`` and
``syncwarden_sync_run_failures_total{kind=...}``. Neither is labelled by person: with ten
thousand people enrolled, a label per person would make ten thousand series per counter for
Prometheus to keep, while an operator alerts on rates and kinds; who is failing is in the
database (the bot's ``users`` command, the IT channel's digest) and in the log lines. The
counts are per replica (sum them in the query) and start at zero with each process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

_lock = threading.Lock()
_runs: Counter[str] = Counter()
_failures: Counter[str] = Counter()


@dataclass(frozen=True)
class JobCount:
    runs: int
    failures: int


def count_job_run(job: str, *, failed: bool) -> None:
    """Record one finished run of ``job`` on this replica."""
    with _lock:
        _runs[job] += 1
        if failed:
            _failures[job] += 1


def job_counts() -> Mapping[str, JobCount]:
    """Runs and failures of each job since the process started."""
    with _lock:
        return {job: JobCount(runs, _failures[job]) for job, runs in _runs.items()}


SYNC_OUTCOMES = ("ok", "failed", "skipped")
_sync_runs: Counter[str] = Counter()
_sync_failures: Counter[str] = Counter()


@dataclass(frozen=True)
class SyncRunCounts:
    runs: Mapping[str, int]  # by outcome
    failures: Mapping[str, int]  # failed runs by kind of failure


def count_sync_run(outcome: str, *, failure_kind: str | None = None) -> None:
    """Record one person's sync run on this replica: ``ok``, ``failed`` (of ``failure_kind``)
    or ``skipped`` (not run: paused or gone since it was claimed, or taken over by another
    worker before it committed)."""
    if outcome not in SYNC_OUTCOMES:
        raise ValueError(f"a sync run's outcome is one of {SYNC_OUTCOMES}, not {outcome!r}")
    with _lock:
        _sync_runs[outcome] += 1
        if outcome == "failed":
            _sync_failures[failure_kind or "other"] += 1


def sync_run_counts() -> SyncRunCounts:
    """Sync runs by outcome and failed ones by kind since the process started."""
    with _lock:
        return SyncRunCounts(dict(_sync_runs), dict(_sync_failures))
