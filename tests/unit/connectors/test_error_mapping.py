"""Classifying Microsoft 365 error responses, by code and status.

Message wording decides only where Microsoft gives one code two meanings: "already a member", and
Outlook's 403 ``ErrorAccessDenied`` (a mailbox outside the access policy versus an app without
the permission).
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors import errors
from syncwarden.connectors.graph.error_mapping import (
    MAX_RETRY_AFTER_SECONDS,
    error_fields,
    error_from_response,
    parse_retry_after,
    permission_for,
)

REQUEST = errors.RequestInfo("GET", "https://graph.microsoft.com/v1.0/users/x")


def graph_body(code: str, message: str = "something happened", request_id: str = "rid-1") -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "innerError": {"request-id": request_id}}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (404, "Request_ResourceNotFound", "Resource 'x' does not exist", errors.NotFoundError),
        (404, "ErrorItemNotFound", "The specified object was not found", errors.NotFoundError),
        (403, "Authorization_RequestDenied", "Insufficient privileges", errors.AccessDeniedError),
        (403, "ErrorAccessDenied", "Access to OData is disabled.", errors.MailboxAccessDeniedError),
        (
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified "
            "properties: 'members'.",
            errors.AlreadyExistsError,
        ),
        (409, "Conflict", "conflict", errors.AlreadyExistsError),
        (
            400,
            "Request_BadRequest",
            "Cannot Update a mail-enabled security groups",
            errors.BadRequestError,
        ),
        (
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is inactive",
            errors.MailboxNotEnabledError,
        ),
        (400, "Request_UnsupportedQuery", "needs ConsistencyLevel", errors.BadRequestError),
        (410, "SyncStateNotFound", "expired", errors.DeltaExpiredError),
        (400, "resyncRequired", "resync", errors.DeltaExpiredError),
        (401, "InvalidAuthenticationToken", "expired token", errors.AuthenticationError),
        (429, "ApplicationThrottled", "over its MailboxConcurrency limit", errors.ThrottledError),
        (503, "serviceNotAvailable", "busy", errors.TransientError),
        (504, "UnknownError", "gateway", errors.TransientError),
    ],
)
def test_graph_errors_map_by_code_and_status(
    status: int, code: str, message: str, expected: type[errors.ConnectorError]
) -> None:
    error = error_from_response(
        status, httpx.Headers({"request-id": "hdr-rid"}), graph_body(code, message), REQUEST
    )
    assert type(error) is expected
    assert error.code == code
    assert error.status == status
    assert error.request_id == "hdr-rid"
    assert error.request == REQUEST


def test_message_wording_alone_does_not_decide_the_class() -> None:
    error = error_from_response(400, {}, graph_body("SomeOtherCode", "it already exists"), REQUEST)
    assert type(error) is errors.BadRequestError


GRAPH = "https://graph.microsoft.com/v1.0"
MAILBOX = "3f1c2a6e-0000-4000-8000-000000000001"
POLICY_TEXTS = [
    "Access to OData is disabled.",
    "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy "
    "settings.",
    "ACCESS TO ODATA IS DISABLED.",
    "[RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
]


@pytest.mark.parametrize("message", POLICY_TEXTS)
def test_the_access_policy_refusal_is_a_mailbox_not_in_scope(message: str) -> None:
    request = errors.RequestInfo("GET", f"{GRAPH}/users/{MAILBOX}/calendarView/delta")
    error = error_from_response(403, {}, graph_body("ErrorAccessDenied", message), request)
    assert type(error) is errors.MailboxAccessDeniedError
    assert error.retryable, "policy changes take up to an hour to apply: retried, on a long wait"


def test_the_subscription_services_wrapped_policy_refusal_is_a_mailbox_not_in_scope() -> None:
    request = errors.RequestInfo("POST", f"{GRAPH}/subscriptions")
    body = graph_body(
        "ExtensionError",
        "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access to OData is "
        "disabled.]",
    )
    assert type(error_from_response(403, {}, body, request)) is errors.MailboxAccessDeniedError


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/users/{MAILBOX}/calendarView/delta"),
        ("GET", f"/users/{MAILBOX}/calendarView"),
        ("POST", f"/users/{MAILBOX}/events"),
        ("PATCH", f"/users/{MAILBOX}/events/AAMkAD%3D%3D"),
        ("DELETE", f"/users/{MAILBOX}/events/AAMkAD"),
        ("GET", f"/users/{MAILBOX}/calendar/events"),
        ("GET", f"/users/{MAILBOX}/calendars"),
    ],
)
def test_a_missing_calendar_permission_is_named_not_taken_for_the_policy(
    method: str, path: str
) -> None:
    request = errors.RequestInfo(method, f"{GRAPH}{path}")
    body = graph_body("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    error = error_from_response(403, httpx.Headers({"request-id": "r-9"}), body, request)
    assert type(error) is errors.PermissionMissingError
    assert error.permission == "Calendars.ReadWrite"
    assert not error.retryable, "nothing changes until an administrator grants it"
    assert not isinstance(error, errors.MailboxAccessDeniedError)
    assert isinstance(error, errors.AccessDeniedError)
    assert "Check credentials" in str(error) and "r-9" in str(error)


def test_an_unknown_access_denied_wording_is_a_permission_problem_not_a_propagation_wait() -> None:
    """Only the policy text means "not in scope yet"; anything else is said, not waited on."""
    request = errors.RequestInfo("GET", f"{GRAPH}/users/{MAILBOX}/events")
    body = graph_body("ErrorAccessDenied", "Some wording Microsoft has not used before.")
    error = error_from_response(403, {}, body, request)
    assert type(error) is errors.PermissionMissingError
    assert error.permission == "Calendars.ReadWrite"


def test_a_permission_refusal_outside_the_calendar_names_no_permission() -> None:
    request = errors.RequestInfo("GET", f"{GRAPH}/users/{MAILBOX}/mailboxSettings")
    body = graph_body("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    error = error_from_response(403, {}, body, request)
    assert type(error) is errors.PermissionMissingError
    assert error.permission is None


def test_the_directorys_refusal_stays_a_plain_access_denied() -> None:
    request = errors.RequestInfo("POST", f"{GRAPH}/groups/g/members/$ref")
    body = graph_body("Authorization_RequestDenied", "Insufficient privileges to complete.")
    assert type(error_from_response(403, {}, body, request)) is errors.AccessDeniedError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{GRAPH}/users/{MAILBOX}/events?$top=1", "Calendars.ReadWrite"),
        (f"{GRAPH}/users/{MAILBOX}/calendarview/delta", "Calendars.ReadWrite"),
        (f"{GRAPH}/users/{MAILBOX}/calendar", "Calendars.ReadWrite"),
        (f"{GRAPH}/users/{MAILBOX}", None),
        (f"{GRAPH}/subscriptions", None),
        (f"{GRAPH}/groups/eventsgroup/members", None),
    ],
)
def test_the_permission_is_read_from_the_request_url(url: str, expected: str | None) -> None:
    assert permission_for(errors.RequestInfo("GET", url)) == expected
    assert permission_for(None) is None


def test_throttling_carries_retry_after_and_body_request_id() -> None:
    error = error_from_response(
        429, httpx.Headers({"Retry-After": "2.5"}), graph_body("TooManyRequests"), REQUEST
    )
    assert isinstance(error, errors.ThrottledError)
    assert error.retry_after == 2.5
    assert error.request_id == "rid-1"
    assert error.retryable


@pytest.mark.parametrize("body", [b"", b"<html>proxy error</html>", b"[]", b'{"error": "text"}'])
def test_non_graph_bodies_still_classify_by_status(body: bytes) -> None:
    assert type(error_from_response(502, {}, body, REQUEST)) is errors.TransientError
    assert type(error_from_response(404, {}, body, REQUEST)) is errors.NotFoundError
    assert error_fields(body) == (None, None, None)


@given(
    st.integers(min_value=400, max_value=599),
    st.binary(max_size=300),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
)
def test_any_error_response_maps_to_a_connector_error(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    error = error_from_response(status, headers, body, REQUEST)
    assert isinstance(error, errors.ConnectorError)
    assert error.status == status
    assert str(error)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0.25", 0.25),
        (" 7 ", 7.0),
        ("-4", 0.0),
        ("100000", MAX_RETRY_AFTER_SECONDS),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (None, None),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30.0


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_stays_in_bounds(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or 0.0 <= result <= MAX_RETRY_AFTER_SECONDS
