"""Which app credentials deserve an alert, and which kind (pure rules, no I/O).

A credential crosses a threshold when its days left fall to or below it (60, 30, 14, 7, 3, 1 by
default), and is *expired* once its end has passed. If the same app already holds a newer
credential of the same kind that stays valid beyond the crossed threshold, the old one is being
rotated out: that is worth a calm "remove the old one once the new one is in use", not an alarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from syncwarden.connectors.graph.applications import AppCredential, AppWithCredentials

EXPIRED = 0  # the "threshold" an expired credential has crossed


class Severity(StrEnum):
    WARNING = "warning"
    EXPIRED = "expired"
    ROTATING = "rotation_in_progress"


@dataclass(frozen=True)
class CredentialFinding:
    app: AppWithCredentials
    credential: AppCredential
    days_left: float
    threshold: int
    severity: Severity

    @property
    def key(self) -> str:
        """One alert per credential and threshold, whatever the severity, across reruns."""
        owner = f"{self.app.owner_kind.value}:{self.app.object_id}"
        return f"{owner}:{self.credential.key_id}:{self.threshold}"


def crossed_threshold(days_left: float, thresholds: Sequence[int]) -> int | None:
    """The smallest threshold the credential has reached, ``EXPIRED`` once it ended, else None."""
    if days_left <= 0:
        return EXPIRED
    reached = [t for t in thresholds if days_left <= t]
    return min(reached) if reached else None


def evaluate(
    apps: Sequence[AppWithCredentials], *, now: datetime, thresholds: Sequence[int]
) -> list[CredentialFinding]:
    findings = []
    for app in apps:
        for credential in app.credentials:
            if credential.end is None:
                continue
            days_left = (credential.end - now) / timedelta(days=1)
            threshold = crossed_threshold(days_left, thresholds)
            if threshold is None:
                continue
            severity = Severity.EXPIRED if threshold == EXPIRED else Severity.WARNING
            if _has_successor(app, credential, now + timedelta(days=max(threshold, 1))):
                severity = Severity.ROTATING
            findings.append(CredentialFinding(app, credential, days_left, threshold, severity))
    return findings


def _has_successor(app: AppWithCredentials, old: AppCredential, valid_until: datetime) -> bool:
    return any(
        other.key_id != old.key_id
        and other.kind is old.kind
        and other.end is not None
        and other.end > valid_until
        and (old.end is None or other.end > old.end)
        for other in app.credentials
    )
