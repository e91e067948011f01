"""A first look at an incoming activity, before the SDK sees it.

The SDK answers malformed bodies with a 500 and a logged traceback. Checking the few fields every
activity must have lets us answer the sender with a 400 that says what is wrong instead.

Lengths are not checked here. Microsoft publishes no maximum length for conversation or activity
ids, so a bound of ours could refuse an activity Teams really sends; an id too long for the
database is simply not stored (``bot.conversations``), and a reply whose URL the connector will
not take is a warning, not a failed turn (``bot.teams_endpoint._send``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit


def parsed_activity(raw: bytes) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """The activity in ``raw``, parsed once for every check after this one, or why it is not
    a usable Bot Framework activity."""
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "the body is not JSON"
    if not isinstance(body, dict):
        return None, "the body must be a JSON object (a Bot Framework activity)"
    if not isinstance(body.get("type"), str) or not body["type"]:
        return None, "the activity has no 'type'"
    for party in ("conversation", "from", "recipient"):
        if not _has_id(body.get(party)):
            return None, f"the activity has no '{party}.id'"
    service_url = body.get("serviceUrl")
    if not isinstance(service_url, str) or not _is_http_url(service_url):
        return None, "the activity has no valid 'serviceUrl' (an http or https URL)"
    return body, None


def _has_id(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), str) and bool(value["id"])


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
