"""Exchange Online's admin REST endpoint (``InvokeCommand``), for what Graph cannot do.

Graph treats mail-enabled security groups as read-only, so their membership is changed with the
``*-DistributionGroupMember`` cmdlets, posted as JSON to the endpoint Microsoft's own EXO V3
PowerShell module uses. That endpoint is **not a published contract**: its success body and the
wording of its errors are not documented. Everything that depends on that guesswork is in this one
class, and errors are recognised by the exception type names Exchange puts in messages first and
by short phrases only as a fallback.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AuthenticationError,
    BadRequestError,
    ConnectorError,
    NotFoundError,
    RequestInfo,
    ThrottledError,
    TransientError,
)
from connectors.graph.error_mapping import parse_retry_after
from connectors.http import request_timeout
from connectors.limits import ConcurrencyLimiter
from connectors.ports import TokenProvider
from connectors.retry import RetryPolicy, Sleep, call_with_retries

# The arbitration mailbox every tenant has; Exchange routes app-only admin calls by it.
_ANCHOR_MAILBOX = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"
_ALREADY_MEMBER = ("memberalreadyexistsexception", "already a member")
_NOT_MEMBER = ("membernotfoundexception", "isn't a member", "is not a member")
_NOT_FOUND = ("managementobjectnotfoundexception", "couldn't be found", "could not be found")
_MAX_PAGES = 1000


def exchange_error_text(body: bytes) -> str:
    """All the human-readable text in an Exchange error body, joined; empty when there is none."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return ""
    texts = [error.get("message")]
    texts += [d.get("message") for d in error.get("details") or [] if isinstance(d, dict)]
    inner = error.get("innererror") or error.get("innerError")
    if isinstance(inner, dict) and isinstance(inner.get("internalException"), dict):
        texts.append(inner["internalException"].get("message"))
    return " | ".join(text for text in texts if isinstance(text, str) and text)


def exchange_error(
    status: int, headers: Mapping[str, str], body: bytes, request: RequestInfo
) -> ConnectorError:
    text = exchange_error_text(body) or f"Exchange answered HTTP {status}"
    lowered = text.lower()
    options: dict[str, Any] = {
        "status": status,
        "request_id": headers.get("request-id"),
        "request": request,
    }
    if status == 429:
        return ThrottledError(
            text, retry_after=parse_retry_after(headers.get("Retry-After")), **options
        )
    if status == 401:
        return AuthenticationError(text, **options)
    if status == 403:
        return AccessDeniedError(text, **options)
    if status >= 500:
        return TransientError(
            text, retry_after=parse_retry_after(headers.get("Retry-After")), **options
        )
    if any(marker in lowered for marker in _ALREADY_MEMBER):
        return AlreadyExistsError(text, code="AlreadyMember", **options)
    if any(marker in lowered for marker in _NOT_MEMBER):
        return NotFoundError(text, code="NotMember", **options)
    if status == 404 or any(marker in lowered for marker in _NOT_FOUND):
        return NotFoundError(text, **options)
    return BadRequestError(text, **options)


class ExchangeAdminClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenProvider,
        *,
        base_url: str,
        scope: str,
        tenant_id: str,
        limiter: ConcurrencyLimiter,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        timeout_seconds: float = 60.0,
    ) -> None:
        self._http = http
        self._timeout = request_timeout(timeout_seconds)
        self._tokens = tokens
        self._url = f"{base_url.rstrip('/')}/adminapi/beta/{tenant_id}/InvokeCommand"
        self._scope = scope
        self._anchor = _ANCHOR_MAILBOX.format(tenant=tenant_id)
        self._limiter = limiter
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    async def invoke(
        self, cmdlet: str, parameters: Mapping[str, Any], *, idempotent: bool = True
    ) -> list[dict[str, Any]]:
        """Run one cmdlet and return every result object, following ``@odata.nextLink`` pages."""
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters)}}
        results: list[dict[str, Any]] = []
        url = self._url
        for _ in range(_MAX_PAGES):
            page = await self._post(url, body, cmdlet, idempotent=idempotent)
            results.extend(page.get("value") or [])
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return results
            url = self._same_host(next_link)
        raise TransientError(f"{cmdlet} returned more than {_MAX_PAGES} pages")

    async def add_group_member(self, group: str, member: str) -> bool:
        """Add ``member`` (UPN or address) to ``group``; False when they already were a member."""
        try:
            await self.invoke(
                "Add-DistributionGroupMember",
                {"Identity": group, "Member": member, "BypassSecurityGroupManagerCheck": True},
            )
        except AlreadyExistsError:
            return False
        return True

    async def remove_group_member(self, group: str, member: str) -> bool:
        """Remove ``member`` from ``group``; False when they were not a member."""
        try:
            await self.invoke(
                "Remove-DistributionGroupMember",
                {"Identity": group, "Member": member, "BypassSecurityGroupManagerCheck": True},
            )
        except NotFoundError as error:
            if error.code == "NotMember":
                return False
            raise
        return True

    async def group_members(self, group: str) -> list[dict[str, Any]]:
        return await self.invoke(
            "Get-DistributionGroupMember", {"Identity": group, "ResultSize": "Unlimited"}
        )

    async def test_application_access_policy(self, mailbox: str, app_id: str) -> bool:
        """Whether the application access policy lets ``app_id`` into ``mailbox``."""
        results = await self.invoke(
            "Test-ApplicationAccessPolicy", {"Identity": mailbox, "AppId": app_id}
        )
        verdict = str(results[0].get("AccessCheckResult", "")) if results else ""
        return verdict.lower() == "granted"

    def _same_host(self, link: str) -> str:
        if httpx.URL(link).host != httpx.URL(self._url).host:
            raise ValueError("refusing to send the Exchange token to another host")
        return link

    async def _post(
        self, url: str, body: dict[str, Any], cmdlet: str, *, idempotent: bool
    ) -> dict[str, Any]:
        info = RequestInfo("POST", f"{url.split('?', 1)[0]} ({cmdlet})")

        async def send_once() -> dict[str, Any]:
            token = await self._tokens.get_token(self._scope)
            headers = {
                "Authorization": f"Bearer {token}",
                "X-AnchorMailbox": self._anchor,
                "client-request-id": str(uuid.uuid4()),
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
            async with self._limiter.slot(None):
                try:
                    response = await self._http.post(
                        url, content=json.dumps(body), headers=headers, timeout=self._timeout
                    )
                except httpx.TimeoutException:
                    raise TransientError("Exchange did not answer in time", request=info) from None
                except httpx.TransportError as error:
                    raise TransientError(
                        f"the connection to Exchange failed ({type(error).__name__})", request=info
                    ) from None
            if response.status_code >= 400:
                raise exchange_error(response.status_code, response.headers, response.content, info)
            try:
                parsed: Any = response.json() if response.content else {}
            except ValueError:
                parsed = {}
            return parsed if isinstance(parsed, dict) else {}

        options: dict[str, Any] = {"sleep": self._sleep} if self._sleep else {}
        return await call_with_retries(
            send_once,
            policy=self._retry,
            idempotent=idempotent,
            on_unauthorized=lambda: self._tokens.invalidate(self._scope),
            label=f"Exchange {cmdlet}",
            **options,
        )
