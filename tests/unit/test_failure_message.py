"""How a failed step's error is worded for the ticket and the IT channel."""

from __future__ import annotations

from syncwarden.connectors.errors import PermissionMissingError
from syncwarden.connectors.exchange.client import MEMBERSHIP_ROLE
from syncwarden.connectors.groups import (
    EXCHANGE_APP_PERMISSION,
    EXCHANGE_WRITE_HINT,
    MembershipRefusedError,
)
from syncwarden.workflows.runner import failure_message


def test_a_refusal_that_names_an_exchange_permission_and_role_is_not_called_a_graph_one() -> None:
    """The group write names two grants made in two places (the app registration, Exchange's
    admin roles); the connector's message already says both, so nothing is prefixed to it."""
    error = MembershipRefusedError(
        f"changing the sync group's membership was refused: {EXCHANGE_WRITE_HINT} (Forbidden)",
        permission=f"{EXCHANGE_APP_PERMISSION} and {MEMBERSHIP_ROLE}",
    )
    said = failure_message(error)
    assert "Microsoft Graph application permission" not in said
    assert said.startswith("changing the sync group's membership was refused")
    assert said.endswith("once it is granted, press Retry")


def test_a_missing_graph_permission_is_named_with_where_to_grant_it() -> None:
    error = PermissionMissingError("Access is denied", permission="Calendars.ReadWrite")
    said = failure_message(error)
    assert "the Microsoft Graph application permission Calendars.ReadWrite" in said
    assert "grant admin consent" in said
