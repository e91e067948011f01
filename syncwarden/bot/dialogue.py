"""What the bot does with each message and card click: parse, ask the workflow, answer.

No business rules live here: who may approve, what a valid request is, what happens after a
decision all belong to :mod:`workflows.service`, and who may read a ticket to
:mod:`workflows.access` (every answer that shows a ticket, or says there is none, asks it first).
This module translates between Teams (text, card data, who clicked) and those use cases, and
decides only how the answer looks. It takes plain data, not SDK objects, so it is tested without
the SDK and the SDK stays in one module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from syncwarden.bot import cards, review_cards
from syncwarden.bot.access_actions import AccessActions
from syncwarden.bot.commands import BY_INTENT, help_text, is_it_only
from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRef,
    ConversationStore,
)
from syncwarden.bot.intents import (
    Intent,
    Mention,
    Parsed,
    parse,
    shown_ticket_ref,
    valid_ticket_ref,
)
from syncwarden.bot.list_filters import (
    TICKET_ERROR_KINDS,
    USER_ERROR_KINDS,
    parse_tickets_filter,
    parse_users_filter,
    unknown_error_kind,
)
from syncwarden.bot.turn_limits import TurnLimiter, Verdict
from syncwarden.core.db import utc_now
from syncwarden.core.logging import get_logger
from syncwarden.workflows import wording
from syncwarden.workflows.access import CANNOT_SEE, Reader, Role, may_read, readable
from syncwarden.workflows.access_terms import latest_day, parse_day
from syncwarden.workflows.drift_digest import DriftDigest
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import (
    Page,
    TicketScope,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
)
from syncwarden.workflows.ports import Person
from syncwarden.workflows.results import RequestProblem
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.service import ActionOutcome, ActionResult, RequestResult, WorkflowService
from syncwarden.workflows.system_actors import is_system
from syncwarden.workflows.text import storable_text

log = get_logger(__name__)


class ScanSummary(Protocol):
    """What a credential scan reports (the bot may not import the sync room, so a protocol)."""

    @property
    def apps(self) -> int: ...

    @property
    def findings(self) -> int: ...

    @property
    def alerted(self) -> int: ...

    @property
    def resolved(self) -> int: ...


class DriftFixer(Protocol):
    """IT's answers to access drift, and a run on demand (the sync room implements it)."""

    async def fix(self, key: str, fix: str, actor: Person) -> str: ...

    async def ignore(self, key: str, fingerprint: str, actor: Person) -> str: ...

    async def run_now(self) -> DriftDigest: ...


class CredentialScanner(Protocol):
    async def scan(self) -> ScanSummary: ...

    async def acknowledge(self, alert_key: str, actor: str) -> str: ...

    async def snooze(self, alert_key: str, actor: str, *, hours: float = 24) -> str: ...


class CheckResult(Protocol):
    """One doctor item (the bot may not import the composition room, so a protocol)."""

    @property
    def name(self) -> str: ...

    @property
    def passed(self) -> bool: ...

    @property
    def detail(self) -> str: ...

    @property
    def fix(self) -> str | None: ...

    @property
    def verdict(self) -> str: ...


class DoctorResult(Protocol):
    @property
    def checks(self) -> Sequence[CheckResult]: ...


class SelfCheck(Protocol):
    async def run(self) -> DoctorResult: ...


class SyncTrigger(Protocol):
    """Asking the sync worker for a run now (the bot may not import the sync room)."""

    async def request_person(self, who: str) -> int: ...

    async def request(self, enrollment_ids: Sequence[int] | None = None) -> int: ...


NOT_CONFIGURED = (
    "Calendar sync requests are not available yet: Syncwarden has no Microsoft 365 connection or "
    "sync group configured. Please tell IT."
)
UNKNOWN_SENDER = "Sorry, I can't tell who sent that, so I can't act on it."
UNREADABLE_FORM = "I can't read that form; please ask me again."
UNRESOLVED_MENTION = (
    "I couldn't look up the person you mentioned. Please give their email address instead, "
    "for example **add someone@example.edu to calendar sync**."
)
ADMIN_ONLY = "Sorry, only IT admins can do that. Ask me **help** to see what you can do."
# The highest row number a Next button may say its page starts at (a list is 10,000s of rows).
_MAX_FIRST_ROW = 10_000_000


