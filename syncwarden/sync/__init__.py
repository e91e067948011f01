"""Scheduled work: calendar sync, access reconciliation, credential-expiry watch."""
