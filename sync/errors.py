"""Why a person's sync failed, in the handful of kinds IT acts on differently."""

from __future__ import annotations

from enum import StrEnum

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    CredentialError,
    MailboxAccessDeniedError,
    MailboxNotEnabledError,
    SourceUnavailableError,
    ThrottledError,
)


class FailureKind(StrEnum):
    NOT_IN_SCOPE = "not_in_scope"
    NO_MAILBOX = "no_mailbox"
    THROTTLED = "throttled"
    SOURCE_UNREACHABLE = "source_unreachable"
    CREDENTIAL = "credential"
    SAFETY_VALVE = "safety_valve"
    OTHER = "other"


ADVICE = {
    FailureKind.NOT_IN_SCOPE: (
        "Exchange refuses the mailbox: the person is not in the sync group, or was added less "
        "than an hour ago and the access policy has not caught up"
    ),
    FailureKind.NO_MAILBOX: "the mailbox is not reachable over REST (unlicensed, on-premises)",
    FailureKind.THROTTLED: "Microsoft 365 is throttling this mailbox; the next run continues",
    FailureKind.SOURCE_UNREACHABLE: "the scheduling system could not be read",
    FailureKind.CREDENTIAL: "Syncwarden's own credential was refused; run `syncwarden doctor`",
    FailureKind.SAFETY_VALVE: "the run was stopped by a safety valve",
    FailureKind.OTHER: "an unexpected failure",
}


class SafetyValveError(Exception):
    """A run would do something drastic (mass deletion, believing an empty source read)."""


def classify(error: BaseException) -> FailureKind:
    if isinstance(error, SafetyValveError):
        return FailureKind.SAFETY_VALVE
    if isinstance(error, MailboxAccessDeniedError):
        return FailureKind.NOT_IN_SCOPE
    if isinstance(error, MailboxNotEnabledError):
        return FailureKind.NO_MAILBOX
    if isinstance(error, ThrottledError):
        return FailureKind.THROTTLED
    if isinstance(error, SourceUnavailableError):
        return FailureKind.SOURCE_UNREACHABLE
    if isinstance(error, CredentialError | AuthenticationError):
        return FailureKind.CREDENTIAL
    return FailureKind.OTHER


def describe(error: BaseException) -> str:
    if isinstance(error, ConnectorError | SafetyValveError):
        return str(error)
    return f"{type(error).__name__}: {error}"