@dataclass(frozen=True)
class Incoming:
    """One activity, reduced to what the conversation logic needs."""

    conversation: ConversationRef
    sender: Person
    sender_mri: str
    text: str = ""
    value: Mapping[str, Any] = field(default_factory=dict)
    mentions: tuple[Mention, ...] = ()
    bot_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    """Something to send back: Markdown text and/or one card."""

    text: str | None = None
    card: cards.Card | None = None


Handler = Callable[[Incoming, Parsed], Awaitable[Reply]]


class DialogueLogic:
    def __init__(
        self,
        conversations: ConversationStore,
        service: WorkflowService | None,
        roster: Roster | None,
        *,
        credentials: CredentialScanner | None = None,
        doctor: SelfCheck | None = None,
        sync: SyncTrigger | None = None,
        drift: DriftFixer | None = None,
        clock: Callable[[], datetime] = utc_now,
        limits: TurnLimiter | None = None,
    ) -> None:
        """``limits`` refuses turns beyond each person's and conversation's allowance before
        anything else is done for them (see :mod:`bot.turn_limits`); None serves every turn."""
        self._conversations = conversations
        self._service = service
        self._roster = roster
        self._credentials = credentials
        self._doctor = doctor
        self._sync = sync
        self._drift = drift
        self._clock = clock
        self._limits = limits
        self._handlers = self._dispatch_table()

    async def remember(self, incoming: Incoming, *, installed: bool = False) -> None:
        """Keep the conversation reference fresh: it is how we can write there later.
        ``installed``: the turn is the app being added there (see ConversationStore.remember).

        Not for a turn the limits will refuse: its conversation was refreshed by the turns that
        used up the allowance moments ago, and a flood must not become a flood of writes.
        """
        if self._limits is not None and not self._limits.would_serve(
            incoming.sender.id, incoming.conversation.conversation_id
        ):
            return
        await self._conversations.remember(incoming.conversation, installed=installed)

    async def forget(self, conversation_id: str) -> None:
        await self._conversations.forget(conversation_id)

    async def on_message(self, incoming: Incoming) -> list[Reply]:
        """The replies to a message; none for a refused turn whose sender was told already."""
        refused = self._refused(incoming)
        if refused is not None:
            return [Reply(refused.message)] if refused.tell else []
        # Not through remember(): this turn has just taken its tokens, maybe the last ones.
        await self._conversations.remember(incoming.conversation)
        if not _a_person(incoming.sender.id):
            return [Reply(UNKNOWN_SENDER)]
        if incoming.value.get("verb"):
            # An Action.Submit fallback from an old client: the same as the card action.
            return [await self._card_action(incoming)]
        parsed = parse(
            incoming.text,
            mentions=incoming.mentions,
            bot_id=incoming.conversation.bot_id,
            bot_names=incoming.bot_names,
        )
        if parsed.intent in (Intent.HELP, Intent.UNKNOWN):
            return [await self._help(incoming.sender)]
        if parsed.subject_id and ":" in parsed.subject_id:
            # A Teams id (29:…) the connector could not turn into a person: never shown to anyone.
            return [Reply(UNRESOLVED_MENTION)]
        if self._service is None or self._roster is None:
            return [Reply(NOT_CONFIGURED)]
        if is_it_only(parsed.intent) and not await self._roster.is_it_admin(incoming.sender.id):
            return [Reply(ADMIN_ONLY)]
        handler = self._handlers.get(parsed.intent)
        if handler is None:
            return [Reply(f"**{parsed.intent.value.replace('_', ' ')}** is not available yet.")]
        return [await handler(incoming, parsed)]

    @property
    def handled_intents(self) -> frozenset[Intent]:
        """What this dialogue answers (the rest of :data:`bot.commands.COMMANDS` says "not yet")."""
        return frozenset(self._handlers) | {Intent.HELP, Intent.UNKNOWN}

    def _dispatch_table(self) -> dict[Intent, Handler]:
        """One handler per command of :data:`bot.commands.COMMANDS`; who may run it is there."""
        table: dict[Intent, Handler] = {
            Intent.ENROLL: self._on_enroll,
            Intent.REMOVE: self._on_remove,
            Intent.CHANGE: self._on_change,
            Intent.STATUS: lambda incoming, _parsed: self._status(incoming.sender),
            Intent.TICKET: self._on_ticket,
            Intent.TICKETS: self._on_tickets,
            Intent.RETRY: self._on_retry,
            Intent.USE_CHANNEL: lambda incoming, _p: self._use_channel(incoming, ChannelRole.IT),
            Intent.USE_CHANNEL_FOR_APPROVALS: lambda incoming, _p: self._use_channel(
                incoming, ChannelRole.APPROVALS
            ),
            Intent.USERS: self._on_users,
            Intent.REVIEW_START: self._on_review_start,
            Intent.PAUSE: self._on_pause_or_resume,
            Intent.RESUME: self._on_pause_or_resume,
        }
        if self._credentials is not None:
            table[Intent.SECRETS] = self._on_secrets
        if self._sync is not None:
            table[Intent.SYNC_NOW] = lambda _incoming, parsed: self._sync_now(
                parsed.subject_id or parsed.address or parsed.argument
            )
        if self._doctor is not None:
            table[Intent.DOCTOR] = self._on_doctor
        if self._drift is not None:
            table[Intent.RECONCILE] = self._on_reconcile
        return table

    async def _help(self, person: Person) -> Reply:
        it_admin = self._roster is not None and await self._roster.is_it_admin(person.id)
        return Reply(help_text(it_admin=it_admin))

    async def _on_enroll(self, incoming: Incoming, parsed: Parsed) -> Reply:
        return await self._enrollment_form(incoming, parsed.subject_id or parsed.address)

    async def _on_remove(self, incoming: Incoming, parsed: Parsed) -> Reply:
        assert self._service is not None
        subject = parsed.subject_id or parsed.address
        result = await self._service.request_removal(incoming.sender, subject=subject)
        return _request_reply(result, "removal")

    async def _on_change(self, incoming: Incoming, parsed: Parsed) -> Reply:
        assert self._service is not None
        if not parsed.address:
            return Reply(f"Which address? For example: **{BY_INTENT[Intent.CHANGE].example}**")
        result = await self._service.request_change(incoming.sender, mailbox=parsed.address)
        return _request_reply(result, "change")

    async def _on_ticket(self, incoming: Incoming, parsed: Parsed) -> Reply:
        # Not only for IT: whoever may read the ticket (see workflows.access) may ask for it. A
        # number that cannot be a ticket's is answered as one with no ticket behind it.
        if not parsed.ticket_typed:
            return Reply(f"Which ticket? For example: **{BY_INTENT[Intent.TICKET].example}**")
        if parsed.ticket_ref is None:
            return _unseen(parsed.ticket_typed, await self._reader(incoming.sender))
        return await self._show_ticket(incoming.sender, parsed.ticket_ref)

    async def _on_tickets(self, incoming: Incoming, parsed: Parsed) -> Reply:
        wanted = parsed.listing if isinstance(parsed.listing, TicketsFilter) else TicketsFilter()
        return await self._tickets_page(incoming.sender, wanted)

    async def _tickets_page(
        self,
        person: Person,
        wanted: TicketsFilter,
        after: TicketsCursor | None = None,
        first: int = 1,
    ) -> Reply:
        """A page of tickets as a card. Only IT admins list tickets, and they read every ticket
        (:mod:`workflows.access`), so asking access leaves the page whole; it is asked anyway,
        as on every path that shows a ticket."""
        assert self._service is not None
        unknown = unknown_error_kind(wanted.error_kind, TICKET_ERROR_KINDS, "tickets")
        if unknown is not None:
            return Reply(unknown)
        page = await self._service.tickets_page(wanted, after)
        reader = await self._reader(person)
        shown = Page(tuple(readable(page.rows, reader)), page.after)
        if not shown.rows and first == 1:
            which = "" if wanted.scope is TicketScope.ALL else f"{wanted.scope.value} "
            kind = f" with error:{wanted.error_kind}" if wanted.error_kind else ""
            named = f" for {wanted.name}" if wanted.name else ""
            return Reply(f"No {which.replace('_', ' ')}tickets{kind}{named}.")
        return Reply(card=cards.tickets_card(shown, now=self._clock(), wanted=wanted, first=first))

    async def _on_retry(self, incoming: Incoming, parsed: Parsed) -> Reply:
        assert self._service is not None
        if not parsed.ticket_typed:
            return Reply(f"Which ticket? For example: **{BY_INTENT[Intent.RETRY].example}**")
        if parsed.ticket_ref is None:
            return _unseen(parsed.ticket_typed, await self._reader(incoming.sender))
        return _action_reply(await self._service.retry(parsed.ticket_ref, incoming.sender))

    async def _on_secrets(self, _incoming: Incoming, _parsed: Parsed) -> Reply:
        assert self._credentials is not None
        report = await self._credentials.scan()
        return Reply(
            f"Checked {report.apps} app registrations: {report.findings} credentials need "
            f"attention, {report.alerted} new alerts posted to the IT channel, "
            f"{report.resolved} resolved."
        )

    async def _on_reconcile(self, _incoming: Incoming, _parsed: Parsed) -> Reply:
        assert self._drift is not None
        digest = await self._drift.run_now()
        if not digest.open_count and not digest.opened and not digest.held:
            return Reply("Reconciled: the sync group, enrollments and directory agree.")
        return Reply(card=cards.drift_card(digest, title="Access drift: open differences"))

    async def _drift_action(self, incoming: Incoming, verb: str) -> Reply:
        """Fix or Ignore on a drift card. The card names only the finding; who may act, and
        what the finding is now, are decided by the drift desk from the database."""
        if self._drift is None:
            return Reply(NOT_CONFIGURED)
        key = _card_text(incoming.value.get("finding"))
        seen = _card_text(incoming.value.get("seen")) or ""
        if not key or not _plausible(key, 200):
            return Reply("That card does not name a difference; run **reconcile** for a new one.")
        if verb == cards.Verb.DRIFT_IGNORE:
            return Reply(await self._drift.ignore(key, seen, incoming.sender))
        fix = _card_text(incoming.value.get("fix")) or ""
        return Reply(await self._drift.fix(key, fix, incoming.sender))

    async def _on_doctor(self, _incoming: Incoming, _parsed: Parsed) -> Reply:
        assert self._doctor is not None
        return Reply(doctor_text(await self._doctor.run()))

    async def _on_users(self, _incoming: Incoming, parsed: Parsed) -> Reply:
        wanted = parsed.listing if isinstance(parsed.listing, UsersFilter) else UsersFilter()
        return await self._users_page(wanted)

    async def _users_page(
        self, wanted: UsersFilter, after: UsersCursor | None = None, first: int = 1
    ) -> Reply:
        assert self._service is not None
        unknown = unknown_error_kind(wanted.error_kind, USER_ERROR_KINDS, "users")
        if unknown is not None:
            return Reply(unknown)
        page = await self._service.users_page(wanted, after)
        return Reply(card=cards.users_card(page, now=self._clock(), wanted=wanted, first=first))

    async def _next_page(self, incoming: Incoming, verb: str) -> Reply:
        """A click on a list's Next button. Who clicked is asked again (the card proves
        nothing: it may be forwarded, old or forged), and its filter, cursor and row number
        are read as untrusted text with the same readers as a typed command."""
        assert self._roster is not None
        if not await self._roster.is_it_admin(incoming.sender.id):
            return Reply(ADMIN_ONLY)
        value = incoming.value
        first = _int_or_none(value.get("first"))
        if first is None or not 1 < first <= _MAX_FIRST_ROW:
            return _unreadable_page(verb)
        if verb == cards.Verb.USERS_PAGE:
            users = parse_users_filter(value.get("filters"))
            after_user = UsersCursor.parse(value.get("after"))
            if users is None or after_user is None:
                return _unreadable_page(verb)
            return await self._users_page(users, after_user, first)
        tickets = parse_tickets_filter(value.get("filters"))
        after_ticket = TicketsCursor.parse(value.get("after"))
        if tickets is None or after_ticket is None:
            return _unreadable_page(verb)
        return await self._tickets_page(incoming.sender, tickets, after_ticket, first)

    async def _on_review_start(self, incoming: Incoming, _parsed: Parsed) -> Reply:
        """IT starts an access review now (the dispatch already checked they are IT)."""
        assert self._service is not None
        started = await self._service.reviews.start(incoming.sender)
        if isinstance(started, str):
            return Reply(f"{started}.")
        return Reply(
            f"Started access review **{started.ref}** of {started.people} people; the reviewers "
            f"have been asked. It closes on {started.closes_at:%d %b %Y} UTC."
        )

    async def _on_pause_or_resume(self, incoming: Incoming, parsed: Parsed) -> Reply:
        assert self._service is not None
        who = parsed.subject_id or parsed.address or parsed.argument
        if not who:
            return Reply(f"Whom? For example: **{BY_INTENT[parsed.intent].example}**")
        paused = await self._service.set_paused(
            incoming.sender, who, paused=parsed.intent is Intent.PAUSE
        )
        return _action_reply(paused)

    async def _sync_now(self, who: str | None) -> Reply:
        assert self._sync is not None and self._service is not None
        if not who or who.lower() in ("all", "everyone"):
            count = await self._sync.request()
            return Reply(f"Syncing all {count} enrolled people now; failures go to the IT channel.")
        matching = await self._service.enrollments_of(who)
        if not matching:
            return Reply(f"Nobody enrolled matches **{who}**. Say **users** to see who is.")
        if all(enrollment.paused for enrollment in matching):
            name = matching[0].name
            return Reply(
                f"Sync for **{name}** is paused, so nothing would run. "
                f"Say **resume {matching[0].upn}** first."
            )
        await self._sync.request_person(who)
        return Reply(f"Syncing **{who}** now; say **users** in a minute to see the result.")

    async def on_card_action(self, incoming: Incoming) -> Reply:
        """A click on one of our cards; answered with the card to show in its place.

        A refused click is answered too, always: an invoke's answer is its HTTP response (Teams
        shows an error without one), not one more message in the chat.
        """
        refused = self._refused(incoming)
        if refused is not None:
            return Reply(refused.message)
        return await self._card_action(incoming)

    def _refused(self, incoming: Incoming) -> Verdict | None:
        """The limits' verdict on a turn they refuse (counted, logged when the sender is told),
        or None to serve it."""
        if self._limits is None:
            return None
        verdict = self._limits.admit(incoming.sender.id, incoming.conversation.conversation_id)
        if verdict.allowed:
            return None
        if verdict.tell:
            log.info(
                "bot.turn_limited",
                scope=verdict.scope,
                retry_after_seconds=round(verdict.retry_after_seconds, 1),
                conversation_id=incoming.conversation.conversation_id,
            )
        return verdict

    async def _card_action(self, incoming: Incoming) -> Reply:
        value = incoming.value
        verb = str(value.get("verb", ""))
        if self._service is None or self._roster is None:
            return Reply(NOT_CONFIGURED)
        if not _a_person(incoming.sender.id):
            return Reply(UNKNOWN_SENDER)
        if verb == cards.Verb.SUBMIT_REQUEST:
            return await self._submit_request(incoming)
        if verb in (cards.Verb.ACKNOWLEDGE, cards.Verb.SNOOZE):
            return await self._credential_action(incoming, verb)
        if verb in (cards.Verb.USERS_PAGE, cards.Verb.TICKETS_PAGE):
            return await self._next_page(incoming, verb)
        if verb in review_cards.VERBS:
            text, card = await AccessActions(self._service, self._clock).handle(
                incoming.sender, verb, value
            )
            return Reply(text, card=card)
        if verb in (cards.Verb.DRIFT_FIX, cards.Verb.DRIFT_IGNORE):
            return await self._drift_action(incoming, verb)
        if verb not in _TICKET_VERBS:
            return Reply("That button is not one of mine any more; please ask again.")
        given = value.get("ticket")
        ref = valid_ticket_ref(given)
        if ref is None:
            shown = shown_ticket_ref(given) if isinstance(given, str) else ""
            return await self._no_such_ticket(verb, incoming.sender, shown)
        version = _int_or_none(value.get("version"))
        now = self._clock()
        if verb in (cards.Verb.APPROVE, cards.Verb.REJECT):
            result = await self._service.decide(
                ref,
                incoming.sender,
                approve=verb == cards.Verb.APPROVE,
                comment=_free_text(value.get("comment"), 500),
                version=version,
            )
            return await self._decision_card(result, incoming.sender, ref, now)
        if verb == cards.Verb.REFRESH:
            view = await self._service.get_ticket(ref)
            reader = await self._reader(incoming.sender)
            if view is None or not may_read(view, reader):
                return _unseen(ref, reader, exists=view is not None)
            approvers = await self._roster.approvers()
            may_decide = (
                incoming.sender.id.lower() in approvers
                and incoming.sender.id.lower()
                not in (
                    view.subject.id.lower(),
                    view.requester.id.lower(),
                )
            )
            card = (
                cards.approver_card(view, now=now)
                if may_decide
                else cards.approval_card(view, now=now)
            )
            return Reply(card=card)
        if verb in (cards.Verb.RETRY, cards.Verb.CANCEL, cards.Verb.MANUAL_DONE):
            action = {
                cards.Verb.RETRY: self._service.retry,
                cards.Verb.CANCEL: self._service.cancel,
                cards.Verb.MANUAL_DONE: self._service.manual_step_done,
            }[verb]
            result = await action(ref, incoming.sender)
            refused = await self._refusal_hiding_the_ticket(result, incoming.sender, ref)
            if refused is not None:
                return refused
            if result.ticket is None:
                return Reply(result.message)
            return Reply(card=cards.status_card(result.ticket, result.message, now=now))
        return Reply("That button is not one of mine any more; please ask again.")

    async def _no_such_ticket(self, verb: str, person: Person, shown: str) -> Reply:
        """The answer to a click whose card data names a number no ticket can have (card data is
        whatever the client sent): the answer for a well-formed number with no ticket behind it.

        Retry and manual-done are IT's; :mod:`workflows.service` refuses them to anyone else
        before it looks a number up, so they get that refusal here too. Everything else is the
        answer for an unknown ticket: strangers get the refusal they get for any ticket.
        """
        assert self._service is not None
        reader = await self._reader(person)
        if verb in (cards.Verb.RETRY, cards.Verb.MANUAL_DONE) and (
            Role.IT_ADMIN not in reader.roles
        ):
            action = (
                self._service.retry if verb == cards.Verb.RETRY else self._service.manual_step_done
            )
            result = await action("", person)
            if result.outcome is ActionOutcome.NOT_ALLOWED and result.ticket is None:
                return Reply(result.message)
        return _unseen(shown, reader)

    async def _credential_action(self, incoming: Incoming, verb: str) -> Reply:
        assert self._roster is not None
        if self._credentials is None:
            return Reply(NOT_CONFIGURED)
        if not await self._roster.is_it_admin(incoming.sender.id):
            return Reply("Only IT admins can acknowledge or snooze credential alerts.")
        alert = _card_text(incoming.value.get("alert")) or ""
        actor = incoming.sender.name or incoming.sender.id
        if verb == cards.Verb.ACKNOWLEDGE:
            outcome = await self._credentials.acknowledge(alert, actor)
        else:
            outcome = await self._credentials.snooze(alert, actor)
        return Reply(outcome)

    async def _enrollment_form(self, incoming: Incoming, subject: str | None) -> Reply:
        assert self._service is not None
        form = await self._service.enrollment_form(incoming.sender, subject=subject)
        if form.existing is not None or form.message:
            ref = (
                f" ({form.existing.ref}, {TicketStatus(form.existing.status).label})"
                if form.existing
                else ""
            )
            return Reply(f"{form.message}{ref}.")
        if form.subject is None or form.problems:
            return Reply(
                "I can't set that up: " + "; ".join(p.message for p in form.problems) + "."
            )
        return Reply(
            card=cards.request_card(
                name=form.subject.display_name,
                upn=form.subject.user_principal_name,
                addresses=list(form.addresses),
                primary=form.primary,
                profiles=list(form.profiles),
                subject_id=form.subject.id if form.subject.id != incoming.sender.id else None,
                latest=latest_day(self._clock(), self._service.access.max_days),
            )
        )

    async def _submit_request(self, incoming: Incoming) -> Reply:
        assert self._service is not None
        value = incoming.value
        given = [_card_text(value.get(key)) for key in ("subject", "mailbox", "profile")]
        named = [name for name in given if name is not None]
        if len(named) < len(given) or any(name and not _plausible(name, 320) for name in named):
            return Reply(UNREADABLE_FORM)
        subject = named[0] or None
        until = parse_day(value.get("until"))
        if isinstance(until, RequestProblem):
            result = RequestResult(problems=(until,))
        else:
            result = await self._service.request_enrollment(
                incoming.sender,
                subject=subject,
                mailbox=named[1] or None,
                profile_id=named[2] or None,
                justification=_free_text(value.get("justification"), 500),
                until=until,
            )
        if result.ok or result.ticket is not None:
            reply = _request_reply(result, "request")
            if result.created and result.ticket is not None:
                # The card turns into its sent state; the confirmation goes into the chat.
                sent = cards.request_sent_card(result.ticket, now=self._clock())
                return Reply(reply.text, card=sent)
            return reply
        form = await self._service.enrollment_form(incoming.sender, subject=subject)
        if form.subject is None:
            return Reply(
                "I can't set that up: " + "; ".join(p.message for p in result.problems) + "."
            )
        errors = {problem.field: problem.message for problem in result.problems}
        return Reply(
            card=cards.request_card(
                name=form.subject.display_name,
                upn=form.subject.user_principal_name,
                addresses=list(form.addresses),
                primary=form.primary,
                profiles=list(result.profile_candidates or form.profiles),
                chosen_profile=named[2] or None,
                justification=_free_text(value.get("justification"), 500),
                errors=errors,
                subject_id=subject,
                until=_card_text(value.get("until")) or "",
                latest=latest_day(self._clock(), self._service.access.max_days),
            )
        )

    async def _reader(self, person: Person) -> Reader:
        """The person with the roles the roster gives them, for :mod:`workflows.access`."""
        assert self._roster is not None
        who = person.id.lower()
        roles: set[Role] = set()
        if await self._roster.is_it_admin(person.id):
            roles.add(Role.IT_ADMIN)
        # Fallback approvers are asked to decide whatever waits too long, so they read as
        # approvers (the ticket snapshot does not say whether it was escalated).
        if who in await self._roster.approvers() or who in await self._roster.fallback_approvers():
            roles.add(Role.APPROVER)
        return Reader(person.id, frozenset(roles))

    async def _show_ticket(self, person: Person, ref: str) -> Reply:
        assert self._service is not None
        view = await self._service.get_ticket(ref)
        reader = await self._reader(person)
        if view is None or not may_read(view, reader):
            return _unseen(ref, reader, exists=view is not None)
        return Reply(card=cards.approval_card(view, now=self._clock()))

    async def _refusal_hiding_the_ticket(
        self, result: ActionResult, person: Person, ref: str
    ) -> Reply | None:
        """A refused or unknown action on a ticket the person may not read shows nothing of it.

        A done action was authorised as a write, so its answer may show the ticket. Otherwise the
        person sees the ticket (or learns that there is none) only if they may read it.
        """
        if result.ok:
            return None
        if result.outcome is ActionOutcome.NOT_FOUND:
            return _unseen(ref, await self._reader(person), exists=False)
        if result.ticket is not None:
            reader = await self._reader(person)
            if not may_read(result.ticket, reader):
                return _unseen(ref, reader, exists=True)
        return None

    async def _decision_card(
        self, result: ActionResult, person: Person, ref: str, now: datetime
    ) -> Reply:
        refused = await self._refusal_hiding_the_ticket(result, person, ref)
        if refused is not None:
            return refused
        if result.ticket is None:
            return Reply(result.message)
        notice = None if result.outcome is ActionOutcome.DONE else _sentence(result.message)
        if result.outcome is ActionOutcome.NOT_ALLOWED:
            # They keep seeing the request, without buttons that would only be refused again.
            return Reply(card=cards.approval_card(result.ticket, now=now, notice=notice))
        return Reply(card=cards.approver_card(result.ticket, now=now, notice=notice))

    async def _status(self, person: Person) -> Reply:
        assert self._service is not None
        status = await self._service.status_of(person.id)
        if status.open_ticket is not None:
            ticket = status.open_ticket
            return Reply(f"Your request {ticket.ref} is **{TicketStatus(ticket.status).label}**.")
        if status.enrolled_mailbox:
            synced = (
                f" Last sync: {status.last_sync_at:%d %b %H:%M} UTC" if status.last_sync_at else ""
            )
            if synced and status.last_sync_summary:
                synced += f" ({status.last_sync_summary})"
            synced += "." if synced else ""
            problem = f" Last problem: {status.last_error}" if status.last_error else ""
            ends = (
                f" It ends after **{wording.last_day(status.access_until)}**."
                if status.access_until
                else ""
            )
            return Reply(
                f"Your calendar syncs into **{status.enrolled_mailbox}**.{ends}{synced}{problem}"
            )
        return Reply(
            "You are not enrolled in calendar sync. Say **add me to calendar sync** to ask."
        )

    async def _use_channel(self, incoming: Incoming, role: ChannelRole) -> Reply:
        if incoming.conversation.kind is ConversationKind.PERSONAL:
            return Reply("Say this in the Teams channel you mean, with an @mention of me.")
        channel_id = incoming.conversation.conversation_id
        await self._conversations.assign_role(channel_id, role)
        if role is ChannelRole.APPROVALS:
            assert self._service is not None
            waiting = await self._service.show_waiting_in_channel(_channel_key(channel_id))
            posted = (
                f" {waiting} request{'s' if waiting > 1 else ''} waiting for a decision "
                f"{'are' if waiting > 1 else 'is'} posted here now."
                if waiting
                else ""
            )
            return Reply(
                "Approval cards now go to this channel too; only approvers can decide." + posted
            )
        return Reply("This channel now gets Syncwarden's status lines, failures and alerts.")


