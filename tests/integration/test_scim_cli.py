"""``syncwarden scim token new|revoke|list`` as real processes, on the same database file."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from sqlalchemy import select

from syncwarden.core.db import create_engine, session_factory
from syncwarden.scim.records import ScimToken
from syncwarden.scim.tokens import ScimTokens
from tests.integration.test_cli import run


def stored_digests(url: str) -> list[str]:
    async def go() -> list[str]:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                return list((await session.scalars(select(ScimToken.digest))).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def verified(url: str, token: str) -> int | None:
    async def go() -> int | None:
        engine = create_engine(url)
        try:
            return await ScimTokens(session_factory(engine)).verify(token)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_tokens_are_made_listed_rotated_and_revoked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/sw.db"
    made = []
    for _ in range(3):
        result = run("scim", "token", "new", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
        assert result.returncode == 0, result.stderr
        made.append(result.stdout.strip())
        assert "it is not shown again" in result.stderr
    assert all(token.startswith("swscim_") and len(token) > 40 for token in made)
    assert "Token 1 revoked: at most two are valid at once." in result.stderr
    assert "SYNCWARDEN_SCIM__ENABLED=true" in result.stderr
    # Only digests are stored, never a token.
    digests = stored_digests(url)
    assert sorted(digests) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in made)
    assert [verified(url, t) for t in made] == [None, 2, 3]

    listing = run("scim", "token", "list", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "revoked" in lines[0] and lines[1].endswith("valid") and lines[2].endswith("valid")
    assert not any(token in listing.stdout for token in made)

    revoked = run("scim", "token", "revoke", "2", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "Token 2 revoked.")
    assert verified(url, made[1]) is None
    again = run("scim", "token", "revoke", "2", cwd=tmp_path, SYNCWARDEN_DATABASE__URL=url)
    assert again.returncode == 1
    assert "No valid token 2" in again.stderr
