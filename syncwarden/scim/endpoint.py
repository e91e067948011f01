"""``/scim/v2``: the guard in front of scim2-server, and the glue between it and aiohttp.

Every request, in this order: over HTTPS in production (directly, or as the reverse proxy's
``X-Forwarded-Proto`` says: production listens behind one), within its address's rate, within
the body limit, with a valid bearer token, within that token's rate; then scim2-server serves
it over :class:`ScimUserStorage`. Each answer, refusals
included, leaves one audit row (method, path, status, which token by its number; never the
token). Only Users are served: access to calendar sync is one group, and Entra ID's assignment
of the app already is that allow-list, so a Groups endpoint would add a second way to say the
same thing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from scim2_models import (
    Bulk,
    ChangePassword,
    EnterpriseUser,
    ETag,
    Filter,
    Patch,
    ResourceType,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_server.applications.base import BaseApplication
from scim2_server.handler import AsyncScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import SCIM_MEDIA_TYPE, ScimResponse
from scim2_server.service import ScimService
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.logging import get_logger
from syncwarden.core.settings import ScimSettings
from syncwarden.scim.storage import ScimUserStorage
from syncwarden.scim.tokens import ScimTokens
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.provisioning import ProvisioningIntake

log = get_logger(__name__)

PREFIX = "/scim/v2"
MAX_RESULTS = 200
_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def scim_provider() -> ScimProvider:
    """Users with the enterprise extension (Entra ID sends it); PATCH and filters, nothing else."""
    config = ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
    )
    return ScimProvider(
        [User, EnterpriseUser],
        resource_types=[ResourceType.from_resource(User[EnterpriseUser])],
        config=config,
    )


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, as a burst or spread out."""

    def __init__(self, per_minute: int, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(per_minute)
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, client: str) -> float:
        """0 when admitted; otherwise the seconds until the client may try again."""
        now = self._monotonic()
        tokens, since = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - since) * self._rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self._rate
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget the oldest clients rather than grow forever
            for key in list(self._buckets)[:1000]:
                del self._buckets[key]
        return 0.0


@dataclass
class _Answer:
    response: ScimResponse
    token_id: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class ScimEndpoint:
    def __init__(
        self,
        settings: ScimSettings,
        sessions: async_sessionmaker[AsyncSession],
        intake: ProvisioningIntake,
        *,
        https_only: bool,
        public_host: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        # Behind a reverse proxy the request's own host is the internal one; the Location of a
        # created User must be the address Entra ID reaches.
        self._public_base = f"https://{public_host}{PREFIX}" if public_host else None
        self._sessions = sessions
        self._tokens = ScimTokens(sessions)
        self._https_only = https_only
        self._limiter = RateLimiter(settings.requests_per_minute, monotonic=monotonic)
        provider = scim_provider()
        service = ScimService(provider)
        [resource_type] = provider.resource_types
        storage = ScimUserStorage(
            sessions, service.get_model(resource_type), intake, pilot_cap=settings.pilot_cap
        )
        self._application = BaseApplication(provider, service)
        self._handler = AsyncScimHandler(service, storage)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", PREFIX, self.handle)
        app.router.add_route("*", PREFIX + "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        answer = await self._answer(request)
        await self._audit(request, answer)
        response = answer.response
        body = b"" if response.body is None else json.dumps(response.body).encode()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        return web.Response(
            status=int(response.status),
            body=body or None,
            headers=headers,
            content_type=SCIM_MEDIA_TYPE if body else None,
        )

    async def _answer(self, request: web.Request) -> _Answer:
        if self._https_only and _scheme(request) != "https":
            return _Answer(_error(HTTPStatus.FORBIDDEN, "SCIM is served over HTTPS only"))
        header = request.headers.get("Authorization", "")
        # Per address before the token is checked (a stream of guessed tokens is one client),
        # then per token (Entra ID's service calls from many addresses with one token).
        refused = self._refused(f"address:{request.remote}")
        if refused is not None:
            return _Answer(refused)
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _Answer(
                _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are {limit} bytes at most")
            )
        body = await request.read()
        if len(body) > limit:
            return _Answer(
                _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are {limit} bytes at most")
            )
        token_id = await self._authenticate(header)
        if token_id is None:
            answer = _error(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="syncwarden-scim"'
            return _Answer(answer)
        refused = self._refused(f"token:{token_id}")
        if refused is not None:
            return _Answer(refused, token_id)
        scim_request = ScimRequest(
            method=request.method,
            base_url=self._public_base or f"{_scheme(request)}://{request.host}{PREFIX}",
            path=BaseApplication.split_path(request.path.removeprefix("/scim")) or "/",
            query=dict(request.query),
            headers=list(request.headers.items()),
            body=body,
        )
        try:
            response = await self._handler.handle(scim_request)
        except Exception as error:
            response = self._application.handle_exception(scim_request, error)
        response = self._application.finalize_response(scim_request, response)
        return _Answer(response, token_id)

    def _refused(self, client: str) -> ScimResponse | None:
        wait = self._limiter.admit(client)
        if not wait:
            return None
        answer = _error(HTTPStatus.TOO_MANY_REQUESTS, "too many requests; slow down")
        answer.headers["Retry-After"] = str(max(1, round(wait)))
        return answer

    async def _authenticate(self, header: str) -> int | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await self._tokens.verify(token.strip())

    async def _audit(self, request: web.Request, answer: _Answer) -> None:
        """One row per call: who (token number), what (method, path, filter), the status."""
        after: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": int(answer.response.status),
        }
        if "filter" in request.query:
            after["filter"] = request.query["filter"][:500]
        body = answer.response.body
        if int(answer.response.status) >= 400 and isinstance(body, dict):
            after["detail"] = str(body.get("detail", ""))[:500]
        actor = (
            f"scim-token:{answer.token_id}"
            if answer.token_id is not None
            else "scim:unauthenticated"
        )
        try:
            async with self._sessions() as session, session.begin():
                record_audit(session, actor=actor, action="scim.request", after=after)
        except Exception as error:  # the answer stands; the log line says the audit failed
            log.error("scim.audit_failed", error_type=type(error).__name__, **after)


def _scheme(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded or request.scheme


def _error(status: HTTPStatus, detail: str) -> ScimResponse:
    return ScimResponse(
        status, {"schemas": [_ERROR_SCHEMA], "status": str(int(status)), "detail": detail}
    )
