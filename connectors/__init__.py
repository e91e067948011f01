"""The outside world (Microsoft Graph, Exchange Online, scheduling systems) behind small interfaces."""
