"""``syncwarden scim token new|revoke|list``: the secret tokens Entra ID provisions with.

A new token is printed once, to paste into Entra ID's "Secret Token" field; only its digest is
kept. Two may be valid at once, so rotation is: ``new``, paste it into Entra ID, ``Test
Connection``, then ``revoke`` the old number (a third ``new`` revokes the oldest by itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer
from sqlalchemy.exc import SQLAlchemyError

from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.settings import Settings
from syncwarden.migrate import upgrade_to_head
from syncwarden.scim.tokens import NewToken, ScimTokens, TokenInfo

_DATABASE_FAILURES = (OSError, SQLAlchemyError, asyncpg.PostgresError)
T = TypeVar("T")


def build_scim_app(
    load: Callable[[], Settings],
    database_unreachable: Callable[[Settings, BaseException], NoReturn],
) -> typer.Typer:
    """The ``scim`` command group, with the CLI's own settings loading and database errors."""
    scim_app = typer.Typer(help="Provisioning from Entra ID over SCIM.", no_args_is_help=True)
    token_app = typer.Typer(
        help="The secret tokens Entra ID presents to /scim/v2.", no_args_is_help=True
    )
    scim_app.add_typer(token_app, name="token")

    def with_tokens(settings: Settings, work: Callable[[ScimTokens], Coroutine[Any, Any, T]]) -> T:
        async def run() -> T:
            engine = create_engine(settings.database.url.get_secret_value())
            try:
                await upgrade_to_head(engine)
                return await work(ScimTokens(session_factory(engine)))
            finally:
                await engine.dispose()

        try:
            return asyncio.run(run())
        except _DATABASE_FAILURES as error:
            database_unreachable(settings, error)

    @token_app.command("new")
    def token_new() -> None:
        """Make a token and print it once; the two newest tokens stay valid."""
        settings = load()
        made: NewToken = with_tokens(settings, lambda tokens: tokens.new())
        typer.echo(made.secret)
        typer.echo(
            f"Token {made.id} made. Paste it into Entra ID (Provisioning > Admin Credentials > "
            "Secret Token); it is not shown again.",
            err=True,
        )
        for revoked in made.revoked:
            typer.echo(f"Token {revoked} revoked: at most two are valid at once.", err=True)
        if not settings.scim.enabled:
            typer.echo(
                "SCIM is off: set SYNCWARDEN_SCIM__ENABLED=true to serve /scim/v2.", err=True
            )

    @token_app.command("revoke")
    def token_revoke(
        token_id: Annotated[int, typer.Argument(help="The token's number, as `list` shows it.")],
    ) -> None:
        """Revoke a token at once: Entra ID's next request with it is refused (401)."""
        settings = load()
        done: bool = with_tokens(settings, lambda tokens: tokens.revoke(token_id))
        if not done:
            typer.echo(
                f"No valid token {token_id}; `syncwarden scim token list` shows them.", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"Token {token_id} revoked.")

    @token_app.command("list")
    def token_list() -> None:
        """Every token by number, when made, and whether revoked (never the token itself)."""
        settings = load()
        rows: list[TokenInfo] = with_tokens(settings, lambda tokens: tokens.listing())
        if not rows:
            typer.echo("No tokens yet: `syncwarden scim token new` makes one.")
        for row in rows:
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "valid"
            typer.echo(f"{row.id}  made {row.created_at:%Y-%m-%d %H:%M} UTC  {state}")

    return scim_app
