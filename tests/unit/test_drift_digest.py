"""The drift digest crosses the outbox as JSON: what is written reads back the same, and a row
that does not hold a digest is refused with ValueError (the delivery then sends the text)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from syncwarden.workflows.drift_digest import DriftDigest, DriftItem

words = st.text(max_size=20)
items = st.builds(
    DriftItem,
    key=words,
    fingerprint=words,
    kind=words,
    name=words,
    meaning=words,
    facts=st.lists(st.tuples(words, words), max_size=3).map(tuple),
    fixes=st.lists(words, max_size=3).map(tuple),
)
digests = st.builds(
    DriftDigest,
    open_count=st.integers(0, 10**6),
    counts=st.lists(st.tuples(words, st.integers(0, 10**6)), max_size=5).map(tuple),
    items=st.lists(items, max_size=4).map(tuple),
    more=st.integers(0, 1000),
    opened=st.lists(words, max_size=3).map(tuple),
    held=st.lists(words, max_size=3).map(tuple),
    held_reason=words,
    notes=st.lists(words, max_size=2).map(tuple),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(digests)
def test_a_digest_reads_back_as_written(digest: DriftDigest) -> None:
    assert DriftDigest.from_json(digest.to_json()) == digest


digest_shaped = st.fixed_dictionaries(
    {"open_count": json_values, "counts": json_values, "items": json_values},
    optional={"more": json_values, "opened": json_values, "held": json_values},
)


@given(st.one_of(json_values.map(json.dumps), digest_shaped.map(json.dumps), st.text(max_size=40)))
@example('{"open_count": Infinity, "counts": [], "items": []}')
@example('{"open_count": true, "counts": [["leaver", 1.5]], "items": []}')
def test_anything_else_is_read_or_refused_with_value_error(text: str) -> None:
    """Only ValueError escapes (the delivery's one except), whatever the row holds."""
    with contextlib.suppress(ValueError):
        assert isinstance(DriftDigest.from_json(text), DriftDigest)


def test_a_digest_with_a_malformed_item_is_refused() -> None:
    good = DriftDigest(1, (("leaver", 1),), ()).to_json()
    broken = json.loads(good) | {"items": [{"key": "k"}]}
    with pytest.raises(ValueError, match="not a drift digest"):
        DriftDigest.from_json(json.dumps(broken))
