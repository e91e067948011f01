"""Why a person's sync failed, in the handful of kinds IT acts on differently.

The kinds and the connector errors' share of the sorting are ``connectors.errors``' (tickets
record them too); what only a sync run can hit, the safety valve, is sorted here. ``FailureKind``
is imported from here by the sync and its callers as before.
"""

from __future__ import annotations

from syncwarden.connectors.errors import (
    ConnectorError,
    FailureKind,
    PermissionMissingError,
    failure_kind,
)

__all__ = [
    "ADVICE",
    "FailureKind",
    "LeaseLostError",
    "SafetyValveError",
    "classify",
    "describe",
    "missing_permission_text",
]


ADVICE = {
    FailureKind.NOT_IN_SCOPE: (
        "Exchange refuses the mailbox: the person is not in the sync group, or was added less "
        "than an hour ago and the access policy has not caught up"
    ),
    FailureKind.NO_MAILBOX: "the mailbox is not reachable over REST (unlicensed, on-premises)",
    FailureKind.THROTTLED: "Microsoft 365 is throttling this mailbox; the next run continues",
    FailureKind.SOURCE_UNREACHABLE: "the scheduling system could not be read",
    FailureKind.CREDENTIAL: "Syncwarden's own credential was refused; run `syncwarden doctor`",
    FailureKind.PERMISSION: (
        "Syncwarden's app is missing a Microsoft Graph application permission (for calendars: "
        "Calendars.ReadWrite). This is not about the person's access: an administrator must add "
        "the permission to the Syncwarden app registration and grant admin consent (or, where "
        "mailbox access is scoped with RBAC for Applications, assign the matching Exchange "
        "application role); then run `syncwarden doctor`"
    ),
    FailureKind.SAFETY_VALVE: "the run was stopped by a safety valve",
    FailureKind.OTHER: "an unexpected failure",
}


class LeaseLostError(Exception):
    """Another worker took this person over while the run was writing; it must not commit."""


class SafetyValveError(Exception):
    """A run would do something drastic (mass deletion, believing an empty source read)."""


def classify(error: BaseException) -> FailureKind:
    if isinstance(error, SafetyValveError):
        return FailureKind.SAFETY_VALVE
    return failure_kind(error)


def describe(error: BaseException) -> str:
    """The failure in words for the enrollment's status and IT; a missing permission first."""
    if isinstance(error, PermissionMissingError):
        return f"{missing_permission_text(error)}: {error}"
    if isinstance(error, ConnectorError | SafetyValveError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def missing_permission_text(error: PermissionMissingError) -> str:
    """What is missing, by name, with the fix: the permission and admin consent."""
    # Short enough that the permission survives the 80 characters a status line shows.
    if error.permission:
        return (
            f"Syncwarden's app lacks the Graph permission {error.permission}; "
            "grant it with admin consent"
        )
    return "Syncwarden's app lacks an API permission this call needs; grant it with admin consent"
