"""Time-bound access, the rules only: which end dates a request may ask for.

A person picks a *last day* (a date, as the request card's date field gives it); access ends at
the midnight after it, in UTC. With a policy maximum (``ACCESS__MAX_DAYS``) every grant ends at
most that many days after the request, and a request without an end date gets the maximum;
without one, an end date is optional.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from syncwarden.workflows.results import RequestProblem


def end_of(day: date) -> datetime:
    """When access whose last day is ``day`` ends: the following midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=UTC)


def latest_day(now: datetime, max_days: int | None) -> date | None:
    """The last day a request made ``now`` may ask for (None: no limit)."""
    return None if max_days is None else (now + timedelta(days=max_days)).date()


def granted_until(
    wanted: date | None, *, now: datetime, max_days: int | None
) -> tuple[datetime | None, RequestProblem | None]:
    """When access asked for ``now`` with last day ``wanted`` ends, or what is wrong with it."""
    latest = latest_day(now, max_days)
    if wanted is None:
        return (end_of(latest) if latest else None), None
    if wanted <= now.date():
        return None, RequestProblem("until", "the last day must be after today")
    if latest is not None and wanted > latest:
        return None, RequestProblem(
            "until",
            f"access can be granted for at most {max_days} days: "
            f"the last day can be {latest.strftime('%d %b %Y')} at the latest",
        )
    return end_of(wanted), None


def parse_day(value: object) -> date | RequestProblem | None:
    """A date from card data (``YYYY-MM-DD``); None for empty; a problem for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value.strip()) != 10:
        return RequestProblem("until", "the last day must be a date like 2027-03-31")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return RequestProblem("until", "the last day must be a date like 2027-03-31")
