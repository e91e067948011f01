"""The interface every scheduling-system adapter implements.

A *profile* is a person's record in the scheduling system; a *mapping* ties that profile to the
mailbox its appointments are synced into, and is what the vendor's "users to sync" list holds.
Adapters that cannot write mappings through an API (a vendor console with no API) say so with
``writes_mappings = False``; the workflow then turns the step into a manual task for IT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    email: str | None


@dataclass(frozen=True)
class Mapping:
    profile_id: str
    mailbox: str
    active: bool


class SchedulingSystem(Protocol):
    name: str
    writes_mappings: bool

    async def find_profiles(
        self, *, email: str | None = None, name: str | None = None
    ) -> Sequence[Profile]:
        """Profiles whose email matches exactly (any case), else whose name contains ``name``."""
        ...

    async def upsert_mapping(self, profile_id: str, mailbox: str) -> Mapping:
        """Map the profile to the mailbox and mark it active; repeating it changes nothing."""
        ...

    async def deactivate_mapping(self, profile_id: str) -> Mapping | None:
        """Mark the profile's mapping inactive; None when it had none. Repeating it is harmless."""
        ...

    async def list_mappings(self) -> Sequence[Mapping]: ...
