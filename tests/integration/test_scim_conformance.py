"""scim2-tester, an independent SCIM conformance suite (PyPI, python-scim), against the live
/scim/v2: discovery, then create, read, replace, patch and delete of Users with generated values.

The suite speaks plain HTTP to the real app (middlewares, token check, storage, tickets) on a
port of its own; it is synchronous, so it runs in a worker thread while the event loop serves.
Its users are invented and resolve to nobody in the directory: their tickets are never opened,
which the audit records, and the protocol is what is checked here.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.support.scim import scim_harness
from tests.support.workflow import Harness

pytestmark = pytest.mark.postgres

FAILING = {Status.ERROR, Status.CRITICAL}


async def test_scim2_tester_passes_against_the_live_endpoint(h: Harness) -> None:
    async with scim_harness(h, pilot_cap=0) as s:
        base = str(s.client.make_url("/scim/v2"))
        http = httpx2.Client(base_url=base, headers=s.auth, timeout=30.0)
        try:
            results = await asyncio.to_thread(check_server, SyncSCIMClient(http))
        finally:
            http.close()
    failures = [r for r in results if r.status in FAILING]
    assert not failures, "\n".join(f"{r.title}: {r.reason}" for r in failures)
    counts = Counter(r.status.name for r in results)
    print("scim2-tester:", dict(sorted(counts.items())))  # the summary the report quotes
    tags = Counter(sorted(r.tags)[0] if r.tags else "-" for r in results)
    print("scim2-tester by tag:", dict(sorted(tags.items())))
    assert counts["SUCCESS"] >= 10
