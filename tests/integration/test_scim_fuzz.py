"""Generated filters, create bodies and PATCH bodies against the live /scim/v2: every one is
answered with a result or a 4xx SCIM error (RFC 7644 §3.12), never a 5xx.

Each example is a round trip through the real app, so the counts are modest and the cases are
the same every run (derandomized): CI must not turn red on a case no change introduced.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.scim import ERROR_SCHEMA, PATCH_SCHEMA, ScimHarness, scim_harness, user_body
from tests.support.workflow import PEOPLE, Harness

pytestmark = pytest.mark.postgres

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)

_ATTRIBUTES = st.sampled_from(
    [
        "userName",
        "externalId",
        "active",
        "emails",
        'emails[type eq "work"].value',
        "emails.value",
        "name.familyName",
        "meta.created",
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "id",
        "nope",
        "",
    ]
)
_OPERATORS = st.sampled_from(
    [
        "eq",
        "ne",
        "co",
        "sw",
        "ew",
        "gt",
        "ge",
        "lt",
        "le",
        "pr",
        "EQ",
        "Eq",
        "and",
        "or",
        "not",
        "~",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(
        ["true", "false", "null", "42", "-1.5", '"2026-12-02T10:00:00Z"', '"', "(", ")"]
    ),
    st.text(max_size=10),
)
_CONNECTORS = st.sampled_from([" and ", " or ", " ", " and not (", ")", "[", "]", ""])
_structured_filters = st.lists(
    st.tuples(_ATTRIBUTES, _OPERATORS, _VALUES, _CONNECTORS), min_size=1, max_size=3
).map(lambda parts: "".join(f"{a} {o} {v}{c}" for a, o, v, c in parts))
_comparisons = st.one_of(
    st.tuples(
        _ATTRIBUTES,
        st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ"]),
        st.one_of(
            st.text(max_size=12).map(json.dumps),
            st.sampled_from(["true", "false", "null", "0", "2.5", '"2026-12-02T10:00:00Z"']),
        ),
    ).map(" ".join),
    _ATTRIBUTES.map(lambda attribute: f"{attribute} pr"),
)
# Filters that parse: comparisons joined with and/or, negated and grouped, so the evaluation
# (not only the parser) meets every operator against every attribute type.
_valid_filters = st.recursive(
    _comparisons,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", " AND "]), inner).map("".join),
        inner.map(lambda f: f"not ({f})"),
        inner.map(lambda f: f"({f})"),
    ),
    max_leaves=4,
)
filters = st.one_of(_valid_filters, _valid_filters, _structured_filters, st.text(max_size=60))

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=15)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_USER_KEYS = st.sampled_from(
    ["schemas", "userName", "active", "emails", "externalId", "name", "meta", "id", "roles", "x"]
)


@st.composite
def create_bodies(draw: st.DrawFn) -> Any:
    """A valid Entra ID create with a few fields replaced by anything, or anything at all."""
    if draw(st.booleans()):
        return draw(json_values)
    body: dict[str, Any] = user_body(f"fuzz.{draw(st.integers(0, 10**6))}@example.edu")
    for key in draw(st.lists(_USER_KEYS, max_size=3)):
        body[key] = draw(json_values)
    return body


_ops = st.one_of(
    st.sampled_from(["add", "Add", "REPLACE", "Replace", "remove", "Remove"]), st.text(max_size=8)
)
_paths = st.one_of(_ATTRIBUTES, st.text(max_size=30), st.none())


@st.composite
def patch_bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    operations = []
    for _ in range(draw(st.integers(0, 3))):
        operation: dict[str, Any] = {"op": draw(_ops), "value": draw(json_values)}
        path = draw(_paths)
        if path is not None:
            operation["path"] = path
        operations.append(operation)
    return {"schemas": draw(st.sampled_from([[PATCH_SCHEMA], [], ["x"]])), "Operations": operations}


@pytest.fixture
async def s(h: Harness) -> AsyncIterator[ScimHarness]:
    async with scim_harness(h, pilot_cap=0) as harness:
        yield harness


def assert_answered(status: int, body: Any, allowed: set[int]) -> None:
    assert status < 500, body
    assert status in allowed, (status, body)
    if status >= 400:
        assert body["schemas"] == [ERROR_SCHEMA], body
        assert body["status"] == str(status)


@FUZZ
@given(wanted=filters)
async def test_generated_filters_are_answered_or_refused_with_a_scim_error(
    s: ScimHarness, wanted: str
) -> None:
    status, body = await s.call("GET", "/Users", params={"filter": wanted})
    assert_answered(status, body, {200, 400})
    if status == 400:
        assert body.get("scimType") in {"invalidFilter", "invalidValue", "invalidSyntax", None}


@FUZZ
@given(body=create_bodies())
async def test_generated_create_bodies_are_answered_or_refused_with_a_scim_error(
    s: ScimHarness, body: Any
) -> None:
    status, answer = await s.call("POST", "/Users", body)
    assert_answered(status, answer, {201, 400, 409, 415})


@FUZZ
@given(body=patch_bodies(), raw=st.none() | st.binary(max_size=40))
async def test_generated_patch_bodies_are_answered_or_refused_with_a_scim_error(
    s: ScimHarness, body: Any, raw: bytes | None
) -> None:
    users = await s.scim_users()
    if not users:
        status, created = await s.call("POST", "/Users", user_body(PEOPLE["harper"]))
        assert status == 201, created
        users = await s.scim_users()
    path = f"/scim/v2/Users/{users[0].id}"
    if raw is not None:
        response = await s.client.patch(
            path, data=raw, headers={**s.auth, "Content-Type": "application/scim+json"}
        )
        text = await response.text()
        assert_answered(response.status, json.loads(text) if text else None, {200, 204, 400, 415})
        return
    status, answer = await s.call("PATCH", path.removeprefix("/scim/v2"), body)
    assert_answered(status, answer, {200, 204, 400, 409, 415})
