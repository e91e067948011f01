"""Credential alert rules: thresholds, expiry and rotation awareness."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.graph.applications import (
    AppCredential,
    AppWithCredentials,
    CredentialKind,
    OwnerKind,
)
from syncwarden.sync.credential_rules import EXPIRED, Severity, crossed_threshold, evaluate

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
THRESHOLDS = [60, 30, 14, 7, 3, 1]


def credential(
    key: str, days: float | None, kind: CredentialKind = CredentialKind.SECRET
) -> AppCredential:
    end = None if days is None else NOW + dt.timedelta(days=days)
    return AppCredential(
        kind,
        key,
        f"cred {key}",
        "abc" if kind is CredentialKind.SECRET else None,
        "THUMB" if kind is CredentialKind.CERTIFICATE else None,
        None,
        NOW - dt.timedelta(days=300),
        end,
    )


def app(*credentials: AppCredential, object_id: str = "obj-1") -> AppWithCredentials:
    return AppWithCredentials(
        object_id, "app-1", "Payroll Feed", OwnerKind.APPLICATION, credentials
    )


@pytest.mark.parametrize(
    ("days", "threshold"),
    [
        (200, None),
        (60.5, None),
        (60, 60),
        (45, 60),
        (30, 30),
        (8, 14),
        (7, 7),
        (2.5, 3),
        (0.2, 1),
        (0, EXPIRED),
        (-5, EXPIRED),
    ],
)
def test_the_smallest_threshold_reached(days: float, threshold: int | None) -> None:
    assert crossed_threshold(days, THRESHOLDS) == threshold


def test_warning_expired_and_nothing() -> None:
    apps = [
        app(credential("a", 5), object_id="o1"),
        app(credential("b", -2), object_id="o2"),
        app(credential("c", 300), credential("d", None), object_id="o3"),
    ]
    findings = evaluate(apps, now=NOW, thresholds=THRESHOLDS)
    assert [(f.credential.key_id, f.threshold, f.severity) for f in findings] == [
        ("a", 7, Severity.WARNING),
        ("b", EXPIRED, Severity.EXPIRED),
    ]


def test_a_newer_credential_of_the_same_kind_means_rotation() -> None:
    findings = evaluate(
        [app(credential("old", 5), credential("new", 700))], now=NOW, thresholds=THRESHOLDS
    )
    assert [(f.credential.key_id, f.severity) for f in findings] == [("old", Severity.ROTATING)]


def test_a_newer_credential_of_another_kind_is_no_rotation() -> None:
    findings = evaluate(
        [app(credential("old", 5), credential("cert", 700, CredentialKind.CERTIFICATE))],
        now=NOW,
        thresholds=THRESHOLDS,
    )
    assert findings[0].severity is Severity.WARNING


def test_a_successor_that_expires_soon_too_is_no_rotation() -> None:
    findings = evaluate(
        [app(credential("old", 5), credential("newish", 6))], now=NOW, thresholds=THRESHOLDS
    )
    assert {f.credential.key_id: f.severity for f in findings}["old"] is Severity.WARNING


def test_apps_without_credentials_produce_nothing() -> None:
    assert evaluate([app()], now=NOW, thresholds=THRESHOLDS) == []


def test_keys_are_per_credential_and_threshold() -> None:
    first = evaluate([app(credential("a", 20))], now=NOW, thresholds=THRESHOLDS)[0]
    later = evaluate(
        [app(credential("a", 20))], now=NOW + dt.timedelta(days=10), thresholds=THRESHOLDS
    )[0]
    assert first.key != later.key
    assert first.key == "applications:obj-1:a:30" and later.key == "applications:obj-1:a:14"


@given(st.floats(min_value=-400, max_value=400, allow_nan=False))
def test_a_finding_exists_exactly_when_a_threshold_is_reached(days: float) -> None:
    findings = evaluate([app(credential("x", days))], now=NOW, thresholds=THRESHOLDS)
    assert bool(findings) == (days <= max(THRESHOLDS))
