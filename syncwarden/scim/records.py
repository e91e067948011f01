"""The SCIM resources Entra ID provisioned, and the secret tokens it may present.

A ``scim_users`` row is the identity provider's word about one person (what it sent, whether
active) and the directory object id it resolved to; the enrollment itself stays in the
workflow's tables, reached through tickets. Tokens are stored only as SHA-256 digests: a token is
32 random bytes, so a digest cannot be reversed by guessing, and a leaked table grants nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, utc_now


class ScimUser(Base):
    __tablename__ = "scim_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # userName is unique case-insensitively (RFC 7643 §4.1.1: caseExact false).
    user_name_key: Mapped[str] = mapped_column(String(320), unique=True)
    user_name: Mapped[str] = mapped_column(String(320))
    external_id: Mapped[str | None] = mapped_column(String(320), index=True)
    active: Mapped[bool] = mapped_column(Boolean, index=True)
    directory_id: Mapped[str | None] = mapped_column(String(64), index=True)
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class ScimToken(Base):
    __tablename__ = "scim_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