def _channel_key(conversation_id: str) -> str:
    """A short, stable name for a channel, for the keys of messages posted to it."""
    return hashlib.sha256(conversation_id.encode()).hexdigest()[:16]


def _request_reply(result: RequestResult, what: str) -> Reply:
    if result.ticket is not None and result.created:
        ticket = result.ticket
        waiting = (
            "An approver has been asked; I'll message you when it is decided."
            if ticket.status == TicketStatus.AWAITING_APPROVAL
            else f"I'm {wording.under_way(ticket)}."
        )
        return Reply(f"Thanks! Your {what} is **{ticket.ref}**. {waiting}")
    if result.ticket is not None:
        said = _sentence(result.message)
        ref = result.ticket.ref
        return Reply(said if ref in said else f"{said} ({ref})")
    return Reply("I can't do that: " + "; ".join(p.message for p in result.problems) + ".")


def _unseen(ref: str, reader: Reader, *, exists: bool = False) -> Reply:
    """The answer for a ticket the reader may not see: the same whether it exists or not.

    Only those who may read every ticket (IT admins, approvers) learn that a number is unknown.
    """
    if not exists and reader.reads_every_ticket:
        return Reply(f"There is no ticket {ref}." if ref else "There is no such ticket.")
    return Reply(CANNOT_SEE)


