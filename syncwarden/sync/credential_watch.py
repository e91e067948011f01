"""Watching app secrets and certificates, and telling IT before they expire.

Each scan reads the watched app registrations and service principals in a handful of Graph
requests (999 per page, only the fields needed), applies :mod:`sync.credential_rules`, and sends
each finding once: the alert history in the database is keyed by credential and threshold, so
reruns, restarts and two replicas scanning at once never repeat an alert. A credential that was
alerted and has since been removed is reported as resolved, once.

Owners are named in each alert. They are read only for the apps about to be alerted, once per
app however many of its credentials alert, in ``$batch`` calls of 20 (5,000 apps cost about 50
requests on a first scan instead of one per alert), all before the scan's one transaction. An
owner list that cannot be read (after the client's retries of throttled lookups) does not hold
its alert back: the alert goes out saying so and pointing at the app's Owners page, because the
expiry is the news; waiting for the next scan to name the owners would delay it by hours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.graph.applications import (
    AppWithCredentials,
    CredentialKind,
    GraphApplications,
    OwnerKind,
    Owners,
)
from syncwarden.core.db import (
    Base,
    UtcDateTime,
    insert_ignoring_duplicates,
    utc_now,
    write_transaction,
)
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import AlertSettings
from syncwarden.sync.credential_rules import EXPIRED, CredentialFinding, Severity, evaluate
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from syncwarden.workflows.unit_of_work import UnitsOfWork

log = get_logger(__name__)
# Said of an app whose owners were not looked up before the transaction (a finding that became
# new between the unlocked read and the locked one): no Graph call is made with rows locked.
NOT_LOOKED_UP = Owners(unreadable="they were not looked up in this scan")
OwnersByApp = dict[tuple[OwnerKind, str], Owners]
# Rows per INSERT: ten columns each keeps a statement far below PostgreSQL's 32,767 parameters.
ROWS_PER_INSERT = 500

ROTATION_CHECKLIST = (
    "1. Create a new {kind} on the app registration (keep the old one for now).\n"
    "2. Give it to whoever configures the system that uses this app, and have them switch.\n"
    "3. Check that the system works with the new {kind}.\n"
    "4. Remove the old {kind} from the app registration."
)


class CredentialAlert(Base):
    """One alert sent: a credential crossing one threshold. The key makes it happen once."""

    __tablename__ = "credential_alerts"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    app_name: Mapped[str] = mapped_column(String(256))
    threshold: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(32))
    end_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(256))
    snoozed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminders: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class ScanReport:
    apps: int
    findings: int
    alerted: int
    resolved: int


class CredentialWatch:
    def __init__(
        self,
        applications: GraphApplications,
        units: UnitsOfWork,
        settings: AlertSettings,
        *,
        own_app_ids: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._applications = applications
        self._units = units
        self._sessions = units.sessions
        self._settings = settings
        self._own = [app_id.lower() for app_id in own_app_ids if app_id]
        self._clock = clock

    async def scan(self) -> ScanReport:
        """Alert what crossed a threshold, repeat what a snooze held back, resolve what is gone.

        The alerts are worded (owners read from Graph, in bulk) before the transaction, so no
        Graph call holds the alert rows locked; then every alert row and every message of the
        scan commit together, in one transaction: all of them or, on any failure, none.
        """
        now = self._clock()
        apps = await self._watched_apps()
        findings = evaluate(apps, now=now, thresholds=self._settings.credential_thresholds_days)
        present = {(app.object_id, cred.key_id) for app in apps for cred in app.credentials}
        by_key = {finding.key: finding for finding in findings}
        due = [by_key[key] for key in await self._needing_words(by_key, now)]
        owners = await self._owners_of(due)
        drafts = {finding.key: self._alert(finding, owners) for finding in due}
        resolved: list[CredentialAlert] = []
        async with self._units() as work:
            keys = list(by_key)
            query = select(CredentialAlert.key).where(CredentialAlert.key.in_(keys))
            known = set((await work.session.scalars(query)).all()) if keys else set()
            new = [finding for finding in findings if finding.key not in known]
            # A few statements for all the new rows, not one each; a row another scan committed
            # meanwhile is skipped (and its message: the outbox keeps one message per key).
            rows = [_record(finding, now) for finding in new]
            for start in range(0, len(rows), ROWS_PER_INSERT):
                await insert_ignoring_duplicates(
                    work.session,
                    CredentialAlert,
                    rows[start : start + ROWS_PER_INSERT],
                    unique="key",
                )
            for finding in new:
                alert = drafts.get(finding.key) or self._alert(finding, owners)
                work.to_channel(Channel.IT, alert, key=f"credential:{finding.key}")
            open_alerts = (
                await work.session.scalars(
                    select(CredentialAlert)
                    .where(CredentialAlert.resolved_at.is_(None))
                    .with_for_update()
                )
            ).all()
            for row in open_alerts:
                if (row.object_id, row.key_id) not in present:
                    row.resolved_at = now
                    resolved.append(row)
                elif row.snoozed_until is not None and row.snoozed_until <= now:
                    row.snoozed_until = None  # the snooze is over: say it again
                    row.reminders += 1
                    reminded = by_key.get(row.key)
                    if reminded is not None:
                        alert = drafts.get(row.key) or self._alert(reminded, owners)
                        work.to_channel(
                            Channel.IT, alert, key=f"credential:{row.key}:reminder:{row.reminders}"
                        )
            for credential in _one_per_credential(resolved):
                text = (
                    f"Resolved: the old credential {credential.key_id} of "
                    f"**{credential.app_name}** has been removed."
                )
                work.to_channel(
                    Channel.IT,
                    Notification(NotificationKind.CREDENTIAL_RESOLVED, None, text),
                    key=f"credential-resolved:{credential.object_id}:{credential.key_id}",
                )
        return ScanReport(len(apps), len(findings), len(new), len(_one_per_credential(resolved)))

    async def _needing_words(
        self, by_key: dict[str, CredentialFinding], now: datetime
    ) -> list[str]:
        """Findings that will be alerted this scan (new, or their snooze is over), read unlocked."""
        if not by_key:
            return []
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(CredentialAlert.key, CredentialAlert.snoozed_until).where(
                        CredentialAlert.key.in_(list(by_key))
                    )
                )
            ).all()
        stored: dict[str, datetime | None] = {key: snoozed for key, snoozed in rows}
        due: list[str] = []
        for key in by_key:
            snoozed = stored.get(key)
            if key not in stored or (snoozed is not None and snoozed <= now):
                due.append(key)
        return due

    async def _owners_of(self, findings: Sequence[CredentialFinding]) -> OwnersByApp:
        """Owners of every app these findings are about, each app read once, in bulk."""
        wanted: dict[OwnerKind, list[str]] = {}
        for finding in findings:
            wanted.setdefault(finding.app.owner_kind, []).append(finding.app.object_id)
        found: OwnersByApp = {}
        for kind, object_ids in wanted.items():
            read = await self._applications.owners_of_many(kind, object_ids)
            found.update({(kind, object_id): owners for object_id, owners in read.items()})
        unreadable = {app: owners for app, owners in found.items() if owners.unreadable}
        if unreadable:
            (kind, object_id), first = next(iter(unreadable.items()))
            log.warning(
                "credential_watch.owners_unreadable",
                apps=len(unreadable),
                first_app=f"{kind.value}/{object_id}",
                reason=first.unreadable,
            )
        return found

    async def expiring(
        self, *, within_days: float, own_only: bool = False
    ) -> list[CredentialFinding]:
        """Watched credentials ending within ``within_days`` (expired too), soonest first."""
        apps = await self._watched_apps(own_only=own_only)
        findings = evaluate(apps, now=self._clock(), thresholds=[int(within_days) + 1])
        inside = [f for f in findings if f.days_left <= within_days]
        return sorted(inside, key=lambda f: f.days_left)

    async def digest(self, *, within_days: float = 60) -> int:
        """The weekly digest: one message listing all that expires soon; returns how many."""
        findings = await self.expiring(within_days=within_days)
        now = self._clock()
        if findings:
            lines = [
                f"**Credentials expiring in the next {int(within_days)} days** ({len(findings)})"
            ]
            for f in findings:
                kind = "secret" if f.credential.kind is CredentialKind.SECRET else "certificate"
                when = "expired" if f.days_left <= 0 else f"{int(f.days_left)} days"
                rotating = " · rotation in progress" if f.severity is Severity.ROTATING else ""
                name = f.credential.display_name or "-"
                lines.append(f"- {f.app.display_name}: {kind} '{name}', {when}{rotating}")
            text = "\n".join(lines)
        else:
            text = f"No watched credential expires in the next {int(within_days)} days."
        async with self._units() as work:
            work.to_channel(
                Channel.IT,
                Notification(NotificationKind.CREDENTIAL_ALERT, None, text),
                key=f"credential-digest:{now:%G-W%V}",
            )
        return len(findings)

    async def _watched_apps(self, *, own_only: bool = False) -> list[AppWithCredentials]:
        return [
            app
            for kind in (OwnerKind.APPLICATION, OwnerKind.SERVICE_PRINCIPAL)
            for app in await self._applications.list_with_credentials(kind)
            if (app.app_id.lower() in self._own if own_only else self._watched(app))
        ]

    async def acknowledge(self, alert_key: str, actor: str) -> str:
        """Someone in IT has taken the alert on; it will not be repeated after a snooze."""
        async with write_transaction(self._sessions) as session:
            alert = await session.get(CredentialAlert, alert_key, with_for_update=True)
            if alert is None:
                return "That alert no longer exists."
            alert.acknowledged_by = actor
            alert.snoozed_until = None
            return f"Acknowledged by {actor}: {alert.app_name}"

    async def snooze(self, alert_key: str, actor: str, *, hours: float = 24) -> str:
        """Ask again in a day (at the first scan after that), unless acknowledged meanwhile."""
        until = self._clock() + timedelta(hours=hours)
        async with write_transaction(self._sessions) as session:
            alert = await session.get(CredentialAlert, alert_key, with_for_update=True)
            if alert is None:
                return "That alert no longer exists."
            if alert.acknowledged_by:
                return f"Already acknowledged by {alert.acknowledged_by}."
            alert.snoozed_until = until
            return f"Snoozed by {actor} until {until:%d %b %H:%M} UTC: {alert.app_name}"

    def _watched(self, app: AppWithCredentials) -> bool:
        if self._settings.watch_all_apps:
            return True
        wanted = {a.lower() for a in self._settings.watch_app_ids} | set(self._own)
        return app.app_id.lower() in wanted

    def _alert(self, finding: CredentialFinding, owners: OwnersByApp) -> Notification:
        app, credential = finding.app, finding.credential
        kind = "client secret" if credential.kind is CredentialKind.SECRET else "certificate"
        days = int(finding.days_left)
        when = credential.end.strftime("%a %d %b %Y") if credential.end else "unknown"
        if finding.threshold == EXPIRED:
            headline = f"The {kind} of **{app.display_name}** has expired ({when})"
        else:
            headline = (
                f"The {kind} of **{app.display_name}** expires in {max(days, 0)} days ({when})"
            )
        identity = (
            credential.hint + "…" if credential.hint else f"thumbprint {credential.thumbprint}"
        )
        lines = [
            headline,
            f"App: {app.display_name} (app id {app.app_id}) · "
            f"credential '{credential.display_name or '-'}' ({identity}) · "
            f"key id {credential.key_id}",
            _owners_line(owners.get((app.owner_kind, app.object_id), NOT_LOOKED_UP)),
        ]
        if finding.severity is Severity.ROTATING:
            lines.append(
                "Rotation in progress: a newer one is already there. "
                "Remove the old one once the new one is in use."
            )
        else:
            lines.append(ROTATION_CHECKLIST.format(kind=kind))
        if self._settings.runbook_url:
            lines.append(f"Runbook: {self._settings.runbook_url}")
        details = {
            "alert": finding.key,
            "app_id": app.app_id,
            "key_id": credential.key_id,
            "threshold": str(finding.threshold),
        }
        return Notification(NotificationKind.CREDENTIAL_ALERT, None, "\n\n".join(lines), details)


def _owners_line(owners: Owners) -> str:
    named = ", ".join(owners.names)
    if owners.unreadable is None:
        return f"Owners: {named or 'none recorded'}"
    if named:
        return f"Owners: {named} (not all: {owners.unreadable})"
    return (
        f"Owners: could not be read this time ({owners.unreadable}); "
        "see the app's Owners page in Entra"
    )


def _record(finding: CredentialFinding, now: datetime) -> dict[str, object]:
    """An alert row's columns, for the scan's one insert of all its new rows."""
    return {
        "key": finding.key,
        "owner_kind": finding.app.owner_kind.value,
        "object_id": finding.app.object_id,
        "key_id": finding.credential.key_id,
        "app_name": finding.app.display_name,
        "threshold": finding.threshold,
        "severity": finding.severity.value,
        "end_at": finding.credential.end,
        "sent_at": now,
        "reminders": 0,
    }


def _one_per_credential(alerts: Sequence[CredentialAlert]) -> list[CredentialAlert]:
    seen: dict[tuple[str, str], CredentialAlert] = {}
    for alert in alerts:
        seen.setdefault((alert.object_id, alert.key_id), alert)
    return list(seen.values())
