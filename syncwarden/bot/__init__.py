"""The Teams surface: the Bot Framework endpoint, commands, cards and proactive sends."""
