"""Who may approve and who counts as IT admin, resolved to Entra object ids.

Settings name people by object id or UPN and may add a group; card clicks arrive with the clicker's
object id. Everything is therefore resolved to object ids, and group memberships (transitive) are
cached briefly so that a burst of clicks does not become a burst of Graph calls, while a removal
from the group still takes effect within minutes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence

from syncwarden.connectors.errors import NotFoundError
from syncwarden.connectors.ports import Directory
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import ApprovalSettings

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
log = get_logger(__name__)


class Roster:
    def __init__(
        self,
        directory: Directory,
        settings: ApprovalSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = asyncio.Lock()

    async def approvers(self) -> frozenset[str]:
        return await self._resolve(
            "approvers", self._settings.approvers, self._settings.approvers_group_id
        )

    async def fallback_approvers(self) -> frozenset[str]:
        return await self._resolve("fallback", self._settings.fallback_approvers, None)

    async def it_admins(self) -> frozenset[str]:
        return await self._resolve(
            "it_admins", self._settings.it_admins, self._settings.it_admins_group_id
        )

    async def is_it_admin(self, person_id: str) -> bool:
        return person_id.lower() in await self.it_admins()

    async def _resolve(
        self, name: str, people: Sequence[str], group_id: str | None
    ) -> frozenset[str]:
        async with self._lock:
            cached = self._cache.get(name)
            if cached and self._monotonic() - cached[0] < self._settings.group_cache_seconds:
                return cached[1]
            ids: set[str] = set()
            for entry in people:
                resolved = await self._person_id(entry)
                if resolved:
                    ids.add(resolved.lower())
            if group_id:
                members = await self._directory.members(group_id, transitive=True)
                ids.update(member.id.lower() for member in members)
            result = frozenset(ids)
            self._cache[name] = (self._monotonic(), result)
            return result

    async def _person_id(self, entry: str) -> str | None:
        entry = entry.strip()
        if _GUID.match(entry):
            return entry
        try:
            return (await self._directory.get_user(entry)).id
        except NotFoundError:
            log.warning("roster.unknown_person", entry=entry)
            return None
