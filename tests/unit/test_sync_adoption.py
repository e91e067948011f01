"""Telling a replayed create from a fresh one: Graph's echo of a time against the one we sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.sync.adoption import same_content
from syncwarden.sync.event_payload import graph_instant

MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def sent(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def event(start: dict[str, Any], end: dict[str, Any], subject: str = "Client") -> dict[str, Any]:
    return {"subject": subject, "start": start, "end": end}


@st.composite
def echoes(draw: st.DrawFn, moment: datetime) -> dict[str, Any]:
    """What Graph could hand back for ``moment``: the same time with a fraction, another
    fraction, another second, the same instant written in another zone, or the same text in
    another zone (another instant)."""
    kinds = ["padded", "fraction", "other second", "zone", "same text elsewhere", "bare"]
    kind = draw(st.sampled_from(kinds))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if kind == "padded":
        return {"dateTime": text + "." + "0" * draw(st.integers(0, 7)), "timeZone": "UTC"}
    if kind == "fraction":
        digits = draw(st.text("0123456789", min_size=1, max_size=7))
        return {"dateTime": f"{text}.{digits}", "timeZone": "UTC"}
    if kind == "other second":
        second = (moment.second + draw(st.integers(1, 58))) % 60
        return {"dateTime": moment.replace(second=second).strftime("%Y-%m-%dT%H:%M:%S")}
    if kind == "same text elsewhere":
        return {"dateTime": text + ".0000000", "timeZone": "America/New_York"}
    if kind == "zone":
        local = moment.astimezone(ZoneInfo("America/New_York"))
        return {
            "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
            "timeZone": "America/New_York",
        }
    return {"dateTime": text}


@given(st.data(), MOMENTS, MOMENTS)
def test_an_echoed_time_matches_exactly_when_it_is_the_same_instant(
    data: st.DataObject, start: datetime, end: datetime
) -> None:
    start_echo, end_echo = data.draw(echoes(start)), data.draw(echoes(end))
    payload = event(sent(start), sent(end))
    same = graph_instant(start_echo) == graph_instant(sent(start)) and graph_instant(
        end_echo
    ) == graph_instant(sent(end))

    assert same_content(payload, event(start_echo, end_echo)) is same


@given(MOMENTS)
def test_another_subject_is_other_content(moment: datetime) -> None:
    assert not same_content(
        event(sent(moment), sent(moment)), event(sent(moment), sent(moment), subject="Other")
    )
