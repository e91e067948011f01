"""The outside world (Graph, Exchange Online, scheduling systems) behind small interfaces."""
