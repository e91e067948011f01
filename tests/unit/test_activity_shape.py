"""The pre-check that turns malformed activities into a 400 with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.bot.activity_shape import parsed_activity
from tests.support.recorder import message_activity

VALID = message_activity("https://smba.trafficmanager.net/emea/")


def without(path: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(VALID))
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node[part]
    del node[leaf]
    return body


def test_a_teams_message_activity_passes_parsed() -> None:
    assert parsed_activity(json.dumps(VALID).encode()) == (VALID, None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{nope", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[]", "the body must be a JSON object (a Bot Framework activity)"),
        (json.dumps(without("type")).encode(), "the activity has no 'type'"),
        (json.dumps(without("conversation.id")).encode(), "the activity has no 'conversation.id'"),
        (json.dumps(without("from")).encode(), "the activity has no 'from.id'"),
        (json.dumps(without("recipient.id")).encode(), "the activity has no 'recipient.id'"),
        (
            json.dumps({**VALID, "serviceUrl": "ftp://x"}).encode(),
            "the activity has no valid 'serviceUrl' (an http or https URL)",
        ),
        (
            json.dumps({**VALID, "serviceUrl": "http://"}).encode(),
            "the activity has no valid 'serviceUrl' (an http or https URL)",
        ),
    ],
)
def test_malformed_activities_are_explained(body: bytes, problem: str) -> None:
    assert parsed_activity(body) == (None, problem)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_any_json_gets_an_answer_never_an_exception(value: object) -> None:
    body, problem = parsed_activity(json.dumps(value).encode())
    if problem is None:
        assert body == value
    else:
        assert body is None and problem.startswith("the ")


@given(st.binary(max_size=200))
def test_any_bytes_get_an_answer_never_an_exception(raw: bytes) -> None:
    body, problem = parsed_activity(raw)
    if problem is None:
        assert body == json.loads(raw)
    else:
        assert body is None and problem.startswith("the ")


@given(
    st.dictionaries(
        st.sampled_from(["type", "serviceUrl", "conversation", "from", "recipient", "text"]),
        json_values,
        max_size=6,
    )
)
def test_only_complete_activities_pass(body: dict[str, Any]) -> None:
    if parsed_activity(json.dumps(body).encode())[1] is None:
        assert isinstance(body["type"], str) and body["type"]
        for party in ("conversation", "from", "recipient"):
            assert body[party]["id"]
