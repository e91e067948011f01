"""Access reviews end to end over the sandbox tenant, on SQLite and PostgreSQL.

Modelled on Microsoft Entra access reviews: reviewers are chosen per review (here the approvers,
or each person's manager from Graph ``GET /users/{id}/manager``), fallback reviewers are asked
when the reviewers do not answer, and when the review ends undecided people follow the
review's default decision, Entra's ``accessReviewScheduleSettings.defaultDecision`` applied by
``autoApplyDecisionsEnabled`` (the older ``expirationBehavior``: keep access or remove it).
Sources: https://learn.microsoft.com/entra/id-governance/access-reviews-overview ,
https://learn.microsoft.com/entra/id-governance/create-access-review (the "Upon completion
settings", "If reviewers don't respond"), and
https://learn.microsoft.com/graph/api/resources/accessreviewschedulesettings .
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from syncwarden.workflows.audit import export_audit
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.review_records import ReviewItem
from syncwarden.workflows.review_views import ReviewDecision, ReviewSummary
from tests.support.workflow import PEOPLE, Harness, workflow_harness


async def enroll(h: Harness, *keys: str) -> None:
    for key in keys:
        result = await h.service.request_enrollment(h.person(key))
        assert result.ticket is not None, result.problems
        approver = h.person("emerson" if key == "casey" else "casey")
        assert (await h.service.decide(result.ticket.ref, approver, approve=True)).ok
    await h.runner.run_until_idle()


async def active(h: Harness) -> set[str]:
    async with h.sessions() as session:
        rows = await session.scalars(
            select(Enrollment.subject_upn).where(Enrollment.active.is_(True))
        )
        return set(rows.all())


async def items(h: Harness) -> dict[str, int]:
    async with h.sessions() as session:
        rows = (await session.execute(select(ReviewItem.subject_upn, ReviewItem.id))).all()
        return {upn.split(".")[0]: item_id for upn, item_id in rows}


@pytest.fixture
async def removing(h: Harness) -> AsyncIterator[Harness]:
    """Approvers review; undecided people lose access when the review closes."""
    async with workflow_harness(
        h.engine, h.tenant, h.m365, reviews={"default_decision": "remove", "window_days": 14}
    ) as harness:
        yield harness


async def test_a_cycle_with_keep_remove_and_an_undecided_person(removing: Harness) -> None:
    h = removing
    casey, emerson, dana = h.person("casey"), h.person("emerson"), h.person("dana")
    await enroll(h, "avery", "rowan", "sasha")
    started = await h.service.reviews.start(dana)
    assert isinstance(started, ReviewSummary), started
    assert started.people == 3
    for approver in (casey, emerson):
        [invite] = h.notifier.to(f"user:{approver.id.lower()}", NotificationKind.REVIEW_REQUESTED)
        assert "3 people" in invite.text
    again = await h.service.reviews.start(dana)
    assert isinstance(again, str) and "still open" in again, "one open review at a time"

    page = await h.service.review_decisions.page(casey, started.ref)
    assert page.page is not None and page.page.undecided == 3
    ids = await items(h)
    kept = await h.service.review_decisions.decide(
        casey, started.ref, ids["avery"], ReviewDecision.KEEP
    )
    assert kept.ok and kept.page is not None and kept.page.undecided == 2
    removed = await h.service.review_decisions.decide(
        emerson, started.ref, ids["rowan"], ReviewDecision.REMOVE
    )
    assert removed.ok and removed.message == "Removal requested."
    await h.runner.run_until_idle()
    assert not h.in_sync_group("rowan"), "Remove opens a removal ticket that runs"
    assert PEOPLE["rowan"] not in await active(h)

    assert (await h.service.reviews.run_due()) == "nothing due"
    h.clock.advance(days=14)
    closed = await h.service.reviews.run_due()
    assert closed.startswith(f"{started.ref} (closed)"), closed
    await h.runner.run_until_idle()
    assert await active(h) == {PEOPLE["avery"]}, "sasha, undecided, followed the default"
    assert not h.in_sync_group("sasha") and h.in_sync_group("avery")
    [told] = h.notifier.to("channel:it", NotificationKind.REVIEW_CLOSED)
    assert "1 kept, 2 removed" in told.text
    late = await h.service.review_decisions.decide(
        casey, started.ref, ids["sasha"], ReviewDecision.KEEP
    )
    assert not late.ok and "closed" in (late.message or "")

    out = io.StringIO()
    await export_audit(h.sessions, out, fmt="json", since=None)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    review_rows = [r for r in rows if r["action"].startswith("review.")]
    assert [r["action"] for r in review_rows] == [
        "review.started",
        "review.decided",
        "review.decided",
        "review.defaulted",
        "review.closed",
    ]
    decided = {
        r["after"]["subject"]: (r["actor"], r["after"]["decision"]) for r in review_rows[1:4]
    }
    assert decided == {
        PEOPLE["avery"]: (casey.upn, "keep"),
        PEOPLE["rowan"]: (emerson.upn, "remove"),
        PEOPLE["sasha"]: ("syncwarden:review", "remove"),
    }
    removal_actors = {r["actor"] for r in rows if r["action"] == "ticket.created.remove"}
    assert removal_actors == {"syncwarden:review"}


async def test_a_click_is_authorised_by_who_clicked(h: Harness) -> None:
    blake, casey, sasha, dana = (h.person(k) for k in ("blake", "casey", "sasha", "dana"))
    await enroll(h, "avery", "sasha")
    started = await h.service.reviews.start(dana)
    assert isinstance(started, ReviewSummary)
    ids = await items(h)
    refused = await h.service.review_decisions.decide(
        blake, started.ref, ids["avery"], ReviewDecision.REMOVE
    )
    assert not refused.ok and "not a reviewer" in (refused.message or "")
    own = await h.service.review_decisions.decide(
        sasha, started.ref, ids["sasha"], ReviewDecision.KEEP
    )
    assert not own.ok, "nobody reviews their own access"
    nothing = await h.service.review_decisions.keep_all(blake, started.ref, ids.values())
    assert nothing.message == "Kept 0 people."
    blank = await h.service.review_decisions.page(blake, started.ref)
    assert blank.page is not None and blank.page.rows == ()
    unknown = await h.service.review_decisions.page(casey, "AR-999")
    assert not unknown.ok
    async with h.sessions() as session:
        assert set((await session.scalars(select(ReviewItem.decision))).all()) == {None}
    everyone = await h.service.review_decisions.keep_all(casey, started.ref, ids.values())
    assert everyone.message == "Kept 2 people."
    by_admin = await h.service.review_decisions.decide(
        dana, started.ref, ids["avery"], ReviewDecision.KEEP
    )
    assert by_admin.ok, "IT admins may decide for anyone"


async def test_managers_review_and_fallback_reviewers_after_the_reminder(h: Harness) -> None:
    async with workflow_harness(
        h.engine,
        h.tenant,
        h.m365,
        approvals={"fallback_approvers": [PEOPLE["blake"]]},
        reviews={"reviewers": "manager", "reminder_days": 7, "window_days": 14},
    ) as m:
        blake, casey, emerson = m.person("blake"), m.person("casey"), m.person("emerson")
        await enroll(m, "avery", "sasha")
        started = await m.service.reviews.start(m.person("dana"))
        assert isinstance(started, ReviewSummary)
        ids = await items(m)
        async with m.sessions() as session:
            reviewer = dict(
                (
                    await session.execute(select(ReviewItem.subject_upn, ReviewItem.reviewer_id))
                ).all()
            )
        assert reviewer[PEOPLE["avery"]] == casey.id.lower(), "avery's manager is casey"
        assert reviewer[PEOPLE["sasha"]] is None, "no manager: the approvers review"
        [casey_invite] = m.notifier.to(
            f"user:{casey.id.lower()}", NotificationKind.REVIEW_REQUESTED
        )
        assert "2 people" in casey_invite.text, "casey: avery as manager, sasha as approver"
        early = await m.service.review_decisions.decide(
            blake, started.ref, ids["avery"], ReviewDecision.KEEP
        )
        assert not early.ok, "fallback reviewers wait for the reminder"
        not_manager = await m.service.review_decisions.decide(
            m.person("rowan"), started.ref, ids["avery"], ReviewDecision.KEEP
        )
        assert not not_manager.ok

        m.clock.advance(days=7)
        assert "reminded" in await m.service.reviews.run_due()
        assert "reminded" not in await m.service.reviews.run_due(), "reminded once"
        assert len(m.notifier.to(f"user:{blake.id.lower()}", NotificationKind.REVIEW_REMINDER)) == 1
        assert len(m.notifier.to(f"user:{casey.id.lower()}", NotificationKind.REVIEW_REMINDER)) == 1
        assert m.notifier.to(f"user:{emerson.id.lower()}", NotificationKind.REVIEW_REMINDER)
        late = await m.service.review_decisions.decide(
            blake, started.ref, ids["avery"], ReviewDecision.KEEP
        )
        assert late.ok, "after the reminder the fallback reviewers may decide"
        m.clock.advance(days=7)
        await m.service.reviews.run_due()
        await m.runner.run_until_idle()
        assert await active(m) == {PEOPLE["avery"], PEOPLE["sasha"]}, "the default is keep"


async def test_scheduled_reviews_are_off_by_default(h: Harness) -> None:
    await enroll(h, "avery")
    h.clock.advance(days=3650)
    assert await h.service.reviews.run_due() == "nothing due"
    assert await h.service.reviews.summaries() == []


async def test_scheduled_reviews_start_every_n_months(h: Harness) -> None:
    async with workflow_harness(
        h.engine, h.tenant, h.m365, reviews={"every_months": 6, "window_days": 14}
    ) as s:
        await enroll(s, "avery")
        first = await s.service.reviews.run_due()
        assert first.startswith("AR-1 ") and "1 people" in first
        s.clock.advance(days=15)
        assert (await s.service.reviews.run_due()).startswith("AR-1 (closed)")
        assert await s.service.reviews.run_due() == "nothing due"
        s.clock.advance(days=200)
        assert (await s.service.reviews.run_due()).startswith("AR-2 ")


async def test_the_review_job_twice_at_once_starts_reminds_and_closes_once(h: Harness) -> None:
    """Two replicas (or a doubled trigger) running the pass together: the open-review marker
    and the review row's lock keep each step single."""
    async with workflow_harness(
        h.engine,
        h.tenant,
        h.m365,
        reviews={"every_months": 6, "reminder_days": 7, "window_days": 14},
    ) as s:
        await enroll(s, "avery", "sasha")
        await asyncio.gather(s.service.reviews.run_due(), s.service.reviews.run_due())
        assert len(await s.service.reviews.summaries()) == 1
        casey = s.person("casey").id.lower()
        assert len(s.notifier.to(f"user:{casey}", NotificationKind.REVIEW_REQUESTED)) == 1
        s.clock.advance(days=7)
        await asyncio.gather(s.service.reviews.run_due(), s.service.reviews.run_due())
        assert len(s.notifier.to(f"user:{casey}", NotificationKind.REVIEW_REMINDER)) == 1
        s.clock.advance(days=7)
        await asyncio.gather(s.service.reviews.run_due(), s.service.reviews.run_due())
        [summary] = await s.service.reviews.summaries()
        assert summary.closed_at is not None and summary.kept == 2
        assert len(s.notifier.to("channel:it", NotificationKind.REVIEW_CLOSED)) == 1
