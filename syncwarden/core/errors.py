"""Error types every room shares.

A ``SyncwardenError`` carries a message written for a person: the CLI and the bot show it as is,
so it must say what went wrong and what to do, never hold a stack trace or a secret.
"""

from __future__ import annotations


class SyncwardenError(Exception):
    """Base for errors whose message is safe and useful to show to a user or an operator."""


class ConfigurationError(SyncwardenError):
    """The configuration cannot work; ``problems`` lists each reason in one sentence."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) or "invalid configuration")
