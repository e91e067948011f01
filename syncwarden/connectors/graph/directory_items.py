"""Reading directory delta payloads: users/delta items, ``members@delta`` and proxyAddresses.

Pure functions over parsed JSON, so they can be tried on any input. They never raise on odd
values (a wrong type is taken as "not reported"), with one exception: an item whose ``id`` is
not an Entra object id (a GUID) raises :class:`MalformedDirectoryItemError`, because a change
that cannot be pinned to a person must not be guessed at or dropped quietly.

What the payloads mean (user-delta, group-delta, delta-query-overview, the user resource):
``@removed`` with reason ``changed`` is a soft delete (restorable for 30 days), ``deleted`` a
permanent one; a removed item carries only ``id``; the same object can appear more than once in
one round (last one wins); the primary SMTP address is the ``proxyAddresses`` entry prefixed
with exactly ``SMTP:`` (``smtp:`` marks secondary ones), and ``mail`` stands in when there is no
single such entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from syncwarden.connectors.errors import ConnectorError
from syncwarden.connectors.ports import Removal, UserChange

PRIMARY_PREFIX = "SMTP:"
USER_TYPE = "#microsoft.graph.user"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class MalformedDirectoryItemError(ConnectorError):
    """A delta item without a usable object id; the round is not taken."""


def object_id(item: Any) -> str:
    """The item's object id in lower case (as Syncwarden stores ids), or a clear error."""
    raw = item.get("id") if isinstance(item, dict) else None
    if not isinstance(raw, str) or _GUID.match(raw) is None:
        shown = ascii(raw)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise MalformedDirectoryItemError(f"a directory delta item has no valid object id: {shown}")
    return raw.lower()


def primary_smtp(proxy_addresses: Iterable[Any] | None, mail: Any = None) -> str | None:
    """The one ``SMTP:`` address; ``mail`` when there is none or, an anomaly, several."""
    primaries = [
        value[len(PRIMARY_PREFIX) :].strip()
        for value in proxy_addresses or ()
        if isinstance(value, str) and value.startswith(PRIMARY_PREFIX)
    ]
    primaries = [address for address in primaries if address]
    if len(primaries) == 1:
        return primaries[0]
    return mail.strip() or None if isinstance(mail, str) else None


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value if isinstance(value, str) else None


def removal_of(item: dict[str, Any]) -> Removal | None:
    """``changed`` is a soft delete; ``deleted`` or any other reason counts as permanent."""
    if "@removed" not in item:
        return None
    marker = item.get("@removed")
    reason = marker.get("reason") if isinstance(marker, dict) else None
    return Removal.SOFT if reason == "changed" else Removal.HARD


def user_change(item: Any) -> UserChange:
    """One users/delta item as a :class:`UserChange`."""
    user_id = object_id(item)
    removed = removal_of(item)
    if removed is not None:
        return UserChange(id=user_id, removed=removed)
    raw_proxies = item.get("proxyAddresses")
    proxies = (
        tuple(p for p in raw_proxies if isinstance(p, str))
        if isinstance(raw_proxies, list)
        else None
    )
    enabled = item.get("accountEnabled")
    mail = _text(item, "mail")
    return UserChange(
        id=user_id,
        account_enabled=enabled if isinstance(enabled, bool) else None,
        user_principal_name=_text(item, "userPrincipalName"),
        mail=mail,
        primary_smtp=primary_smtp(proxies, mail) if proxies is not None or mail else None,
        display_name=_text(item, "displayName"),
        proxy_addresses=proxies,
    )


def merge_user_changes(items: Iterable[Any]) -> tuple[UserChange, ...]:
    """Each user once, as last reported in the round (a user may appear several times)."""
    merged: dict[str, UserChange] = {}
    for item in items:
        change = user_change(item)
        merged.pop(change.id, None)
        merged[change.id] = change
    return tuple(merged.values())


def member_entries(group_items: Iterable[Any], group_id: str) -> tuple[list[str], list[str], bool]:
    """(added user ids, removed user ids, group removed) from a groups/delta round, in order.

    Only the wanted group's items count, merged across pages; members that are not users
    (nested groups, contacts, devices) are left out: access is per person.
    """
    wanted = group_id.lower()
    added: list[str] = []
    removed: list[str] = []
    group_removed = False
    for item in group_items:
        if object_id(item) != wanted:
            continue
        if removal_of(item) is not None:
            group_removed = True
            continue
        entries = item.get("members@delta")
        for entry in entries if isinstance(entries, list) else ():
            member = object_id(entry)
            kind = entry.get("@odata.type")
            if isinstance(kind, str) and kind.lower() != USER_TYPE.lower():
                continue
            (removed if "@removed" in entry else added).append(member)
    return added, removed, group_removed
