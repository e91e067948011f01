"""Classifying Microsoft 365 error responses, by code and status (never by message wording)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import errors
from connectors.exchange.client import exchange_error
from connectors.graph.error_mapping import (
    MAX_RETRY_AFTER_SECONDS,
    error_fields,
    error_from_response,
    parse_retry_after,
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


def exchange_body(message: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": "BadRequest",
                "message": "Error executing cmdlet",
                "details": [{"message": message}],
                "innererror": {"internalException": {"message": message}},
            }
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "message", "expected", "code"),
    [
        (
            400,
            "|Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException|The recipient "
            "ada@example.edu is already a member of the group Calendar Sync.",
            errors.AlreadyExistsError,
            "AlreadyMember",
        ),
        (
            400,
            "|Microsoft.Exchange.Management.Tasks.MemberNotFoundException|The recipient "
            "ada@example.edu isn't a member of the group Calendar Sync.",
            errors.NotFoundError,
            "NotMember",
        ),
        (
            400,
            "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The "
            "operation couldn't be performed because object 'nobody' couldn't be found.",
            errors.NotFoundError,
            None,
        ),
        (
            403,
            "The role assigned to application isn't supported in this scenario.",
            errors.AccessDeniedError,
            None,
        ),
        (401, "token expired", errors.AuthenticationError, None),
        (429, "slow down", errors.ThrottledError, None),
        (500, "boom", errors.TransientError, None),
        (
            400,
            "A parameter cannot be found that matches parameter name 'Nope'.",
            errors.BadRequestError,
            None,
        ),
    ],
)
def test_exchange_errors(
    status: int, message: str, expected: type[errors.ConnectorError], code: str | None
) -> None:
    error = exchange_error(status, httpx.Headers({}), exchange_body(message), REQUEST)
    assert type(error) is expected
    assert error.code == code
    assert message.split("|")[-1] in error.message
