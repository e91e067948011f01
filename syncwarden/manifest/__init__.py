"""The Teams app package's template, icons and Microsoft's manifest schema (package data)."""
