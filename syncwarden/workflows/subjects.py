"""Who a request is about, which mailbox and which scheduling profile: read from the directory.

Everything a request form needs to know about its person before a ticket exists. Each problem
found is a :class:`RequestProblem` naming the field to correct, never an exception.
"""

from __future__ import annotations

from syncwarden.connectors.errors import ConnectorError, NotFoundError, PermissionMissingError
from syncwarden.connectors.ports import Directory, DirectoryUser
from syncwarden.connectors.scheduling.ports import Profile, SchedulingSystem
from syncwarden.core.logging import get_logger
from syncwarden.workflows.ports import Person
from syncwarden.workflows.results import RequestProblem
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.system_actors import is_system

log = get_logger(__name__)


class SubjectFinder:
    def __init__(self, directory: Directory, scheduling: SchedulingSystem, roster: Roster) -> None:
        self._directory = directory
        self._scheduling = scheduling
        self._roster = roster

    async def resolve(
        self, requester: Person, subject: str | None, *, must_be_enabled: bool = True
    ) -> tuple[DirectoryUser | None, RequestProblem | None]:
        """The person a request is about (default: the requester); only IT may name another."""
        on_behalf = subject is not None and subject.strip().lower() not in (
            requester.id.lower(),
            requester.upn.lower(),
        )
        if (
            on_behalf
            and not is_system(requester.id)  # the service's own repairs (see system_actors)
            and not await self._roster.is_it_admin(requester.id)
        ):
            return None, RequestProblem(
                "subject",
                "only IT admins can ask on someone else's behalf; ask the person to message me",
            )
        wanted = subject.strip() if subject and on_behalf else requester.id
        try:
            if "@" in wanted:
                person = await self._directory.find_user_by_address(wanted)
            else:
                person = await self._directory.get_user(wanted)
        except NotFoundError:
            person = None
        except ConnectorError as error:
            log.warning("request.directory_failed", error=str(error))
            return None, RequestProblem(
                "subject", "the directory could not be reached; try again in a minute"
            )
        if person is None:
            return None, RequestProblem(
                "subject", f"nobody with the address or id '{wanted}' is in the directory"
            )
        if must_be_enabled and not person.account_enabled:
            return None, RequestProblem("subject", f"{person.display_name}'s account is disabled")
        return person, None

    async def mailbox_problems(self, person: DirectoryUser) -> list[RequestProblem]:
        try:
            has_mailbox = await self._directory.has_mailbox(person.id)
        except PermissionMissingError as error:
            # The app's fault, not Exchange's availability: waiting a minute will not help.
            log.warning("request.mailbox_check_refused", error=str(error))
            what = error.permission or "a permission"
            return [
                RequestProblem(
                    "mailbox",
                    f"Syncwarden is not allowed to check mailboxes (its app lacks {what}); "
                    "IT must grant it (`syncwarden doctor` says how)",
                )
            ]
        except ConnectorError as error:
            log.warning("request.mailbox_check_failed", error=str(error))
            return [
                RequestProblem(
                    "mailbox", "Exchange Online could not be reached; try again in a minute"
                )
            ]
        if has_mailbox:
            return []
        return [
            RequestProblem(
                "mailbox",
                f"{person.display_name} has no Exchange Online mailbox (no licence, or it is "
                "on-premises); IT must sort that out first",
            )
        ]

    def chosen_mailbox(
        self, person: DirectoryUser, mailbox: str | None
    ) -> tuple[str, RequestProblem | None]:
        """The address to sync into: the one chosen, if it reaches the person's mailbox, else the
        primary. Every such address reaches the same mailbox; the choice is which one the
        scheduling system is told and the instructions name."""
        primary = person.primary_smtp or person.user_principal_name
        if not mailbox or not mailbox.strip():
            return primary, None
        chosen = person.mailbox_address(mailbox)
        if chosen is None:
            return primary, RequestProblem(
                "mailbox",
                f"{mailbox.strip()[:100]} is not an address of {person.display_name}'s mailbox",
            )
        return chosen, None

    async def choose_profile(
        self, person: DirectoryUser, profile_id: str | None
    ) -> tuple[Profile | None, list[Profile], RequestProblem | None]:
        """The scheduling profile: matched by address first, by name only when none matches."""
        addresses = addresses_of(person)
        exact: dict[str, Profile] = {}
        for address in addresses:
            for profile in await self._scheduling.find_profiles(email=address):
                exact[profile.id] = profile
        by_name = list(await self._scheduling.find_profiles(name=person.display_name))
        candidates = list(exact.values()) or by_name
        if profile_id:
            chosen = next((p for p in [*exact.values(), *by_name] if p.id == profile_id), None)
            if chosen is None:
                return (
                    None,
                    candidates,
                    RequestProblem(
                        "profile",
                        f"scheduling profile {profile_id} does not belong to {person.display_name}",
                    ),
                )
            return chosen, candidates, None
        if len(exact) == 1:
            return next(iter(exact.values())), candidates, None
        if not candidates:
            return (
                None,
                [],
                RequestProblem(
                    "profile",
                    f"no scheduling profile matches {person.display_name} "
                    f"({', '.join(addresses)}); ask the scheduling administrator to add one",
                ),
            )
        return (
            None,
            candidates,
            RequestProblem("profile", "several scheduling profiles match; choose one"),
        )


def addresses_of(person: DirectoryUser) -> list[str]:
    """Every address that names the person, primary first, each once (case-insensitively).

    For finding their scheduling profile, which may hold any of them (even an outside one);
    the addresses one may sync into are :attr:`DirectoryUser.mailbox_addresses`.
    """
    seen: list[str] = []
    for address in [
        person.primary_smtp,
        person.mail,
        person.user_principal_name,
        *person.other_mails,
        *(p.split(":", 1)[1] for p in person.proxy_addresses if ":" in p),
    ]:
        if address and address.lower() not in (a.lower() for a in seen):
            seen.append(address)
    return seen
