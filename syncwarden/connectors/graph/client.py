"""The Microsoft Graph HTTP client: authentication, retries, limits, paging, delta and ``$batch``.

Every Graph call in Syncwarden goes through :meth:`GraphClient.request`, which is where the rules
live: a bearer token from the token provider (refreshed once on 401), a fresh
``client-request-id`` per attempt, at most 4 requests in flight per mailbox and a global cap,
``Retry-After`` honoured, exponential backoff with jitter on 429/503/504, timeouts and dropped
connections, and no automatic repeat of a non-idempotent POST unless the caller says it is safe.
Links the service hands back (``@odata.nextLink``, ``@odata.deltaLink``) are followed only when they
point at the configured Graph host, so our token never goes anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind

from syncwarden.connectors.errors import (
    ConnectorError,
    MailboxAccessDeniedError,
    PermissionMissingError,
    RequestInfo,
    TransientError,
)
from syncwarden.connectors.graph.error_mapping import error_from_response
from syncwarden.connectors.graph.paths import segment
from syncwarden.connectors.http import request_timeout
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.ports import TokenProvider
from syncwarden.connectors.retry import RetryPolicy, Sleep, call_with_retries
from syncwarden.connectors.tokens import granted_roles
from syncwarden.core.logging import get_logger
from syncwarden.core.tracing import tracer

BATCH_LIMIT = 20
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
_RETRYABLE_ITEM_STATUSES = frozenset({429, 503, 504})
_FAILED_DEPENDENCY = 424

log = get_logger(__name__)


@dataclass(frozen=True)
class GraphResponse:
    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True)
class DeltaResult:
    """One full delta round: every changed item across pages, and the link for the next round."""

    items: list[dict[str, Any]]
    delta_link: str
    requests: int


@dataclass(frozen=True)
class BatchRequest:
    id: str
    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] | None = None
    depends_on: Sequence[str] | None = None

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers = dict(self.headers or {})
        if self.body is not None:
            item["body"] = self.body
            headers.setdefault("Content-Type", "application/json")
        if headers:
            item["headers"] = headers
        if self.depends_on:
            item["dependsOn"] = list(self.depends_on)
        return item


@dataclass
class BatchResult:
    id: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: ConnectorError | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class GraphClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        scope: str,
        limiter: ConcurrencyLimiter,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._http = http
        self._timeout = request_timeout(timeout_seconds)
        self._tokens = tokens
        self.base_url = base_url.rstrip("/")
        self._base = urlsplit(self.base_url)
        self._scope = scope
        self._limiter = limiter
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def url_for(self, path_or_url: str) -> str:
        """An absolute URL on the Graph host; refuses links that lead anywhere else."""
        if path_or_url.startswith(("https://", "http://")):
            target = urlsplit(path_or_url)
            if (target.scheme, target.netloc) != (self._base.scheme, self._base.netloc):
                raise ValueError(f"refusing to send the Graph token to {target.netloc}")
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def directory_object_url(self, object_id: str) -> str:
        return f"{self.base_url}/directoryObjects/{segment(object_id)}"

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
        idempotent: bool | None = None,
        whole_mailbox: bool = False,
    ) -> GraphResponse:
        """Send one Graph request with retries; raise the mapped error when it finally fails.

        ``whole_mailbox`` holds all of the mailbox's concurrency slots (a ``$batch`` to it).
        """
        method = method.upper()
        safe_to_repeat = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        url = self.url_for(path_or_url)
        info = RequestInfo(method, url.split("?", 1)[0])
        return await call_with_retries(
            lambda: self._send_once(
                method, url, params, json_body, headers, mailbox, info, whole_mailbox
            ),
            policy=self._retry,
            idempotent=safe_to_repeat,
            on_unauthorized=lambda: self._tokens.invalidate(self._scope),
            sleep=self._sleep,
            label=f"{method} {info.url}",
        )

    async def _send_once(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        mailbox: str | None,
        info: RequestInfo,
        whole_mailbox: bool = False,
    ) -> GraphResponse:
        token = await self._tokens.get_token(self._scope)
        request_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "client-request-id": str(uuid.uuid4()),
            **(headers or {}),
        }
        content = None
        if json_body is not None:
            content = json.dumps(json_body).encode()
            request_headers["Content-Type"] = "application/json"
        async with self._limiter.slot(mailbox, exclusive=whole_mailbox):
            with tracer.start_as_current_span(
                f"graph {method}",
                kind=SpanKind.CLIENT,
                attributes={"http.request.method": method, "url.path": urlsplit(url).path},
            ) as span:
                try:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        content=content,
                        headers=request_headers,
                        timeout=self._timeout,
                    )
                except httpx.TimeoutException:
                    raise TransientError("Graph did not answer in time", request=info) from None
                except httpx.TransportError as error:
                    raise TransientError(
                        f"the connection to Graph failed ({type(error).__name__})", request=info
                    ) from None
                span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 400:
            raise _in_light_of(
                error_from_response(response.status_code, response.headers, response.content, info),
                token,
            )
        return GraphResponse(response.status_code, response.headers, _json_or_none(response))

    async def get(self, path_or_url: str, **options: Any) -> Any:
        return (await self.request("GET", path_or_url, **options)).body

    async def pages(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's ``value`` while following ``@odata.nextLink``."""
        next_url: str | None = path_or_url
        next_params = params
        while next_url:
            body = await self.get(next_url, params=next_params, headers=headers, mailbox=mailbox)
            yield list(body.get("value", []))
            next_url = body.get("@odata.nextLink")
            next_params = None  # the next link already carries every query option

    async def collect(self, path_or_url: str, **options: Any) -> list[dict[str, Any]]:
        return [item async for page in self.pages(path_or_url, **options) for item in page]

    async def delta(
        self,
        path_or_link: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> DeltaResult:
        """Run one delta round: follow next links until the service hands out a delta link."""
        items: list[dict[str, Any]] = []
        url: str | None = path_or_link
        query = params
        requests = 0
        while url:
            body = await self.get(url, params=query, headers=headers, mailbox=mailbox)
            requests += 1
            items.extend(body.get("value", []))
            query = None
            if "@odata.deltaLink" in body:
                return DeltaResult(items, body["@odata.deltaLink"], requests)
            url = body.get("@odata.nextLink")
        raise TransientError("the delta round ended without a delta link")

    async def batch(
        self,
        requests: Sequence[BatchRequest],
        *,
        mailbox: str | None = None,
        idempotent: bool = False,
    ) -> list[BatchResult]:
        """Send requests in ``$batch`` calls of up to 20, retrying throttled items by themselves.

        Results come back in the order of ``requests``. An item that still fails after the last
        attempt carries its mapped error in ``error``; the batch itself raises only when the
        ``$batch`` call fails as a whole.

        Requests are sent unordered: Graph refuses any ``dependsOn`` graph that is neither fully
        parallel nor fully sequential, and it runs at most four requests of an unordered batch
        against Outlook at a time, which is the per-mailbox limit. For the same reason a batch
        to one mailbox holds every one of that mailbox's slots in our limiter while it runs, so
        none of our other requests to the mailbox can make a fifth.
        """
        results: dict[str, BatchResult] = {}
        for start in range(0, len(requests), BATCH_LIMIT):
            chunk = list(requests[start : start + BATCH_LIMIT])
            results.update(await self._batch_chunk(chunk, mailbox=mailbox, idempotent=idempotent))
        return [results[item.id] for item in requests]

    async def _batch_chunk(
        self, chunk: list[BatchRequest], *, mailbox: str | None, idempotent: bool
    ) -> dict[str, BatchResult]:
        results: dict[str, BatchResult] = {}
        pending = chunk
        attempt = 0
        while pending:
            attempt += 1
            response = await self.request(
                "POST",
                "$batch",
                json_body={"requests": [item.as_json() for item in pending]},
                mailbox=mailbox,
                idempotent=idempotent,
                whole_mailbox=True,
            )
            by_id = {item.id: item for item in pending}
            answered = {str(r.get("id")): r for r in (response.body or {}).get("responses", [])}
            retry: list[BatchRequest] = []
            waits: list[float] = []
            token = await self._tokens.get_token(self._scope)  # the one the batch went with
            for item in pending:
                result = self._batch_result(item, answered.get(item.id))
                if result.error is not None:
                    result.error = _in_light_of(result.error, token)
                results[item.id] = result
                may_retry = attempt < self._retry.max_attempts
                if result.status == _FAILED_DEPENDENCY and may_retry:
                    retry.append(item)
                    waits.append(0.0)
                elif result.status in _RETRYABLE_ITEM_STATUSES and may_retry:
                    retry.append(item)
                    assert result.error is not None
                    waits.append(self._retry.delay(result.error, attempt))
            retry_ids = {item.id for item in retry}
            pending = [
                BatchRequest(
                    i.id,
                    i.method,
                    i.url,
                    i.body,
                    i.headers,
                    [d for d in (i.depends_on or []) if d in retry_ids] or None,
                )
                for i in retry
                if i.id in by_id
            ]
            if pending:
                wait = max(waits)
                log.info(
                    "graph.batch_retry",
                    items=len(pending),
                    attempt=attempt,
                    wait_seconds=round(wait, 3),
                )
                await self._sleep(wait)
        return results

    def _batch_result(self, item: BatchRequest, answer: Mapping[str, Any] | None) -> BatchResult:
        info = RequestInfo(item.method, self.url_for(item.url).split("?", 1)[0])
        if answer is None:
            missing = TransientError(
                "the batch response has no answer for this request", request=info
            )
            return BatchResult(item.id, 503, error=missing)
        status = int(answer.get("status", 500))
        headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
        body = answer.get("body")
        if 200 <= status < 300:
            return BatchResult(item.id, status, headers, body)
        raw = json.dumps(body).encode() if body is not None else b""
        error = error_from_response(status, httpx.Headers(headers), raw, info)
        return BatchResult(item.id, status, headers, body, error)


def _in_light_of(error: ConnectorError, token: str) -> ConnectorError:
    """Correct a guess the error body alone forced, with what our own token says.

    Outlook's 403 ``ErrorAccessDenied`` is told apart only by its text, and any text but the
    access policy's reads as a missing permission. When the token carries that very permission,
    it is not missing: the refusal is the mailbox's scope (as under RBAC for Applications,
    whose wording is not published), which clears by itself or by a change to the scope.
    """
    if (
        isinstance(error, PermissionMissingError)
        and error.permission
        and error.permission in granted_roles(token)
    ):
        return MailboxAccessDeniedError(
            error.message,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            request=error.request,
        )
    return error


def _json_or_none(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
