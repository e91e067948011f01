"""What the bot says before it knows who is asking (a new install, an unconfigured service).

Once it knows, the dialogue gives each person their own help (:func:`bot.commands.help_text`).
"""

from __future__ import annotations

from syncwarden.bot.commands import help_text

HELP_TEXT = help_text(it_admin=False)
