"""What the bot says, kept apart from the SDK glue so the wording can change on its own."""

from __future__ import annotations

HELP_TEXT = (
    "Hi, I'm Syncwarden. I look after access to calendar sync.\n\n"
    "You can say:\n"
    "- **add me to calendar sync**: ask for your appointments to appear in Outlook\n"
    "- **remove me from calendar sync**: stop syncing your calendar\n"
    "- **status**: see where your request or your sync stands\n"
    "- **help**: show this message"
)
