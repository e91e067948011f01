"""The set-up instructions: the default text and an organisation's own template."""

from __future__ import annotations

from pathlib import Path

from syncwarden.workflows.instructions import InstructionsTemplate
from tests.support.tickets import sample_ticket

TICKET = sample_ticket()


def test_default_names_the_mailbox_the_ticket_and_the_help_link() -> None:
    text = InstructionsTemplate(help_article_url="https://intranet.example.edu/help/sync").render(
        TICKET
    )
    assert "Ada" in text and "**ada@example.edu**" in text and "SW-1042" in text
    assert "(https://intranet.example.edu/help/sync)" in text
    assert "$" not in text


def test_without_a_help_link_no_empty_link_is_left() -> None:
    assert "More help" not in InstructionsTemplate().render(TICKET)


def test_an_organisation_template_with_stray_braces_and_unknown_names(tmp_path: Path) -> None:
    template = tmp_path / "instructions.md"
    template.write_text("Hi $first_name, {not a field} 100% ready: $mailbox ($ticket) $unknown")
    text = InstructionsTemplate(template).render(TICKET)
    assert text == "Hi Ada, {not a field} 100% ready: ada@example.edu (SW-1042) $unknown"