def _action_reply(result: ActionResult) -> Reply:
    return Reply(_sentence(result.message))


def _unreadable_page(verb: str) -> Reply:
    command = "users" if verb == cards.Verb.USERS_PAGE else "tickets"
    return Reply(
        f"I can't read that Next button (it may come from an older card). "
        f"Say **{command}** to start the list again."
    )


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text


def _a_person(sender_id: str) -> bool:
    """Whether a sender id can be a person's: plausible, and never one of the names the service
    files its own tickets under (those skip the checks made of people)."""
    return _plausible(sender_id, 256) and not is_system(sender_id)


def _plausible(identifier: str, longest: int) -> bool:
    """Whether an id or address from an activity can be one: Teams and Entra ids, addresses and
    profile ids are short printable text (a NUL or a lone surrogate only comes from a forged JSON
    escape, and no directory lookup or database column takes it)."""
    return 0 < len(identifier) <= longest and identifier.isprintable()


def _free_text(value: Any, longest: int) -> str:
    """Free text from card data (a justification, a comment), as the card allows it to be; a
    value the card cannot have sent (a list, an object) counts as nothing, never as its repr."""
    return storable_text(_card_text(value) or "", longest)


def _card_text(value: Any) -> str | None:
    """A card input's value: text, "" when absent, None when it is not text at all (card inputs
    are strings; a list or an object is forged, and its Python form must never be shown)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    """An integer from card data: a JSON integer, or up to 10 ASCII digits as text; else None
    (``int`` would also take ``Infinity``, a float, or digits of any script)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value.strip()
        if 0 < len(digits) <= 10 and digits.isascii() and digits.isdecimal():
            return int(digits)
    return None


# The card verbs that name a ticket in their data.
_TICKET_VERBS = frozenset(
    {
        cards.Verb.APPROVE,
        cards.Verb.REJECT,
        cards.Verb.REFRESH,
        cards.Verb.RETRY,
        cards.Verb.CANCEL,
        cards.Verb.MANUAL_DONE,
    }
)
_MARKS = {"pass": "✅", "fail": "❌", "skip": "⏭️"}


def doctor_text(result: DoctorResult) -> str:
    """The checklist as Markdown: failures first in the headline, every item in order below."""
    failures = [check for check in result.checks if not check.passed]
    headline = (
        f"**Doctor: all {len(result.checks)} checks passed.**"
        if not failures
        else f"**Doctor: {len(failures)} of {len(result.checks)} checks failed.**"
    )
    lines = [headline, ""]
    for check in result.checks:
        lines.append(f"- {_MARKS.get(str(check.verdict), '•')} **{check.name}**: {check.detail}")
        if check.fix and not check.passed:
            lines.append(f"  Fix: {check.fix}")
    return "\n".join(lines)
