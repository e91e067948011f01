"""Alembic migrations, shipped inside the distribution so `syncwarden migrate` works anywhere."""
