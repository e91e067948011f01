"""Parsing directory delta payloads: never a crash on odd input, a clear error for a bad id."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.graph.directory_items import (
    MalformedDirectoryItemError,
    member_entries,
    merge_user_changes,
    primary_smtp,
    user_change,
)
from syncwarden.connectors.ports import Removal

GUIDS = st.uuids().map(str)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["accountEnabled", "mail", "proxyAddresses", "userPrincipalName", "displayName", "@removed"]
)


def test_the_primary_is_the_one_capital_smtp_entry() -> None:
    proxies = ["smtp:old@example.edu", "SMTP:new@example.edu", "SIP:new@example.edu"]
    assert primary_smtp(proxies, "other@example.edu") == "new@example.edu"


def test_no_or_several_primaries_fall_back_to_mail() -> None:
    assert primary_smtp(["smtp:a@example.edu"], "m@example.edu") == "m@example.edu"
    assert primary_smtp(["SMTP:a@example.edu", "SMTP:b@example.edu"], "m@example.edu") == (
        "m@example.edu"
    )
    assert primary_smtp([], None) is None
    assert primary_smtp(["Smtp:a@example.edu"], None) is None  # the prefix is case-sensitive


@given(st.lists(st.one_of(st.text(max_size=30), JSON), max_size=6), JSON)
def test_primary_smtp_never_raises(proxies: list[Any], mail: Any) -> None:
    found = primary_smtp(proxies, mail)
    assert found is None or isinstance(found, str)


@given(GUIDS, st.dictionaries(FIELDS, JSON, max_size=6))
def test_any_user_item_with_a_good_id_parses(user_id: str, fields: dict[str, Any]) -> None:
    change = user_change({**fields, "id": user_id.upper()})
    assert change.id == user_id.lower()
    if "@removed" in fields:
        assert change.removed in (Removal.SOFT, Removal.HARD)
    assert change.account_enabled in (None, True, False)


@given(st.one_of(JSON, st.text(max_size=40)))
def test_an_item_without_a_guid_id_is_refused_clearly(raw_id: Any) -> None:
    try:
        uuid.UUID(str(raw_id))
        looks_like_guid = isinstance(raw_id, str) and len(raw_id) == 36
    except ValueError:
        looks_like_guid = False
    if looks_like_guid:
        return
    with pytest.raises(MalformedDirectoryItemError, match="no valid object id"):
        user_change({"id": raw_id, "displayName": "x"})


@given(JSON)
def test_anything_at_all_either_parses_or_is_refused_clearly(item: Any) -> None:
    with contextlib.suppress(MalformedDirectoryItemError):
        user_change(item)


def test_removal_reasons() -> None:
    user_id = str(uuid.uuid4())
    assert user_change({"id": user_id, "@removed": {"reason": "changed"}}).removed is Removal.SOFT
    assert user_change({"id": user_id, "@removed": {"reason": "deleted"}}).removed is Removal.HARD
    assert user_change({"id": user_id, "@removed": "odd"}).removed is Removal.HARD


def test_the_last_report_of_a_user_wins() -> None:
    user_id = str(uuid.uuid4())
    merged = merge_user_changes(
        [
            {"id": user_id, "accountEnabled": True},
            {"id": user_id, "@removed": {"reason": "changed"}},
            {"id": user_id, "accountEnabled": False},
        ]
    )
    assert len(merged) == 1
    assert merged[0].account_enabled is False and merged[0].removed is None


@given(
    GUIDS,
    st.lists(st.tuples(GUIDS, st.booleans(), st.sampled_from(["user", "group", None])), max_size=8),
    st.integers(min_value=1, max_value=4),
)
def test_member_entries_merge_the_group_across_pages(
    group_id: str, members: list[tuple[str, bool, str | None]], pages: int
) -> None:
    entries = []
    for member_id, gone, kind in members:
        entry: dict[str, Any] = {"id": member_id}
        if kind is not None:
            entry["@odata.type"] = f"#microsoft.graph.{kind}"
        if gone:
            entry["@removed"] = {"reason": "deleted"}
        entries.append(entry)
    items = [{"id": group_id, "members@delta": entries[i::pages]} for i in range(pages)] + [
        {"id": str(uuid.uuid4()), "members@delta": [{"id": str(uuid.uuid4())}]}
    ]
    added, removed, group_removed = member_entries(items, group_id.upper())
    people = [(m, r) for m, r, k in members if k != "group"]
    assert sorted(added) == sorted(m for m, r in people if not r)
    assert sorted(removed) == sorted(m for m, r in people if r)
    assert not group_removed


def test_a_malformed_member_id_is_refused() -> None:
    group_id = str(uuid.uuid4())
    with pytest.raises(MalformedDirectoryItemError):
        member_entries([{"id": group_id, "members@delta": [{"id": "../etc"}]}], group_id)
