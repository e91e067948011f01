"""Plumbing shared by every room: settings, database, logging, errors. Imports nothing of ours."""
