"""The clients the Agents SDK gives each turn: only what Syncwarden uses, and only when used."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

from microsoft_agents.hosting.core import (
    ConnectorClientBase,
    RestChannelServiceClientFactory,
    TurnContext,
    UserTokenClient,
)
from microsoft_agents.hosting.core.authorization import ClaimsIdentity
from microsoft_agents.hosting.core.connector.attachments_base import AttachmentsBase
from microsoft_agents.hosting.core.connector.conversations_base import ConversationsBase


class UserTokensUnusedError(RuntimeError):
    """Syncwarden signs nobody in: no OAuth connection, no user tokens."""


class _NoUserTokens(UserTokenClient):
    """The user token client of every turn: Syncwarden never asks for a user's token (no
    sign-in card, no SSO), so any use of it is a programming error said plainly. Every method
    is replaced, so the parent's HTTP session is never made."""

    def __init__(self) -> None:  # no super().__init__: that opens an aiohttp session
        pass

    def _unused(self) -> UserTokensUnusedError:
        return UserTokensUnusedError("Syncwarden does not sign users in; no user tokens exist")

    @property
    def agent_sign_in(self) -> Any:
        raise self._unused()

    @property
    def user_token(self) -> Any:
        raise self._unused()

    async def get_user_token(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def get_sign_in_resource(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def sign_out_user(self, *args: Any, **kwargs: Any) -> None:
        raise self._unused()

    async def get_token_status(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def get_aad_tokens(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def exchange_token(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def get_token_or_sign_in_resource(self, *args: Any, **kwargs: Any) -> Any:
        raise self._unused()

    async def close(self) -> None:
        return None


NO_USER_TOKENS = _NoUserTokens()


class ConnectorOnlyClients(RestChannelServiceClientFactory):
    """The SDK's client factory, trimmed to what a turn uses.

    The SDK builds two clients for every turn before the agent runs. The user token client is
    for OAuth sign-in, which Syncwarden does not use, yet building it costs a token lookup for
    the token service (a call to the login service when the cached token has expired, in the
    turn's own time), an aiohttp session opened and closed, and a package-metadata read for its
    User-Agent: about a tenth of an approve click's CPU. The connector client costs the same
    again and most turns never use it: a card click is answered in the invoke's HTTP response.
    So a turn gets no user token client, and a connector client that the SDK builds, exactly as
    before, on the turn's first reply (:class:`DeferredConnectorClient`).
    """

    async def create_user_token_client(
        self, context: TurnContext, claims_identity: ClaimsIdentity, use_anonymous: bool = False
    ) -> UserTokenClient:
        return NO_USER_TOKENS

    async def create_connector_client(
        self,
        context: TurnContext | None,
        claims_identity: ClaimsIdentity,
        service_url: str,
        audience: str,
        scopes: list[str] | None = None,
        use_anonymous: bool = False,
    ) -> ConnectorClientBase:
        build = functools.partial(
            RestChannelServiceClientFactory.create_connector_client,
            self,
            context,
            claims_identity,
            service_url,
            audience,
            scopes,
            use_anonymous,
        )
        return DeferredConnectorClient(service_url, build)


class DeferredConnectorClient:
    """A turn's connector client, built by the SDK on the first call that goes out.

    The SDK reaches its connector client only as ``client.conversations.<operation>(...)`` or
    ``client.attachments.<operation>(...)``, awaited (``ChannelServiceAdapter``'s send, update
    and delete), so those two are stand-ins whose every operation first builds the real client
    (its token and its aiohttp session) and then calls it. A turn that sends nothing builds
    nothing and has nothing to close.
    """

    def __init__(
        self, service_url: str, build: Callable[[], Awaitable[ConnectorClientBase]]
    ) -> None:
        self._service_url = service_url
        self._build = build
        self._built: asyncio.Task[ConnectorClientBase] | None = None

    @property
    def base_uri(self) -> str:
        return self._service_url if self._service_url.endswith("/") else self._service_url + "/"

    @property
    def conversations(self) -> ConversationsBase:
        return cast(ConversationsBase, _DeferredOperations(self, "conversations"))

    @property
    def attachments(self) -> AttachmentsBase:
        return cast(AttachmentsBase, _DeferredOperations(self, "attachments"))

    async def client(self) -> ConnectorClientBase:
        """The real client, built once however many replies of the turn ask at once."""
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        return await asyncio.shield(self._built)

    async def close(self) -> None:
        built = self._built
        if built is None:
            return
        if built.done() and (built.cancelled() or built.exception() is not None):
            return  # raised to the send that asked for it: nothing was opened, nothing to close
        client = await built
        await client.close()


class _DeferredOperations:
    """``conversations`` or ``attachments`` of a :class:`DeferredConnectorClient`."""

    def __init__(self, owner: DeferredConnectorClient, group: str) -> None:
        self._owner = owner
        self._group = group

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            client = await self._owner.client()
            return await getattr(getattr(client, self._group), operation)(*args, **kwargs)

        call.__name__ = operation
        return call
