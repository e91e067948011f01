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


class Removal(StrEnum):
    """Why users delta says a user is gone: ``changed`` can still be restored, ``deleted`` not."""

    SOFT = "soft"
    HARD = "hard"


@dataclass(frozen=True)
class UserChange:
    """One user as a directory delta round reported it.

    ``removed`` is set for a deleted user, and then nothing else is known. Otherwise a field is
    None when the round did not carry it (not selected, never set, or unchanged under
    ``return=minimal``). ``primary_smtp`` is the single ``SMTP:`` proxy address, else ``mail``.
    """

    id: str
    removed: Removal | None = None
    account_enabled: bool | None = None
    user_principal_name: str | None = None
    mail: str | None = None
    primary_smtp: str | None = None
    display_name: str | None = None
    proxy_addresses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class UserDeltaRound:
    """A whole users/delta round: changes merged by id (last seen wins), the link to store."""

    changes: tuple[UserChange, ...]
    delta_link: str
    requests: int


@dataclass(frozen=True)
class MembershipDeltaRound:
    """A whole membership delta round for one group.

    On a first round ``added`` is the current membership. ``uncertain`` holds ids reported both
    added and removed in the same round (pages come in no set order): read the member list to
    settle them. ``group_removed`` is True when the group itself was deleted.
    """

    added: frozenset[str]
    removed: frozenset[str]
    uncertain: frozenset[str]
    delta_link: str
    requests: int
    group_removed: bool = False


@dataclass(frozen=True)
class Manager:
    id: str
    display_name: str | None
    mail: str | None
    user_principal_name: str | None
    is_user: bool


class DirectoryChanges(Protocol):
    """Reading what changed in the directory cheaply, for the access reconciler.

    Every method that takes a stored link raises ``DeltaRestartRequiredError`` (a
    ``DeltaExpiredError``) when the service no longer knows it: the caller drops the link and
    starts a full round.
    """

    async def user_changes(self, delta_link: str | None) -> UserDeltaRound: ...

    async def member_changes(
        self, group_id: str, delta_link: str | None
    ) -> MembershipDeltaRound: ...

    async def member_ids(self, group_id: str) -> frozenset[str]: ...

    async def manager_of(self, user_id: str) -> Manager | None: ...
