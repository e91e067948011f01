"""Scheduling systems (where a person's appointments come from), behind one interface."""
