"""What can go wrong talking to Microsoft 365, as a tree callers can branch on.

Errors are classified from the service's error *code* (and HTTP status) wherever the code
tells, because Microsoft rewords messages freely. Where one code means two things, a short stable
phrase decides, and only there: "already a member" (with ``Request_BadRequest``), and Outlook's
``ErrorAccessDenied``, which is "Access to OData is disabled" for a mailbox outside the access
policy and anything else for a missing permission. Each error keeps the request id Microsoft
returned and the request it answered, which is what support needs to trace a failure.

:class:`FailureKind` and :func:`failure_kind` sort these errors into the handful of kinds IT acts
on differently. They sit here, beside the tree, because both the sync (a person's last run) and
the workflows (a ticket's failed step) record a kind, and the workflows may import only connector
interfaces; the sync adds its own kind (the safety valve) in ``sync.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from syncwarden.core.errors import SyncwardenError


@dataclass(frozen=True)
class RequestInfo:
    """The request an error answered (method and URL without the query string's values)."""

    method: str
    url: str


class ConnectorError(SyncwardenError):
    """Base of every Microsoft 365 failure."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        request: RequestInfo | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.request = request
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.request is not None:
            parts.append(f"request={self.request.method} {self.request.url}")
        if self.request_id:
            parts.append(f"request-id={self.request_id}")
        return " ".join(parts)


class CredentialError(ConnectorError):
    """No token could be obtained: wrong or expired secret, unknown app, bad certificate."""


class AuthenticationError(ConnectorError):
    """The service rejected our token (401)."""


class NotFoundError(ConnectorError):
    """The user, group, event or other object does not exist (or is invisible to us)."""


class AccessDeniedError(ConnectorError):
    """The app lacks a permission or role for this call (403)."""


class MailboxAccessDeniedError(AccessDeniedError):
    """Exchange refused this mailbox (``ErrorAccessDenied``).

    Usually the mailbox is outside the application access policy's group, or was added to it too
    recently: policy changes take from 30 minutes to over an hour to apply.
    """

    retryable = True


class PermissionMissingError(AccessDeniedError):
    """The app lacks an API permission or an admin role the call needs; ``permission`` names it.

    Not retried: nothing changes until an administrator grants it, so it is reported as a
    credential problem with the exact grant to make, never as a mailbox "not in scope yet".
    """

    def __init__(self, message: str, *, permission: str | None = None, **options: Any) -> None:
        super().__init__(message, **options)
        self.permission = permission


class AlreadyExistsError(ConnectorError):
    """The object (or the membership) already exists; idempotent adds treat this as success."""


class DuplicateTransactionError(AlreadyExistsError):
    """A create reused a ``transactionId``: the event it made earlier exists already.

    ``existing_event_id`` is that event's id when Graph says it (``@event.existingEventId``);
    it is None when the answer did not carry it, and the caller must look the event up itself.
    """

    def __init__(
        self, message: str, *, existing_event_id: str | None = None, **options: Any
    ) -> None:
        super().__init__(message, **options)
        self.existing_event_id = existing_event_id


class MailboxNotEnabledError(ConnectorError):
    """The mailbox is unreachable over REST: unlicensed, inactive, soft-deleted or on-premises."""


class BadRequestError(ConnectorError):
    """The service refused the request as malformed or not allowed for this object."""


class DeltaExpiredError(ConnectorError):
    """A delta or sync token is no longer valid; the caller must start a full resync."""


class ThrottledError(ConnectorError):
    """429: too many requests; ``retry_after`` says how long the service asked us to wait."""

    retryable = True


class TransientError(ConnectorError):
    """A failure that should go away by itself: 5xx, timeout, dropped connection."""

    retryable = True


class SourceUnavailableError(ConnectorError):
    """The scheduling system could not be read (feed down, database unreachable, bad answer).

    Never treated as "no appointments": a sync run that cannot read its source changes nothing.
    """

    retryable = True


class FailureKind(StrEnum):
    """What IT does about a failure; stored as text (``enrollments.last_error_kind``,
    ``tickets.failure_kind``, at most 32 characters) and typed after ``error:`` in IT's lists."""

    NOT_IN_SCOPE = "not_in_scope"
    NO_MAILBOX = "no_mailbox"
    THROTTLED = "throttled"
    SOURCE_UNREACHABLE = "source_unreachable"
    CREDENTIAL = "credential"
    # The app's token works but lacks an API permission the call needs (Calendars.ReadWrite) or
    # an Exchange role (Exchange.ManageAsApp, a management role assignment).
    PERMISSION = "permission"
    # Only the sync stops itself this way (sync.errors.SafetyValveError).
    SAFETY_VALVE = "safety_valve"
    OTHER = "other"


def failure_kind(error: BaseException) -> FailureKind:
    """The kind of a failure talking to the outside world; anything else (a bug, our own
    database) is ``OTHER``. The two ``ErrorAccessDenied`` kinds were told apart by the connector
    already (:class:`MailboxAccessDeniedError`, :class:`PermissionMissingError`)."""
    if isinstance(error, MailboxAccessDeniedError):
        return FailureKind.NOT_IN_SCOPE
    if isinstance(error, PermissionMissingError):
        return FailureKind.PERMISSION
    if isinstance(error, MailboxNotEnabledError):
        return FailureKind.NO_MAILBOX
    if isinstance(error, ThrottledError):
        return FailureKind.THROTTLED
    if isinstance(error, SourceUnavailableError):
        return FailureKind.SOURCE_UNREACHABLE
    if isinstance(error, CredentialError | AuthenticationError):
        return FailureKind.CREDENTIAL
    return FailureKind.OTHER
