"""Classifying Exchange ``InvokeCommand`` failures: exception type first, phrase second.

The bodies are the shapes public client code and captures show (see
``tests/contract/test_exchange_contract.py`` for the sources), plus the variants the endpoint is
not documented to exclude: a type part left empty, a plain-text or NUL-byte body, an unusual
status for a known exception.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors import errors
from syncwarden.connectors.exchange.client import (
    MEMBERSHIP_ROLE,
    exchange_error,
    parse_exchange_error,
)

REQUEST = errors.RequestInfo("POST", "https://outlook.office365.com/adminapi/beta/t/InvokeCommand")
ADD = "Add-DistributionGroupMember"
GENERIC = "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException"


def envelope(
    detail: str, *, code: str = "BadRequest", summary: str = "Error executing cmdlet"
) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": summary,
                "details": [{"code": "Client", "target": "", "message": detail}],
                "innererror": {
                    "message": summary,
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                    "internalexception": {
                        "message": f"Exception of type '{GENERIC}' was thrown.",
                        "type": GENERIC,
                    },
                },
                "adminapi.warnings@odata.type": "#Collection(String)",
                "@adminapi.warnings": [],
            }
        }
    ).encode()


def classify(status: int, body: bytes, **headers: str) -> errors.ConnectorError:
    return exchange_error(status, httpx.Headers(headers), body, REQUEST, cmdlet=ADD)


ALREADY = 'The recipient "ada@example.edu" is already a member of the group "Calendar Sync".'
NOT_MEMBER = 'The recipient "ada@example.edu" isn\'t a member of the group "Calendar Sync".'


@pytest.mark.parametrize("status", [400, 404, 500])
@pytest.mark.parametrize(
    "detail",
    [
        f"|Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException|{ALREADY}",
        f"||{ALREADY}",
        ALREADY,
    ],
)
def test_already_a_member_whatever_the_prefix_and_status(status: int, detail: str) -> None:
    error = classify(status, envelope(detail))
    assert type(error) is errors.AlreadyExistsError
    assert error.code == "AlreadyMember"
    assert ALREADY in error.message and "|" not in error.message


@pytest.mark.parametrize("status", [400, 404])
@pytest.mark.parametrize(
    "detail",
    [
        f"|Microsoft.Exchange.Management.Tasks.MemberNotFoundException|{NOT_MEMBER}",
        "|Microsoft.Exchange.Management.Tasks.MemberNotFoundException|Some other wording.",
        f"||{NOT_MEMBER}",
    ],
)
def test_not_a_member_is_told_apart_from_an_unknown_object(status: int, detail: str) -> None:
    error = classify(status, envelope(detail, code="NotFound"))
    assert type(error) is errors.NotFoundError
    assert error.code == "NotMember"


def test_an_unknown_group_or_member_is_plain_not_found() -> None:
    group = (
        "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The "
        "operation couldn't be performed because object 'no-group' couldn't be found on 'X'."
    )
    member = (
        "Ex94914C|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
        'Couldn\'t find object "nobody@example.edu". Please make sure that it was spelled '
        "correctly or specify a different object."
    )
    for detail in (group, member):
        error = classify(404, envelope(detail, code="NotFound"))
        assert type(error) is errors.NotFoundError
        assert error.code == "ManagementObjectNotFoundException"
    assert "nobody@example.edu" in classify(404, envelope(member, code="NotFound")).message


def test_a_cmdlet_no_exchange_role_grants_is_a_missing_role_not_a_bad_token() -> None:
    text = f"User is not allowed to call {ADD}"
    body = json.dumps(
        {"error": {"code": "Unauthorized", "message": text, "innererror": {"message": text}}}
    ).encode()
    error = classify(401, body)
    assert type(error) is errors.PermissionMissingError
    assert error.permission == MEMBERSHIP_ROLE
    assert "Security Group Creation and Membership" in error.message


@pytest.mark.parametrize(
    ("detail", "summary"),
    [
        (
            "|Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException|"
            "Parameter set cannot be resolved using the specified named parameters. Invalid "
            "cmdlet parameters specified. BypassSecurityGroupManagerCheck",
            "Invalid Operation",
        ),
        (
            "|System.Management.Automation.ParameterBindingException|A parameter cannot be found "
            "that matches parameter name 'BypassSecurityGroupManagerCheck'.",
            "Invalid Operation",
        ),
        (
            "A parameter cannot be found that matches parameter name "
            "'BypassSecurityGroupManagerCheck'.",
            "Error executing cmdlet",
        ),
    ],
)
def test_an_ungranted_switch_names_the_role_that_grants_it(detail: str, summary: str) -> None:
    error = classify(400, envelope(detail, summary=summary))
    assert type(error) is errors.PermissionMissingError
    assert error.permission == MEMBERSHIP_ROLE


def test_an_ungranted_parameter_we_do_not_map_still_says_how_to_find_the_role() -> None:
    detail = (
        "|System.Management.Automation.ParameterBindingException|A parameter cannot be found "
        "that matches parameter name 'Member'."
    )
    error = exchange_error(
        400, httpx.Headers({}), envelope(detail), REQUEST, cmdlet="Set-Something"
    )
    assert isinstance(error, errors.PermissionMissingError)
    assert error.permission is not None and "Get-ManagementRole" in error.permission


def test_only_the_manager_check_is_a_missing_role_too() -> None:
    detail = (
        "|Microsoft.Exchange.Management.Tasks.RecipientTaskException|You don't have sufficient "
        "permissions. This operation can only be performed by a manager of the group."
    )
    error = classify(400, envelope(detail))
    assert isinstance(error, errors.PermissionMissingError)
    assert error.permission == MEMBERSHIP_ROLE


@pytest.mark.parametrize("status", [429, 503, 504, 500, 400])
def test_the_tenant_concurrency_text_is_throttling_whatever_the_status(status: int) -> None:
    body = (
        b"You have reached the maximum number of concurrent requests per tenant. "
        b"Please wait and try again."
    )
    error = classify(status, body, **{"Retry-After": "2.5"})
    assert type(error) is errors.ThrottledError
    assert error.retryable and error.retry_after == 2.5


@pytest.mark.parametrize(("status", "expected"), [(503, 2.0), (504, None), (408, None)])
def test_service_unavailable_and_timeouts_are_transient(
    status: int, expected: float | None
) -> None:
    headers = {"Retry-After": "2"} if expected else {}
    error = classify(status, b"<html>upstream</html>", **headers)
    assert type(error) is errors.TransientError
    assert error.retry_after == expected


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_is_an_error_that_is_not_retried(status: int) -> None:
    error = exchange_error(
        status,
        httpx.Headers({"Location": "https://elsewhere.example.net/adminapi"}),
        b"",
        REQUEST,
        cmdlet=ADD,
    )
    assert type(error) is errors.ConnectorError
    assert not error.retryable
    assert "redirect" in error.message and "elsewhere.example.net" in error.message


def test_a_token_rejection_stays_an_authentication_error() -> None:
    error = classify(401, b"")
    assert type(error) is errors.AuthenticationError


def test_nul_bytes_and_html_bodies_still_classify_by_status() -> None:
    assert type(classify(403, bytes(4096))) is errors.AccessDeniedError
    assert "\x00" not in str(classify(403, bytes(64)))
    assert type(classify(400, b"<html>bad</html>")) is errors.BadRequestError


def test_the_captured_unknown_parameter_body_is_read_from_innererror_too() -> None:
    text = (
        "Parameter set cannot be resolved using the specified named parameters. Invalid cmdlet "
        "parameters specified. BypassSecurityGroupManagerCheck"
    )
    kind = "Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException"
    body = json.dumps(
        {
            "error": {
                "code": "BadRequest",
                "message": "Invalid Operation",
                "innererror": {"internalexception": {"message": text, "type": kind}},
            }
        }
    ).encode()
    parsed = parse_exchange_error(body)
    assert parsed.text == text and parsed.exception_types == (kind,)
    assert isinstance(classify(400, body), errors.PermissionMissingError)


@given(st.binary(max_size=300), st.integers(min_value=300, max_value=599))
def test_any_body_and_status_give_an_error_without_raising(body: bytes, status: int) -> None:
    error = classify(status, body)
    assert isinstance(error, errors.ConnectorError)
    assert "\x00" not in error.message
