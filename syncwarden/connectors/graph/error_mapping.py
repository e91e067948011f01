"""Turning a Graph error response into the matching :mod:`connectors.errors` class.

Pure functions over status, headers and body, so the mapping can be tested exhaustively without a
network. Graph's error body is ``{"error": {"code", "message", "innerError": {...}}}``;
anything else (an HTML page from a proxy, an empty body) still yields an error of the right class
from the status alone. Classes follow the code and status; the message decides only where
Microsoft gives one code two meanings: "already a member", and Outlook's ``ErrorAccessDenied``
(access policy versus missing permission, see ``_POLICY_PHRASES``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from syncwarden.connectors.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AuthenticationError,
    BadRequestError,
    ConnectorError,
    DeltaExpiredError,
    DuplicateTransactionError,
    MailboxAccessDeniedError,
    MailboxNotEnabledError,
    NotFoundError,
    PermissionMissingError,
    RequestInfo,
    ThrottledError,
    TransientError,
)

_NOT_FOUND_CODES = frozenset(
    {
        "request_resourcenotfound",
        "erroritemnotfound",
        "resourcenotfound",
        "itemnotfound",
        "notfound",
    }
)
_MAILBOX_NOT_ENABLED_CODES = frozenset(
    {"mailboxnotenabledforrestapi", "mailboxnotsupportedforrestapi", "errormailboxnotenabled"}
)
_DELTA_EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
_ALREADY_EXISTS_PHRASE = "already exist"
# Outlook answers two different refusals with the same 403 ``ErrorAccessDenied``, so the message
# is the only thing that tells them apart; we match its stable start, case-insensitively:
# - a mailbox outside the app's application access policy (or a policy change not applied yet):
#   "Access to OData is disabled." (learn.microsoft.com/graph/auth-limit-mailbox-access,
#   "Handling API errors"); current tenants append ": [RAOP] : Blocked by tenant configured
#   AppOnly AccessPolicy settings.", and subscriptions wrap it in an ``ExtensionError``
#   ("... Reason: Access to OData is disabled.]", msgraph-sdk-java#510);
# - an app without the permission the call needs: "Access is denied. Check credentials and try
#   again." (public issue reports, e.g. msgraph-sdk-javascript#282, python-sample-send-mail#4).
# Only the policy wording means "not in scope (yet)", the answer retried on the long schedule.
# Any other ``ErrorAccessDenied`` text, the documented permission one or a wording we have not
# seen, is treated as a missing permission: not retried, reported to IT with the grant to make,
# and Microsoft's own words kept in the message. The opposite default is what hid a missing
# permission as a mailbox "not propagated yet", retried for ever; a wrong guess this way costs
# one alert (the periodic sync recovers by itself) or one ticket Retry.
_POLICY_PHRASES = ("access to odata is disabled", "apponly accesspolicy")
# The permission Syncwarden's calendar calls need, recognised from the request URL.
_CALENDAR_SEGMENTS = frozenset({"events", "calendarview", "calendar", "calendars"})
CALENDAR_PERMISSION = "Calendars.ReadWrite"
MAX_RETRY_AFTER_SECONDS = 300.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After``: delta-seconds (fractions allowed) or an HTTP date.

    Returns None for a missing or unusable value; clamps to [0, MAX_RETRY_AFTER_SECONDS] so a
    hostile or broken header cannot stall us for days.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until_http_date(text, now)
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _seconds_until_http_date(text: str, now: float | None) -> float | None:
    import time

    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    return moment.timestamp() - (time.time() if now is None else now)


def error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, request id) from a Graph error body, tolerating anything that is not one."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, None, None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
        return None, None, None
    error = parsed["error"]
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    inner = error.get("innerError") or error.get("innererror")
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    return code, message, request_id if isinstance(request_id, str) else None


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, request: RequestInfo
) -> ConnectorError:
    """The error a non-2xx Graph response stands for."""
    code, message, body_request_id = error_fields(body)
    request_id = headers.get("request-id") or body_request_id
    text = message or f"Graph answered HTTP {status}"
    options: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "request": request,
    }
    lowered = (code or "").lower()
    if status == 429:
        return ThrottledError(
            text, retry_after=parse_retry_after(headers.get("Retry-After")), **options
        )
    if lowered in _MAILBOX_NOT_ENABLED_CODES:
        return MailboxNotEnabledError(text, **options)
    if lowered in _DELTA_EXPIRED_CODES or status == 410:
        return DeltaExpiredError(text, **options)
    if status == 401:
        return AuthenticationError(text, **options)
    if status == 403 and _names_access_policy(text):
        return MailboxAccessDeniedError(text, **options)
    if lowered == "erroraccessdenied":
        return PermissionMissingError(text, permission=permission_for(request), **options)
    if status == 403:
        return AccessDeniedError(text, **options)
    if status == 404 or lowered in _NOT_FOUND_CODES:
        return NotFoundError(text, **options)
    if lowered == "errorduplicatetransactionid":
        # 400 in client code and issue reports, 409 in some; the id is there only sometimes.
        return DuplicateTransactionError(
            text, existing_event_id=_existing_event_id(body), **options
        )
    if status == 409 or (
        lowered == "request_badrequest" and _ALREADY_EXISTS_PHRASE in text.lower()
    ):
        return AlreadyExistsError(text, **options)
    if status >= 500:
        return TransientError(
            text, retry_after=parse_retry_after(headers.get("Retry-After")), **options
        )
    return BadRequestError(text, **options)


def _names_access_policy(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in _POLICY_PHRASES)


def permission_for(request: RequestInfo | None) -> str | None:
    """The application permission a refused request needed, when its URL says (calendar calls)."""
    if request is None:
        return None
    segments = request.url.split("?", 1)[0].lower().split("/")
    return CALENDAR_PERMISSION if _CALENDAR_SEGMENTS.intersection(segments) else None


def _existing_event_id(body: bytes) -> str | None:
    """``error["@event.existingEventId"]`` of a duplicate-transaction answer, when present."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    value = error.get("@event.existingEventId") if isinstance(error, dict) else None
    return value if isinstance(value, str) and value else None
