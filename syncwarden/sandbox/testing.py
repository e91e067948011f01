"""A plain async context manager any test folder can use to get a running sandbox tenant."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from syncwarden.sandbox.odata import JsonDict
from syncwarden.sandbox.seed import DEFAULT_SEED, GRAPH_RESOURCE
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.state import Group


@asynccontextmanager
async def running_sandbox(
    state_dir: Path | None = None, seed_path: Path | str = DEFAULT_SEED, **knobs: Any
) -> AsyncIterator[SandboxTenant]:
    async with SandboxTenant.start(seed_path=seed_path, state_dir=state_dir, **knobs) as tenant:
        yield tenant


@asynccontextmanager
async def graph_client(
    tenant: SandboxTenant, app_id: str | None = None, resource: str = GRAPH_RESOURCE
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client trusting the sandbox CA, already holding a token for ``app_id``."""
    token = tenant.mint_access_token(app_id or tenant.seed.app_ids["Syncwarden"], resource)
    async with httpx.AsyncClient(
        base_url=f"{tenant.base_url}/v1.0",
        verify=tenant.tls.client_context(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client


@dataclass
class GroupAdds:
    """Who was added to one group while :func:`watching_group_adds` was open, and how often."""

    group_id: str
    # Add-DistributionGroupMember calls naming the group, per member's object id (whatever the
    # outcome: added, already a member, or the caller gone before the answer).
    exchange_attempts: Counter[str] = field(default_factory=Counter)
    # Times each object id actually became a member (every path: Exchange, Graph, the test API).
    effects: Counter[str] = field(default_factory=Counter)

    def graph_attempts(self, tenant: SandboxTenant) -> int:
        """``POST /groups/{id}/members/$ref`` calls for the group in the request log (Graph's
        write path; the log does not say whom they named)."""
        suffix = f"/groups/{self.group_id}/members/$ref".lower()
        return sum(
            1 for r in tenant.requests if r.method == "POST" and r.path.lower().endswith(suffix)
        )


@contextmanager
def watching_group_adds(tenant: SandboxTenant, group_id: str) -> Iterator[GroupAdds]:
    """Count the membership adds to ``group_id``, each attempt and each effect, by member.

    The request log records neither the cmdlet an Exchange call ran nor whom it named, so the
    crash tests could not otherwise tell "added once, asked twice" from "added twice". Wraps the
    tenant's own add paths for the duration of the block and restores them after.
    """
    state = tenant.state
    group = state.group(group_id)
    if group is None:
        raise KeyError(group_id)
    adds = GroupAdds(group.id)
    add_members = state.add_members
    exchange_add = tenant.exchange.add_member

    def counting_add_members(target: Group, member_ids: Iterable[str]) -> None:
        ids = list(member_ids)
        if target.id == group.id:
            adds.effects.update(m for m in dict.fromkeys(ids) if m not in target.members)
        add_members(target, ids)

    def counting_exchange_add(
        params: dict[str, Any], request: web.Request
    ) -> tuple[list[JsonDict], JsonDict]:
        named = state.exchange_group(str(params.get("identity") or ""))
        member = state.recipient(str(params.get("member") or ""))
        if named is not None and named.id == group.id and member is not None:
            adds.exchange_attempts[member.id] += 1
        return exchange_add(params, request)

    setattr(state, "add_members", counting_add_members)  # noqa: B010 - an instance override
    setattr(tenant.exchange, "add_member", counting_exchange_add)  # noqa: B010
    try:
        yield adds
    finally:
        delattr(state, "add_members")
        delattr(tenant.exchange, "add_member")
