"""Clicks on the cards of time-bound access and access reviews.

Card data only says which button was pressed; everything it names is read as untrusted text
(a review name, an item number, a date) and who may do it is asked of the workflow, from the
clicker's id. Answers are a sentence and/or the card to show in place of the clicked one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from syncwarden.bot import review_cards
from syncwarden.bot.cards import Card
from syncwarden.bot.review_cards import AccessVerb
from syncwarden.workflows.access_terms import latest_day, parse_day
from syncwarden.workflows.ports import Person
from syncwarden.workflows.results import RequestProblem
from syncwarden.workflows.review_decisions import PAGE_SIZE, ReviewAnswer
from syncwarden.workflows.review_views import ReviewDecision
from syncwarden.workflows.service import WorkflowService

Answer = tuple[str | None, Card | None]
UNREADABLE = "I can't read that button; please open the review again from its message."


class AccessActions:
    def __init__(self, service: WorkflowService, clock: Callable[[], datetime]) -> None:
        self._service = service
        self._clock = clock

    async def handle(self, clicker: Person, verb: str, value: Mapping[str, Any]) -> Answer:
        if verb == AccessVerb.EXTEND:
            return await self._extend(clicker, value)
        after = _number(value.get("after"))
        if after is None:
            return UNREADABLE, None
        decisions = self._service.review_decisions
        ref = value.get("review")
        if verb == AccessVerb.REVIEW_PAGE:
            return _review_answer(await decisions.page(clicker, ref, after))
        if verb == AccessVerb.REVIEW_DECIDE:
            item = _number(value.get("item"))
            decision = value.get("decision")
            if item is None or decision not in ("keep", "remove"):
                return UNREADABLE, None
            answer = await decisions.decide(
                clicker, ref, item, ReviewDecision(decision), after=after
            )
            return _review_answer(answer)
        items = _numbers(value.get("items"))
        if items is None:
            return UNREADABLE, None
        return _review_answer(await decisions.keep_all(clicker, ref, items, after=after))

    async def _extend(self, clicker: Person, value: Mapping[str, Any]) -> Answer:
        day = parse_day(value.get("until"))
        if isinstance(day, RequestProblem):
            return f"I can't do that: {day.message}.", None
        if day is None:
            return "Choose the new last day first, then press Extend.", None
        result = await self._service.request_extension(clicker, until=day)
        if result.ticket is not None and result.created and result.ticket.access_until:
            outcome = (
                f"Extension asked for: **{result.ticket.ref}**. "
                "An approver has been asked; I'll message you when it is decided."
            )
            latest = latest_day(self._clock(), self._service.access.max_days)
            card = review_cards.access_ending_card(
                "You asked to keep your calendar sync.",
                result.ticket.access_until,
                latest,
                outcome=outcome,
            )
            return outcome, card
        if result.ticket is not None:
            return f"{result.message} ({result.ticket.ref}).", None
        return "I can't do that: " + "; ".join(p.message for p in result.problems) + ".", None


def _review_answer(answer: ReviewAnswer) -> Answer:
    if answer.page is None:
        return answer.message, None
    return None, review_cards.review_page_card(answer.page, notice=answer.message)


def _number(value: Any) -> int | None:
    """A non-negative item number from card data (JSON integer or up to 10 ASCII digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**31 else None
    if isinstance(value, str) and 0 < len(value) <= 10 and value.isascii() and value.isdecimal():
        return int(value)
    return None


def _numbers(value: Any) -> list[int] | None:
    """Item numbers joined by commas (at most a page of them), or None when unreadable."""
    if not isinstance(value, str) or len(value) > 12 * PAGE_SIZE:
        return None
    found = [_number(part.strip()) for part in value.split(",") if part.strip()]
    if not found or len(found) > PAGE_SIZE or any(n is None for n in found):
        return None
    return [n for n in found if n is not None]
