"""Drift between the sync group, enrollments, mappings and the directory, rule by rule."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.sync.drift import (
    AccountState,
    DirectoryPerson,
    DriftKind,
    EnrolledPerson,
    SchedulingMapping,
    exceeds_valve,
    find_drift,
    removals_proposed,
)
from syncwarden.workflows.repairs import Fix

ADA = EnrolledPerson("id-ada", "Ada Park", "p-ada", "ada.park@example.edu")


def in_step(person: EnrolledPerson) -> tuple[DirectoryPerson, SchedulingMapping]:
    return (
        DirectoryPerson(
            person.subject_id, AccountState.ENABLED, person.mailbox, (person.mailbox,), person.name
        ),
        SchedulingMapping(person.profile_id, person.mailbox, True),
    )


def drift_of(
    *,
    members: set[str] | None = None,
    person: DirectoryPerson | None = None,
    mapping: SchedulingMapping | None = None,
    extra_members: tuple[str, ...] = (),
) -> list[tuple[DriftKind, str]]:
    known, mapped = in_step(ADA)
    directory = {ADA.subject_id: person or known}
    findings = find_drift(
        members=(members if members is not None else {ADA.subject_id}) | set(extra_members),
        enrolled=[ADA],
        mappings={ADA.profile_id: mapping or mapped},
        directory=directory,
    )
    return [(finding.kind, finding.subject_id) for finding in findings]


def test_everything_in_step_is_no_drift() -> None:
    assert drift_of() == []


def test_a_member_added_by_hand_can_be_adopted_or_removed() -> None:
    [finding] = find_drift(
        members={"id-ada", "ID-BEA"},
        enrolled=[ADA],
        mappings={"p-ada": in_step(ADA)[1]},
        directory={"id-ada": in_step(ADA)[0]},
    )
    assert (finding.kind, finding.subject_id) == (DriftKind.UNENROLLED_MEMBER, "id-bea")
    assert finding.fixes == (Fix.ADOPT, Fix.REMOVE_FROM_GROUP)


def test_someone_removed_from_the_group_by_hand_can_be_put_back_or_ended() -> None:
    assert drift_of(members=set()) == [(DriftKind.MISSING_MEMBER, "id-ada")]


def test_a_mapping_gone_inactive_or_pointing_elsewhere_is_drift() -> None:
    for mapping, said in [
        (SchedulingMapping("p-other", ADA.mailbox, True), "missing"),
        (SchedulingMapping("p-ada", ADA.mailbox, False), "inactive"),
        (SchedulingMapping("p-ada", "someone@example.edu", True), "points at someone@example.edu"),
    ]:
        known, _ = in_step(ADA)
        mappings = {mapping.profile_id: mapping}
        [finding] = find_drift(
            members={ADA.subject_id}, enrolled=[ADA], mappings=mappings, directory={"id-ada": known}
        )
        assert finding.kind is DriftKind.MAPPING_MISSING and finding.fact("mapping") == said


def test_a_disabled_deleted_or_unknown_account_is_a_leaver_and_nothing_else() -> None:
    for state in (AccountState.DISABLED, AccountState.DELETED, AccountState.UNKNOWN):
        gone = DirectoryPerson(ADA.subject_id, state, None)
        lost_mapping = SchedulingMapping("p-ada", ADA.mailbox, False)
        assert drift_of(members=set(), person=gone, mapping=lost_mapping) == [
            (DriftKind.LEAVER, "id-ada")
        ]


def test_a_new_primary_address_makes_a_mover_whose_old_mapping_is_not_reported_again() -> None:
    moved = DirectoryPerson(
        ADA.subject_id,
        AccountState.ENABLED,
        "Ada.Lee@example.edu",
        ("Ada.Lee@example.edu", ADA.mailbox),
    )
    findings = find_drift(
        members={ADA.subject_id},
        enrolled=[ADA],
        mappings={"p-ada": in_step(ADA)[1]},
        directory={ADA.subject_id: moved},
    )
    [finding] = findings
    assert finding.kind is DriftKind.MOVER and finding.fixes == (Fix.UPDATE_ADDRESS,)
    assert finding.fact("new_address") == "ada.lee@example.edu"
    assert finding.fact("old_address_still_theirs") == "yes"


def test_someone_who_chose_an_alias_moves_only_when_the_alias_stops_reaching_them() -> None:
    """Enrolled with an alias on purpose (the request card offers every address of the
    mailbox): a different primary is no news while the alias still reaches the mailbox."""
    on_alias = dataclasses.replace(ADA, mailbox="ada.alias@example.edu", follows_primary=False)
    mapping = {"p-ada": SchedulingMapping("p-ada", on_alias.mailbox, True)}

    def directory(*addresses: str) -> dict[str, DirectoryPerson]:
        person = DirectoryPerson(ADA.subject_id, AccountState.ENABLED, addresses[0], addresses)
        return {ADA.subject_id: person}

    still = directory("ada@example.edu", "ada.alias@example.edu")
    assert (
        find_drift(members={ADA.subject_id}, enrolled=[on_alias], mappings=mapping, directory=still)
        == []
    )
    gone = directory("ada@example.edu")
    [finding] = find_drift(
        members={ADA.subject_id}, enrolled=[on_alias], mappings=mapping, directory=gone
    )
    assert finding.kind is DriftKind.MOVER
    assert finding.fact("old_address_still_theirs") == "no"
    assert finding.fact("new_address") == "ada@example.edu"


def test_the_fingerprint_follows_the_facts() -> None:
    [first] = find_drift(members=set(), enrolled=[ADA], mappings={}, directory={})
    [again] = find_drift(members=set(), enrolled=[ADA], mappings={}, directory={})
    assert first.fingerprint == again.fingerprint
    moved = dataclasses.replace(ADA, mailbox="ada.lee@example.edu")
    [changed] = find_drift(members=set(), enrolled=[moved], mappings={}, directory={})
    assert changed.key == first.key and changed.fingerprint != first.fingerprint


def test_the_valve_holds_a_mass_removal_but_never_a_single_one() -> None:
    assert not exceeds_valve(1, 1, max_share=0.1)
    assert not exceeds_valve(10, 100, max_share=0.1)
    assert exceeds_valve(11, 100, max_share=0.1)
    assert exceeds_valve(2, 0, max_share=0.1)


ids = st.sampled_from([f"id-{n}" for n in range(8)])
addresses = st.sampled_from(["a@example.edu", "B@example.edu", "c@example.edu", ""])
profiles = st.sampled_from(["p1", "p2"])
people = st.builds(EnrolledPerson, ids, st.text(max_size=5), profiles, addresses)
directory_people = st.builds(
    DirectoryPerson,
    ids,
    st.sampled_from(AccountState),
    st.one_of(st.none(), addresses),
    st.tuples(addresses, addresses),
)
mappings = st.builds(SchedulingMapping, profiles, addresses, st.booleans())


@given(
    members=st.sets(ids),
    enrolled=st.lists(people, max_size=6, unique_by=lambda p: p.subject_id),
    mapped=st.lists(mappings, max_size=3),
    known=st.lists(directory_people, max_size=8),
)
def test_drift_is_one_finding_per_difference_and_never_fails(
    members: set[str],
    enrolled: list[EnrolledPerson],
    mapped: list[SchedulingMapping],
    known: list[DirectoryPerson],
) -> None:
    findings = find_drift(
        members=members,
        enrolled=enrolled,
        mappings={m.profile_id: m for m in mapped},
        directory={p.id: p for p in known},
    )
    keys = [finding.key for finding in findings]
    assert len(keys) == len(set(keys)), "each difference once"
    enrolled_ids = {p.subject_id for p in enrolled}
    unenrolled = {f.subject_id for f in findings if f.kind is DriftKind.UNENROLLED_MEMBER}
    assert unenrolled == members - enrolled_ids
    leavers = {f.subject_id for f in findings if f.kind is DriftKind.LEAVER}
    for finding in findings:
        if finding.subject_id in leavers:
            assert finding.kind is DriftKind.LEAVER, "a leaver's other differences follow from it"
    assert removals_proposed(findings) == len(leavers)


def test_a_mailbox_the_sync_cannot_reach_is_a_finding_with_end_as_its_fix() -> None:
    gone = dataclasses.replace(ADA, mailbox_missing=True)
    person, mapping = in_step(ADA)
    findings = find_drift(
        members={ADA.subject_id},
        enrolled=[gone],
        mappings={ADA.profile_id: mapping},
        directory={ADA.subject_id: person},
    )
    assert [(f.kind, f.fixes) for f in findings] == [
        (DriftKind.MAILBOX_GONE, (Fix.END_ENROLLMENT,))
    ]
