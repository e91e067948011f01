"""Scheduled job runs and failures, counted in the process for ``/metrics``.

The scheduler's wrapper (``syncwarden.background.logged_job``) records every run this replica
made of a job and whether it failed; ``/metrics`` exports the counts as
``syncwarden_job_runs_total{job=...}`` and ``syncwarden_job_failures_total{job=...}``. A run
skipped because another replica held the job's lock is not a run here.
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
