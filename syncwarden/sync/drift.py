"""What has drifted between the sync group, the enrollments, the scheduling mappings and the
directory: a pure comparison, so every rule is tested without Microsoft 365 or a database.

Two places decide who has calendar sync (the group that gates the mailbox access, and the
scheduling system's mapping of profiles to mailboxes) and Syncwarden's enrollments record why.
People are added to and removed from the group by hand, leave, or get a new address; each
difference becomes a :class:`Finding` with the fixes IT may choose from. A finding's ``key``
names the difference (kind and person) and its ``fingerprint`` the facts seen, so an ignored
finding stays quiet until its facts change.

Leavers and movers are handled first: a leaver's other differences (out of the group, mapping
gone) are consequences of leaving, and a mover's mapping points at the old address because they
moved, so neither is reported twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from syncwarden.workflows.repairs import Fix


class DriftKind(StrEnum):
    UNENROLLED_MEMBER = "unenrolled_member"  # in the group, not enrolled: added by hand
    MISSING_MEMBER = "missing_member"  # enrolled, not in the group: removed by hand
    MAPPING_MISSING = "mapping_missing"  # enrolled, the scheduling mapping gone or elsewhere
    LEAVER = "leaver"  # the account is disabled or deleted
    MOVER = "mover"  # the enrolled address is no longer the person's primary address
    MAILBOX_GONE = "mailbox_gone"  # the account is there, its mailbox no longer (the sync says)


# What IT may choose for each kind of difference (the first is what the card offers first).
FIXES: dict[DriftKind, tuple[Fix, ...]] = {
    DriftKind.UNENROLLED_MEMBER: (Fix.ADOPT, Fix.REMOVE_FROM_GROUP),
    DriftKind.MISSING_MEMBER: (Fix.READD, Fix.END_ENROLLMENT),
    DriftKind.MAPPING_MISSING: (Fix.REMAP, Fix.END_ENROLLMENT),
    DriftKind.LEAVER: (Fix.END_ENROLLMENT,),
    DriftKind.MOVER: (Fix.UPDATE_ADDRESS,),
    DriftKind.MAILBOX_GONE: (Fix.END_ENROLLMENT,),
}

# The differences a ticket's own steps pass through: between adding someone to the group and
# recording the enrollment they are a member "not enrolled", between ending an enrollment and
# the group removal the reverse, and so on. For a person with a ticket under way these say
# nothing yet and wait for the ticket to end. Having left is not one of them: the directory,
# not the ticket, says so.
PASSING_WHILE_UNDER_WAY = frozenset(DriftKind) - {DriftKind.LEAVER}


class AccountState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    DELETED = "deleted"  # soft-deleted (restorable for 30 days) or gone for good
    UNKNOWN = "unknown"  # the directory does not know the id at all


@dataclass(frozen=True)
class EnrolledPerson:
    subject_id: str
    name: str
    profile_id: str
    mailbox: str
    # The enrolled address was the person's primary when it was chosen, so it follows the
    # primary; False for someone who chose one of their aliases, who moves only when that alias
    # no longer reaches their mailbox.
    follows_primary: bool = True
    # The sync's last run found no mailbox to reach (unlicensed, removed, moved on-premises):
    # the directory's users/delta does not say so, the mailbox calls do.
    mailbox_missing: bool = False


@dataclass(frozen=True)
class DirectoryPerson:
    """What the directory says of a person now."""

    id: str
    state: AccountState
    primary_address: str | None
    addresses: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class SchedulingMapping:
    profile_id: str
    mailbox: str
    active: bool


@dataclass(frozen=True)
class Finding:
    kind: DriftKind
    subject_id: str
    name: str
    facts: tuple[tuple[str, str], ...]
    fixes: tuple[Fix, ...]

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.subject_id}"

    @property
    def fingerprint(self) -> str:
        """A digest of the facts: the same difference seen again, unchanged, has the same one."""
        text = "\n".join(f"{name}={value}" for name, value in sorted(self.facts))
        return hashlib.sha256(f"{self.key}\n{text}".encode()).hexdigest()[:32]

    def fact(self, name: str) -> str | None:
        return dict(self.facts).get(name)


def find_drift(
    *,
    members: Collection[str],
    enrolled: Sequence[EnrolledPerson],
    mappings: Mapping[str, SchedulingMapping],
    directory: Mapping[str, DirectoryPerson],
    under_way: Collection[str] = frozenset(),
) -> list[Finding]:
    """Every difference, in a stable order (kind, then person).

    ``members`` are the object ids of the sync group's user members; ``mappings`` are keyed by
    profile id; ``directory`` by object id; ``under_way`` are the people with a ticket open,
    whose differences of :data:`PASSING_WHILE_UNDER_WAY` are left out. Ids are compared as the
    directory writes them (lowercase GUIDs), addresses without regard to case.
    """
    member_ids = {member.lower() for member in members}
    enrolled_ids = {person.subject_id.lower() for person in enrolled}
    findings: list[Finding] = []
    for person in enrolled:
        findings.extend(_findings_for_enrolled(person, member_ids, mappings, directory))
    for member in sorted(member_ids - enrolled_ids):
        known = directory.get(member)
        findings.append(
            Finding(
                DriftKind.UNENROLLED_MEMBER,
                member,
                known.name if known else "",
                (("in_group", "yes"), ("account", known.state.value if known else "unknown")),
                FIXES[DriftKind.UNENROLLED_MEMBER],
            )
        )
    busy = {subject.lower() for subject in under_way}
    settled = [
        finding
        for finding in findings
        if finding.subject_id not in busy or finding.kind not in PASSING_WHILE_UNDER_WAY
    ]
    return sorted(settled, key=lambda finding: (finding.kind.value, finding.subject_id))


def _findings_for_enrolled(
    person: EnrolledPerson,
    member_ids: Collection[str],
    mappings: Mapping[str, SchedulingMapping],
    directory: Mapping[str, DirectoryPerson],
) -> Iterable[Finding]:
    subject = person.subject_id.lower()
    known = directory.get(subject)
    state = known.state if known else AccountState.UNKNOWN
    if state is not AccountState.ENABLED:
        yield Finding(
            DriftKind.LEAVER,
            subject,
            person.name,
            (("account", state.value), ("mailbox", person.mailbox.lower())),
            FIXES[DriftKind.LEAVER],
        )
        return
    assert known is not None  # an enabled account is one the directory knows
    primary = (known.primary_address or "").lower()
    enrolled = person.mailbox.lower()
    still_theirs = any(a.lower() == enrolled for a in known.addresses)
    if primary and primary != enrolled and (person.follows_primary or not still_theirs):
        yield Finding(
            DriftKind.MOVER,
            subject,
            person.name,
            (
                ("old_address", enrolled),
                ("new_address", primary),
                ("old_address_still_theirs", "yes" if still_theirs else "no"),
            ),
            FIXES[DriftKind.MOVER],
        )
    elif _mapping_is_off(person, mappings.get(person.profile_id)):
        mapping = mappings.get(person.profile_id)
        yield Finding(
            DriftKind.MAPPING_MISSING,
            subject,
            person.name,
            (
                ("profile", person.profile_id),
                ("mapping", _describe_mapping(mapping)),
                ("mailbox", person.mailbox.lower()),
            ),
            FIXES[DriftKind.MAPPING_MISSING],
        )
    if person.mailbox_missing:
        yield Finding(
            DriftKind.MAILBOX_GONE,
            subject,
            person.name,
            (("mailbox", person.mailbox.lower()), ("sync", "no mailbox")),
            FIXES[DriftKind.MAILBOX_GONE],
        )
    if subject not in member_ids:
        yield Finding(
            DriftKind.MISSING_MEMBER,
            subject,
            person.name,
            (("in_group", "no"), ("mailbox", person.mailbox.lower())),
            FIXES[DriftKind.MISSING_MEMBER],
        )


def _mapping_is_off(person: EnrolledPerson, mapping: SchedulingMapping | None) -> bool:
    return (
        mapping is None
        or not mapping.active
        or mapping.mailbox.strip().lower() != person.mailbox.strip().lower()
    )


def _describe_mapping(mapping: SchedulingMapping | None) -> str:
    if mapping is None:
        return "missing"
    if not mapping.active:
        return "inactive"
    return f"points at {mapping.mailbox.lower()}"


def removals_proposed(findings: Iterable[Finding]) -> int:
    """People whose access a run would end on its own: leavers (after their grace period, the
    caller's filter). What IT fixes by hand is IT's decision, not counted here."""
    return sum(1 for finding in findings if finding.kind is DriftKind.LEAVER)


def exceeds_valve(removals: int, enrolled: int, *, max_share: float) -> bool:
    """Whether ending ``removals`` of ``enrolled`` enrollments in one run is too many to do
    without asking: a directory read gone wrong (an empty page, a wrong group) looks exactly like
    everyone leaving. One removal is always allowed, so a small organisation is not stuck."""
    if removals <= 1:
        return False
    return removals > max_share * max(enrolled, 1)
