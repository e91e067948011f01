"""What a directory administrator does to people and groups, outside Syncwarden.

Tests and benches use these (directly or through ``/_sandbox``) to make the changes the access
reconciler must notice: a leaver disabled or deleted, a deletion undone, a mover's new primary
address, a new manager, a member added or removed by hand in the Entra or Exchange admin
center. Each function changes :class:`TenantState` the way Entra ID does, so every front (Graph,
its delta queries, Exchange) sees the same directory afterwards. Unknown objects raise
``KeyError``; changes Entra would refuse raise ``ValueError``.
"""

from __future__ import annotations

from syncwarden.sandbox.state import DeletedUser, Group, TenantState, User, utcnow

PRIMARY = "SMTP:"
SECONDARY = "smtp:"


def _active(state: TenantState, key: str) -> User:
    user = state.user(key)
    if user is None:
        raise KeyError(key)
    return user


def set_enabled(state: TenantState, key: str, enabled: bool) -> User:
    """Block or allow sign-in (``accountEnabled``); the mailbox and memberships stay."""
    user = _active(state, key)
    user.accountEnabled = enabled
    return user


def soft_delete(state: TenantState, key: str) -> DeletedUser:
    """Move the user to ``deletedItems``: gone from ``/users`` and from member lists, but
    restorable with its memberships for 30 days (https://learn.microsoft.com/graph/api/user-delete)."""
    user = _active(state, key)
    groups = [g.id for g in state.groups.values() if user.id in g.members]
    for group_id in groups:
        state.remove_member(state.groups[group_id], user.id)
    del state.users[user.id]
    deleted = DeletedUser(user=user, deleted=utcnow(), groups=groups)
    state.deleted_users[user.id] = deleted
    return deleted


def restore(state: TenantState, user_id: str) -> User:
    """Bring a soft-deleted user back, into every group it was in that still exists."""
    deleted = state.deleted_users.pop(user_id, None)
    if deleted is None:
        raise KeyError(user_id)
    state.users[user_id] = deleted.user
    for group_id in deleted.groups:
        group = state.groups.get(group_id)
        if group is not None:
            state.add_members(group, [user_id])
    return deleted.user


def hard_delete(state: TenantState, key: str) -> str:
    """Delete for good, active or soft-deleted: no restore, memberships and reports dropped."""
    found = state.user(key)
    user_id = found.id if found is not None else key
    if found is None and user_id not in state.deleted_users:
        raise KeyError(key)
    state.users.pop(user_id, None)
    state.deleted_users.pop(user_id, None)
    for group in state.groups.values():
        state.remove_member(group, user_id)
    for other in [*state.users.values(), *(d.user for d in state.deleted_users.values())]:
        if other.manager_id == user_id:
            other.manager_id = None
    return user_id


def _owner_of(state: TenantState, address: str) -> str | None:
    lowered = address.lower()
    for user in [*state.users.values(), *(d.user for d in state.deleted_users.values())]:
        if any(p.split(":", 1)[-1].lower() == lowered for p in user.proxyAddresses):
            return user.id
    for group in state.groups.values():
        if group.mail and group.mail.lower() == lowered:
            return group.id
    return None


def change_primary_address(state: TenantState, key: str, address: str) -> User:
    """Make ``address`` the primary SMTP address, as Exchange does when an admin changes it.

    The old primary stays as a secondary ``smtp:`` alias, ``mail`` follows the primary (the
    user resource page: ``mail`` "defines the primary proxy address"), and the mailbox keeps its
    content: it belongs to the object id, not to an address. Proxy addresses are unique across
    the directory, so an address another object holds is refused.
    """
    user = _active(state, key)
    cleaned = address.strip()
    local, at, domain = cleaned.partition("@")
    if not (local and at and domain) or any(ch.isspace() for ch in cleaned):
        raise ValueError(f"not an SMTP address: {address!r}")
    owner = _owner_of(state, cleaned)
    if owner is not None and owner != user.id:
        raise ValueError(f"the address {cleaned} belongs to another object ({owner})")
    kept = [
        SECONDARY + p[len(PRIMARY) :] if p.startswith(PRIMARY) else p
        for p in user.proxyAddresses
        if p.split(":", 1)[-1].lower() != cleaned.lower()
    ]
    user.proxyAddresses = [PRIMARY + cleaned, *kept]
    user.mail = cleaned
    return user


def set_manager(state: TenantState, key: str, manager_key: str | None) -> User:
    """Set (or with None clear) the user's ``manager``."""
    user = _active(state, key)
    if manager_key is None:
        user.manager_id = None
        return user
    manager = _active(state, manager_key)
    if manager.id == user.id:
        raise ValueError("a user cannot be their own manager")
    user.manager_id = manager.id
    return user


def _group(state: TenantState, key: str) -> Group:
    group = state.group(key) or state.exchange_group(key)
    if group is None:
        raise KeyError(key)
    return group


def add_member_by_hand(state: TenantState, group_key: str, member_key: str) -> bool:
    """Add a member as an admin would in the Entra or Exchange admin center, for any kind of
    group (mail-enabled ones included, which Graph itself may not write). False if already one."""
    group = _group(state, group_key)
    member = state.recipient(member_key)
    member_id = member.id if member is not None else member_key
    if member is None and member_id not in state.groups:
        raise KeyError(member_key)
    if member_id in group.members:
        return False
    state.add_members(group, [member_id])
    return True


def remove_member_by_hand(state: TenantState, group_key: str, member_key: str) -> bool:
    """Remove a member by hand; False if it was not one."""
    group = _group(state, group_key)
    member = state.recipient(member_key)
    return state.remove_member(group, member.id if member is not None else member_key)
