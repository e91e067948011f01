"""The sandbox's group membership, walked without quadratic costs: nested groups, cycles, and a
bulk add into a large group."""

from __future__ import annotations

from syncwarden.sandbox.state import Group, TenantState


def group(group_id: str, *members: str) -> Group:
    return Group(group_id, group_id, False, True, members=list(members))


def tenant(*groups: Group) -> TenantState:
    return TenantState("t", ["example.edu"], groups={g.id: g for g in groups})


def test_transitive_members_follow_nesting_once_and_end_on_cycles() -> None:
    outer = group("outer", "u1", "inner", "u2")
    inner = group("inner", "u2", "u3", "outer")  # a cycle back to outer
    state = tenant(outer, inner)
    assert state.transitive_members(outer) == ["u1", "inner", "u2", "u3", "outer"]
    assert state.is_transitive_member(outer, "u3")
    assert not state.is_transitive_member(outer, "u4")


def test_a_bulk_add_keeps_order_and_adds_each_id_once() -> None:
    big = group("big", *(f"u{n}" for n in range(20_000)))
    state = tenant(big)
    state.add_members(big, ["u5", "new-1", "new-2", "new-1", "u19999"])
    assert big.members[-2:] == ["new-1", "new-2"]
    assert len(big.members) == 20_002
