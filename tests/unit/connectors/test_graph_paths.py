"""Ids and addresses become exactly one Graph URL path segment, whatever they hold.

Generated ids go through :func:`connectors.graph.paths.segment` and through the Graph connector's
own calls (with a transport that records what would be sent): the URL is valid, the id's segment
decodes back to the id, and nothing it holds adds a segment, a query or a fragment. Ids no segment
can carry are a clear :class:`UnaddressableIdError` (a ``NotFoundError``) before anything is sent.
The last tests send quoted segments to the sandbox tenant, which must route them as Graph does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from syncwarden.connectors.errors import BadRequestError, NotFoundError
from syncwarden.connectors.graph.applications import GraphApplications, OwnerKind
from syncwarden.connectors.graph.calendar import (
    GraphCalendar,
    create_request,
    delete_request,
    update_request,
)
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.graph.directory import GraphDirectory
from syncwarden.connectors.graph.paths import UnaddressableIdError, segment
from syncwarden.connectors.graph.subscriptions import GraphSubscriptions
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant

BASE = "https://graph.example.test/v1.0"
# RFC 3986 section 3.3: a segment is pchars, each a character or a percent-encoded octet.
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})+$")

ids = st.one_of(
    st.text(),  # any code point, lone surrogates included
    st.text(alphabet="/?#%.@= +'&;:$\x00\r\n\t\\\u00e9\U0001f600", max_size=12),
    st.sampled_from(["", ".", "..", "../groups", "a/b", "x?$top=999", "x#y", "%2F", "%"]),
)
# Graph's own ids and addresses, as they come: nothing in them may change.
PLAIN = (
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "avery.quinlan@example.edu",
    "o'brien@example.edu",
    "AAMkAGI2TG93AAA=",
    "AAMkOcc_-AbC=",
)


def addressable(value: str) -> bool:
    if value in ("", ".", ".."):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(ids)
@example("AdeleVance_adatum.com#EXT#@contoso.com")
@example("\x00")
@example("\ud800")
def test_any_id_is_one_segment_that_decodes_back_or_a_clear_error(value: str) -> None:
    if not addressable(value):
        with pytest.raises(UnaddressableIdError) as refused:
            segment(value)
        assert isinstance(refused.value, NotFoundError)
        assert len(str(refused.value)) < 200
        return
    encoded = segment(value)
    assert _SEGMENT.match(encoded), encoded
    assert unquote(encoded, errors="strict") == value
    url = httpx.URL(f"{BASE}/users/{encoded}/events")
    assert url.raw_path.decode("ascii").split("/") == ["", "v1.0", "users", encoded, "events"]
    assert not url.query and not url.fragment


@pytest.mark.parametrize("value", PLAIN)
def test_ids_that_already_fit_a_segment_go_out_unchanged(value: str) -> None:
    """``@`` stays (Graph takes it either way), and so does base64's ``=``: the sandbox's
    ``$batch`` does not decode item URLs, and Graph's is not documented to."""
    assert segment(value) == value


def test_a_guests_upn_has_its_hashes_encoded() -> None:
    """Microsoft's "Get a user": replace ``#`` with ``%23`` to get a B2B user by UPN."""
    assert segment("AdeleVance_adatum.com#EXT#@contoso.com") == (
        "AdeleVance_adatum.com%23EXT%23@contoso.com"
    )


# ------------------------------------------------------------------ through the connector


class _Tokens:
    async def get_token(self, scope: str) -> str:
        return "token"

    def invalidate(self, scope: str) -> None:
        return None


class _Recorder:
    """A Graph stand-in answering every request with ``{"id": "x"}`` and keeping its URL."""

    def __init__(self) -> None:
        self.sent: list[httpx.URL] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url)
        return httpx.Response(200, json={"id": "x", "value": []})


def _client(recorder: _Recorder) -> GraphClient:
    return GraphClient(
        httpx.AsyncClient(transport=httpx.MockTransport(recorder)),
        _Tokens(),
        base_url=BASE,
        scope="https://graph.example.test/.default",
        limiter=ConcurrencyLimiter(global_limit=4),
    )


def _segments(url: httpx.URL) -> list[str]:
    return url.raw_path.decode("ascii").split("?")[0].split("/")[2:]


