"""The nesting check that keeps deep JSON away from recursive parsers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.core.payloads import json_too_deep


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(JSON, st.integers(min_value=0, max_value=12))
def test_depth_agrees_with_the_parsed_value(value: Any, limit: int) -> None:
    """Brackets inside strings (even escaped quotes next to them) never count."""
    body = json.dumps(value).encode()
    assert json_too_deep(body, limit) == (depth_of(value) > limit)


def test_a_hundred_thousand_brackets_are_caught_without_recursion() -> None:
    assert json_too_deep(b"[" * 100_000 + b"]" * 100_000)
    assert not json_too_deep(b'{"type": "message", "text": "[[[[[[[[[[[[[[[[[[[["}')
