"""The secret tokens Entra ID presents (its "Secret Token" field): made, checked, revoked.

Only a SHA-256 digest of each token is stored. A presented token is checked against every valid
digest with :func:`hmac.compare_digest`, all of them every time, so the answer takes as long
whether the token is right, wrong or half right. Two tokens may be valid at once, so a new one
can be given to Entra ID before the old one is revoked (rotation without a gap); making a third
revokes the oldest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now
from syncwarden.scim.records import ScimToken

MAX_VALID_TOKENS = 2
TOKEN_PREFIX = "swscim_"  # noqa: S105  (a label that says what a token is for, not a secret)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    id: int
    secret: str
    revoked: tuple[int, ...]


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ScimTokens:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def new(self) -> NewToken:
        """A new valid token (shown once); the oldest is revoked when two were already valid."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._sessions() as session, session.begin():
            valid = list(
                (
                    await session.scalars(
                        select(ScimToken)
                        .where(ScimToken.revoked_at.is_(None))
                        .order_by(ScimToken.id)
                        .with_for_update()
                    )
                ).all()
            )
            revoked = valid[: max(0, len(valid) - (MAX_VALID_TOKENS - 1))]
            now = utc_now()
            for token in revoked:
                token.revoked_at = now
            row = ScimToken(digest=digest_of(secret), created_at=now)
            session.add(row)
            await session.flush()
            return NewToken(row.id, secret, tuple(t.id for t in revoked))

    async def revoke(self, token_id: int) -> bool:
        """Revoke one token by its number; False when there is no such valid token."""
        async with self._sessions() as session, session.begin():
            row = await session.get(ScimToken, token_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utc_now()
            return True

    async def listing(self) -> list[TokenInfo]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(ScimToken).order_by(ScimToken.id))).all()
            return [TokenInfo(r.id, r.created_at, r.revoked_at) for r in rows]

    async def verify(self, presented: str) -> int | None:
        """The number of the valid token ``presented`` is, or None; constant time per digest."""
        wanted = digest_of(presented).encode()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(ScimToken.id, ScimToken.digest).where(ScimToken.revoked_at.is_(None))
                )
            ).all()
        found: int | None = None
        for token_id, digest in rows:
            if hmac.compare_digest(wanted, digest.encode()):
                found = token_id
        return found
