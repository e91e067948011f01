"""The credential rules over the sandbox tenant's app registrations, read through Graph."""

from __future__ import annotations

import datetime as dt

from syncwarden.connectors.graph.applications import OwnerKind
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.credential_rules import EXPIRED, Severity, evaluate

THRESHOLDS = [60, 30, 14, 7, 3, 1]


async def test_findings_for_the_seeded_apps(m365: Microsoft365, tenant: SandboxTenant) -> None:
    apps = await m365.applications.list_with_credentials(OwnerKind.APPLICATION)
    findings = evaluate(apps, now=dt.datetime.now(dt.UTC), thresholds=THRESHOLDS)
    by_app = {f.app.display_name: f for f in findings}
    assert by_app["Library Kiosk Sync"].severity is Severity.EXPIRED
    assert by_app["Library Kiosk Sync"].threshold == EXPIRED
    assert by_app["Parking Permits"].threshold == 1
    assert by_app["Alumni Portal"].threshold == 3
    assert by_app["Room Booking Connector"].threshold == 7
    assert by_app["Transcript Export"].threshold == 14
    assert by_app["LMS Roster Bridge"].threshold == 30
    assert by_app["Cafeteria Menu Bot"].severity is Severity.ROTATING, (
        "a newer secret is already there"
    )
    assert by_app["Badge Printer"].severity is Severity.ROTATING
    assert "Orphaned Prototype" not in by_app, "no credentials, no alert"
    assert "Syncwarden" not in by_app


async def test_service_principals_carry_saml_signing_certificates(m365: Microsoft365) -> None:
    principals = await m365.applications.list_with_credentials(OwnerKind.SERVICE_PRINCIPAL)
    saml = [p for p in principals if p.display_name == "Campus SSO (SAML)"]
    assert saml and saml[0].credentials, (
        "the SAML signing certificate lives on the service principal"
    )
