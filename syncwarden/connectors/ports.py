"""Interfaces the rest of Syncwarden programs against; concrete clients live beside this module.

``workflows`` may import only these protocols (and :mod:`connectors.errors`), so that the ticket
logic can be tested with any implementation and never depends on a transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class TokenProvider(Protocol):
    async def get_token(self, scope: str) -> str:
        """A valid access token for ``scope`` (e.g. ``https://graph.microsoft.com/.default``)."""
        ...

    def invalidate(self, scope: str) -> None:
        """Forget a cached token the service has just rejected."""
        ...


class GroupKind(StrEnum):
    SECURITY = "security"
    MICROSOFT_365 = "microsoft365"
    MAIL_ENABLED_SECURITY = "mail_enabled_security"
    DISTRIBUTION = "distribution"

    @property
    def writable_through_graph(self) -> bool:
        """Graph can change membership of security and Microsoft 365 groups only."""
        return self in (GroupKind.SECURITY, GroupKind.MICROSOFT_365)


@dataclass(frozen=True)
class DirectoryUser:
    id: str
    display_name: str
    user_principal_name: str
    mail: str | None
    account_enabled: bool
    proxy_addresses: tuple[str, ...] = ()
    other_mails: tuple[str, ...] = ()

    @property
    def primary_smtp(self) -> str | None:
        """The address mail is sent from: the ``SMTP:`` proxy address, else ``mail``."""
        for address in self.proxy_addresses:
            if address.startswith("SMTP:"):
                return address[5:]
        return self.mail

    @property
    def mailbox_addresses(self) -> tuple[str, ...]:
        """The addresses that reach this person's mailbox: the primary first, then each SMTP
        proxy address once. Not ``otherMails`` (an outside address, such as a personal account,
        that Exchange does not deliver to) and not the UPN unless it is also a proxy address."""
        found: list[str] = []
        for address in [
            self.primary_smtp or "",
            *(p[5:] for p in self.proxy_addresses if p[:5].lower() == "smtp:"),
        ]:
            if address and address.lower() not in (a.lower() for a in found):
                found.append(address)
        return tuple(found)

    def mailbox_address(self, address: str) -> str | None:
        """``address`` as the directory spells it, if it reaches this person's mailbox."""
        wanted = address.strip().lower()
        return next((a for a in self.mailbox_addresses if a.lower() == wanted), None)

    def owns_address(self, address: str) -> bool:
        """Whether ``address`` is one of this person's addresses (any proxy address counts)."""
        wanted = address.strip().lower()
        candidates = [self.user_principal_name, self.mail or "", *self.other_mails]
        candidates += [proxy.split(":", 1)[1] for proxy in self.proxy_addresses if ":" in proxy]
        return any(wanted == candidate.lower() for candidate in candidates if candidate)


@dataclass(frozen=True)
class DirectoryGroup:
    id: str
    display_name: str
    kind: GroupKind
    mail: str | None = None
    mail_nickname: str | None = None


@dataclass(frozen=True)
class GroupMember:
    id: str
    display_name: str | None = None
    user_principal_name: str | None = None
    mail: str | None = None
    odata_type: str = "#microsoft.graph.user"


@dataclass(frozen=True)
class MembershipChange:
    """What a membership write did: ``changed`` is False when it was already so (idempotent)."""

    member_id: str
    changed: bool
    path: str
    notes: tuple[str, ...] = field(default_factory=tuple)


class GroupMembership(Protocol):
    """Membership of the sync group, whichever service can change it."""

    async def add_member(self, user: DirectoryUser) -> MembershipChange: ...

    async def remove_member(self, user: DirectoryUser) -> MembershipChange: ...

    async def is_member(self, user: DirectoryUser) -> bool: ...

    async def members(self) -> Sequence[GroupMember]: ...


class Directory(Protocol):
    """Looking people and groups up in the directory (Entra ID)."""

    async def get_user(self, id_or_upn: str) -> DirectoryUser: ...

    async def find_user_by_address(self, address: str) -> DirectoryUser | None: ...

    async def members(self, group_id: str, *, transitive: bool = False) -> list[GroupMember]: ...

    async def has_mailbox(self, user_id: str) -> bool:
        """Whether Exchange Online hosts a mailbox for this user that REST can reach."""
        ...


class TaggedCalendar(Protocol):
    """The events Syncwarden put into a mailbox, recognised by its tag."""

    async def tagged_events(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]: ...

    async def delete_event(self, mailbox: str, event_id: str) -> bool: ...