_WHEN = datetime(2026, 12, 1, tzinfo=UTC)
Call = Callable[[GraphClient, str], Awaitable[Any]]
# Each connector call that puts an id in its path, and where the id must come out.
CALLS: dict[str, tuple[Call, list[str]]] = {
    "get_user": (lambda c, v: GraphDirectory(c).get_user(v), ["users", "{}"]),
    "has_mailbox": (lambda c, v: GraphDirectory(c).has_mailbox(v), ["users", "{}", "events"]),
    "get_group": (lambda c, v: GraphDirectory(c).get_group(v), ["groups", "{}"]),
    "members": (lambda c, v: GraphDirectory(c).members(v), ["groups", "{}", "members"]),
    "remove_member": (
        lambda c, v: GraphDirectory(c).remove_member(v, v),
        ["groups", "{}", "members", "{}", "$ref"],
    ),
    "delete_event": (
        lambda c, v: GraphCalendar(c).delete_event(v, v),
        ["users", "{}", "events", "{}"],
    ),
    "calendar_view": (
        lambda c, v: GraphCalendar(c).calendar_view(v, _WHEN, _WHEN),
        ["users", "{}", "calendarView"],
    ),
    "owners": (
        lambda c, v: GraphApplications(c).owners(OwnerKind.APPLICATION, v),
        ["applications", "{}", "owners"],
    ),
    "renew": (
        lambda c, v: GraphSubscriptions(c).renew(v, _WHEN),
        ["subscriptions", "{}"],
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@given(value=ids)
async def test_connector_calls_send_each_id_as_one_segment(name: str, value: str) -> None:
    call, expected = CALLS[name]
    recorder = _Recorder()
    client = _client(recorder)
    if not addressable(value):
        try:
            answer = await call(client, value)
        except UnaddressableIdError:
            pass
        else:  # "not found" is "already gone" to a delete, and "no mailbox" to has_mailbox
            assert name in ("delete_event", "has_mailbox") and answer is False
        assert recorder.sent == [], "nothing is sent for an id no segment can carry"
        return
    await call(client, value)
    sent = _segments(recorder.sent[0])
    assert [unquote(part) for part in sent] == [value if p == "{}" else p for p in expected]


@given(value=ids)
def test_batch_items_and_bind_urls_carry_ids_as_segments(value: str) -> None:
    client = _client(_Recorder())
    if not addressable(value):
        with pytest.raises(UnaddressableIdError):
            delete_request("1", value, value)
        with pytest.raises(UnaddressableIdError):
            client.directory_object_url(value)
        return
    for item in (
        create_request("1", value, {}, source_id="s", transaction_id="t"),
        update_request("1", value, value, {}),
        delete_request("1", value, value),
    ):
        parts = item.url.split("/")
        assert parts[:3] == ["", "users", segment(value)]
        assert [unquote(part) for part in parts[3:]] in (["events"], ["events", value])
    bind = httpx.URL(client.directory_object_url(value))
    assert [unquote(part) for part in _segments(bind)] == ["directoryObjects", value]


class _BatchRecorder:
    """A Graph stand-in answering each ``$batch`` item 200 with no owners, keeping the items."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        self.items.extend(items)
        answers = [{"id": i["id"], "status": 200, "body": {"value": []}} for i in items]
        return httpx.Response(200, json={"responses": answers})


@given(value=ids)
async def test_bulk_owner_lookups_carry_each_id_as_one_segment(value: str) -> None:
    recorder = _BatchRecorder()
    client = GraphClient(
        httpx.AsyncClient(transport=httpx.MockTransport(recorder)),
        _Tokens(),
        base_url=BASE,
        scope="https://graph.example.test/.default",
        limiter=ConcurrencyLimiter(global_limit=4),
    )
    found = await GraphApplications(client).owners_of_many(OwnerKind.APPLICATION, [value, "x"])
    urls = [item["url"] for item in recorder.items]
    if not addressable(value):
        assert found[value].unreadable and urls == ["/applications/x/owners"], (
            "an id no segment can carry is unreadable, and not sent"
        )
        return
    assert found[value].unreadable is None
    parts = urls[0].split("/")
    assert parts[:2] == ["", "applications"] and parts[3:] == ["owners"]
    assert unquote(parts[2]) == value


# ------------------------------------------------------------------ against the sandbox


async def test_the_sandbox_finds_a_guest_by_a_upn_with_encoded_hashes(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    """Before, ``#EXT#`` started a URL fragment: the request asked for ``users/name_domain``."""
    guest = tenant.add_user(userPrincipalName="sasha_partner.example#EXT#@example.edu")
    found = await m365.directory.get_user(guest.userPrincipalName)
    assert found.id == guest.id


async def test_an_id_cannot_reach_another_resource_of_the_sandbox(m365: Microsoft365) -> None:
    """Before, ``..`` was resolved away: ``has_mailbox("../users/<id>")`` asked about
    ``users/<id>/events`` and said yes for an id nobody has. Now the sandbox, like Graph,
    refuses a segment holding an encoded ``/`` (Graph splits the segment there)."""
    someone = (await m365.directory.get_user("avery.quinlan@example.edu")).id
    with pytest.raises(BadRequestError):
        await m365.directory.has_mailbox(f"../users/{someone}")
