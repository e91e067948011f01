"""The set-up instructions a person receives when their calendar sync is ready.

The text is a Markdown template with ``$placeholders`` (``string.Template``: a stray ``{`` or ``%``
in an organisation's own text cannot break it). Organisations point
``provisioning.instructions_template`` at their own file; the default below is ours.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from syncwarden.workflows.ports import TicketView

DEFAULT_TEMPLATE = """\
**Your calendar sync is ready, $first_name.**

From now on your scheduling-system appointments appear in the Outlook calendar of **$mailbox**,
usually within a few minutes of being booked or changed. Times you mark as busy in Outlook are
sent back, so nobody is booked over them.

What to know:
- Synced appointments are owned by the scheduling system. Change or cancel them there; edits
  made in Outlook are put back at the next sync.
- The appointment titles leave out client names, for privacy. Open the appointment in the
  scheduling system for the details.
- If a colleague manages your calendar, give them delegate access in Outlook as usual; the
  synced appointments are part of your calendar.
$help_line
Reference: $ticket. To stop syncing, message me **remove me from calendar sync**.
"""


class InstructionsTemplate:
    def __init__(self, path: Path | None = None, help_article_url: str | None = None) -> None:
        self._template = Template(path.read_text() if path else DEFAULT_TEMPLATE)
        self._help_url = help_article_url

    def render(self, ticket: TicketView) -> str:
        help_line = (
            f"\nMore help: [calendar sync guide]({self._help_url})\n" if self._help_url else ""
        )
        return self._template.safe_substitute(
            first_name=ticket.subject.name.split(" ")[0] if ticket.subject.name else "",
            name=ticket.subject.name,
            mailbox=ticket.mailbox,
            profile=ticket.profile_name or ticket.profile_id or "",
            ticket=ticket.ref,
            help_url=self._help_url or "",
            help_line=help_line,
        )
