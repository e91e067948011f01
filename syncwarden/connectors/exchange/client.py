"""Exchange Online's admin REST endpoint (``InvokeCommand``), for what Graph cannot do.

Graph treats mail-enabled security groups as read-only, so their membership is changed with the
``*-DistributionGroupMember`` cmdlets, posted as JSON to the endpoint Microsoft's own EXO V3
PowerShell module uses. That endpoint is **not a published contract**. What public client code
and captures show, and this class relies on:

- success is 200 with the results in ``value`` (possibly absent), paging by re-POSTing
  ``@odata.nextLink``, and warnings in ``@adminapi.warnings`` (logged when there are any);
- a failed cmdlet is ``{"error": {"code", "message": "Error executing cmdlet" | "Invalid
  Operation", "details": [{"message": "<error id>|<.NET exception type>|<text>"}], "innererror":
  {"internalexception": {"type", "message"}}}}``; errors are recognised by the exception type
  first and by short phrases only as a fallback, because the id and type parts can be empty;
- Exchange's own RBAC is separate from the ``Exchange.ManageAsApp`` app role: a cmdlet the app's
  Exchange roles do not grant is a 401 "User is not allowed to call …", and a parameter they do
  not grant does not exist for the app. Both are a missing role (:class:`PermissionMissingError`
  naming it), never a stale token to refresh;
- throttling is 429/503/504, or the tenant concurrency text with any status; both are retried,
  honouring ``Retry-After``;
- a redirect is never an answer: the shared client does not follow redirects (a token must not
  travel to another host), and a 3xx here is an error, not an empty success.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.trace import SpanKind

from syncwarden.connectors.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AuthenticationError,
    BadRequestError,
    ConnectorError,
    NotFoundError,
    PermissionMissingError,
    RequestInfo,
    ThrottledError,
    TransientError,
)
from syncwarden.connectors.graph.error_mapping import parse_retry_after
from syncwarden.connectors.http import request_timeout
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.ports import TokenProvider
from syncwarden.connectors.retry import RetryPolicy, Sleep, call_with_retries
from syncwarden.core.logging import get_logger
from syncwarden.core.tracing import tracer

log = get_logger(__name__)

# The arbitration mailbox every tenant has; Exchange routes app-only admin calls by it.
_ANCHOR_MAILBOX = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"
_MAX_PAGES = 1000

# The Exchange roles (inside Exchange Online, apart from the Exchange.ManageAsApp app role) each
# cmdlet we call needs. -BypassSecurityGroupManagerCheck, which a mail-enabled security group
# needs when the app is not one of its owners, is granted only by Organization Management or the
# "Security Group Creation and Membership" role (Add-DistributionGroupMember reference page).
MEMBERSHIP_ROLE = (
    "Exchange role 'Security Group Creation and Membership' (or Organization Management)"
)
READ_MEMBERS_ROLE = "Exchange role 'View-Only Recipients' (or Organization Management)"
POLICY_TEST_ROLE = (
    "Exchange role that grants Test-ApplicationAccessPolicy (Organization Configuration, or "
    "Organization Management)"
)
_ROLE_FOR_CMDLET = {
    "add-distributiongroupmember": MEMBERSHIP_ROLE,
    "remove-distributiongroupmember": MEMBERSHIP_ROLE,
    "get-distributiongroupmember": READ_MEMBERS_ROLE,
    "test-applicationaccesspolicy": POLICY_TEST_ROLE,
}
_ROLE_FOR_PARAMETER = {"bypasssecuritygroupmanagercheck": MEMBERSHIP_ROLE}

# Exception types (the middle part of "id|type|text"), compared by their last dotted name.
_ALREADY_MEMBER_TYPES = frozenset({"memberalreadyexistsexception"})
_NOT_MEMBER_TYPES = frozenset({"membernotfoundexception"})
_NOT_FOUND_TYPES = frozenset({"managementobjectnotfoundexception", "adnosuchobjectexception"})
_PARAMETER_TYPES = frozenset({"parameterbindingexception", "ambiguousparametersetexception"})
# Phrases, the fallback when a message comes without its type.
_TENANT_CONCURRENCY = "maximum number of concurrent requests per tenant"
_ALREADY_MEMBER = ("already a member",)
_NOT_MEMBER = ("isn't a member", "is not a member", "not a member of")
_NOT_FOUND = ("couldn't be found", "could not be found", "couldn't find object")
_NOT_ALLOWED = "is not allowed to call"
_NOT_MANAGER = "can only be performed by a manager of the group"
_PARAMETER_PHRASES = (
    "a parameter cannot be found that matches parameter name",
    "invalid cmdlet parameters specified",
)


@dataclass(frozen=True)
class ExchangeErrorBody:
    """What an ``InvokeCommand`` error body says, in the order a person wants to read it."""

    code: str | None = None
    exception_types: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    raw: str = ""

    @property
    def short_types(self) -> frozenset[str]:
        return frozenset(t.rsplit(".", 1)[-1].lower() for t in self.exception_types if t)

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else self.raw

    def mentions(self, *phrases: str) -> bool:
        haystack = " ".join((*self.texts, self.raw)).lower()
        return any(phrase in haystack for phrase in phrases)


@dataclass
class _Collected:
    types: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, exception_type: Any, text: Any) -> None:
        if isinstance(exception_type, str) and exception_type:
            self.types.append(exception_type)
        if isinstance(text, str) and text.strip() and text not in self.texts:
            self.texts.append(text.strip())


def _split_detail(message: str) -> tuple[str, str]:
    """``"Ex6F9304|Type|Text"`` -> (type, text); a message without the prefix is all text."""
    parts = message.split("|", 2)
    if len(parts) == 3:
        return parts[1].strip(), parts[2].strip()
    return "", message.strip()


def parse_exchange_error(body: bytes) -> ExchangeErrorBody:
    """Read an error body of any shape: the JSON envelope, plain text, or nothing useful."""
    raw = body.decode("utf-8", errors="replace").replace("\x00", "").strip() if body else ""
    try:
        parsed: Any = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        # Not the envelope: a proxy page, NUL bytes, or the bare tenant-concurrency sentence.
        return ExchangeErrorBody(raw=raw[:500])
    found = _Collected()
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
            found.add(*_split_detail(detail["message"]))
    inner = error.get("innererror") or error.get("innerError")
    if isinstance(inner, dict):
        internal = inner.get("internalexception") or inner.get("internalException")
        if isinstance(internal, dict):
            text = internal.get("message")
            if isinstance(text, str) and not text.startswith("Exception of type "):
                found.add(internal.get("type"), text)
    # The top-level message is generic ("Error executing cmdlet"), so it comes last.
    found.add(None, error.get("message"))
    code = error.get("code")
    return ExchangeErrorBody(
        code=code if isinstance(code, str) and code else None,
        exception_types=tuple(found.types),
        texts=tuple(found.texts),
        raw="" if found.texts else raw[:500],
    )


def role_needed(cmdlet: str | None, parameter: str | None = None) -> str:
    """The Exchange role to grant when ``cmdlet`` (or one of its parameters) was refused."""
    if parameter and parameter.lower() in _ROLE_FOR_PARAMETER:
        return _ROLE_FOR_PARAMETER[parameter.lower()]
    if cmdlet and cmdlet.lower() in _ROLE_FOR_CMDLET:
        return _ROLE_FOR_CMDLET[cmdlet.lower()]
    what = f"-{parameter} of {cmdlet}" if parameter else (cmdlet or "this cmdlet")
    return f"Exchange role that grants {what} (Get-ManagementRole -Cmdlet names it)"


def _refused_parameter(text: str) -> str | None:
    """The parameter name an Exchange parameter error is about, in either known wording."""
    lowered = text.lower()
    marker = "matches parameter name '"
    if marker in lowered:
        start = lowered.index(marker) + len(marker)
        end = text.find("'", start)
        return text[start:end] if end > start else None
    marker = "invalid cmdlet parameters specified."
    if marker in lowered:
        rest = text[lowered.index(marker) + len(marker) :].strip().rstrip(".")
        return rest.split(",")[0].strip() or None
    return None


def exchange_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    request: RequestInfo,
    *,
    cmdlet: str | None = None,
) -> ConnectorError:
    """The :mod:`connectors.errors` class for one failed ``InvokeCommand`` answer."""
    parsed = parse_exchange_error(body)
    text = parsed.text or f"Exchange answered HTTP {status}"
    message = f"{cmdlet}: {text}" if cmdlet else text
    types = parsed.short_types
    short_type = next((t.rsplit(".", 1)[-1] for t in parsed.exception_types if t), None)
    options: dict[str, Any] = {
        "status": status,
        "code": short_type or parsed.code,
        "request_id": headers.get("request-id"),
        "request": request,
    }
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if 300 <= status < 400:
        # Never an answer: the token must not follow it to another host, and an empty "success"
        # would hide that nothing was done.
        return ConnectorError(_redirect_error(status, headers, cmdlet), **options)
    # Throttling first: the tenant concurrency refusal has been seen as bare text on its own.
    if status == 429 or parsed.mentions(_TENANT_CONCURRENCY):
        return ThrottledError(message, retry_after=retry_after, **options)
    # The exception type decides, then the phrase; the HTTP status of these is not published.
    if types & _ALREADY_MEMBER_TYPES or (not types and parsed.mentions(*_ALREADY_MEMBER)):
        return AlreadyExistsError(message, **{**options, "code": "AlreadyMember"})
    if types & _NOT_MEMBER_TYPES or (not types and parsed.mentions(*_NOT_MEMBER)):
        return NotFoundError(message, **{**options, "code": "NotMember"})
    if types & _PARAMETER_TYPES or parsed.mentions(*_PARAMETER_PHRASES):
        parameter = next(filter(None, map(_refused_parameter, parsed.texts)), None)
        if parameter is not None:
            # The parameter exists on the cmdlet (we only send real ones), so Exchange hiding it
            # means the app's Exchange roles do not grant it.
            permission = role_needed(cmdlet, parameter)
            return PermissionMissingError(
                f"{message} (the app needs the {permission})", permission=permission, **options
            )
        return BadRequestError(message, **options)
    if parsed.mentions(_NOT_ALLOWED, _NOT_MANAGER):
        permission = role_needed(cmdlet)
        return PermissionMissingError(
            f"{message} (the app needs the {permission})", permission=permission, **options
        )
    if types & _NOT_FOUND_TYPES or (not types and parsed.mentions(*_NOT_FOUND)):
        return NotFoundError(message, **options)
    if status == 401:
        return AuthenticationError(message, **options)
    if status == 403:
        return AccessDeniedError(message, **options)
    if status == 404:
        return NotFoundError(message, **options)
    if status == 408 or status >= 500:
        return TransientError(message, retry_after=retry_after, **options)
    return BadRequestError(message, **options)


def _redirect_error(status: int, headers: Mapping[str, str], cmdlet: str | None) -> str:
    try:
        host = httpx.URL(headers.get("Location", "")).host
    except httpx.InvalidURL:
        host = ""
    return (
        f"Exchange answered {cmdlet or 'the cmdlet'} with a redirect (HTTP {status}"
        f"{f' to {host}' if host else ''}), which is not followed: check the Exchange base URL "
        "and tenant id"
    )


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
            value = page.get("value")
            if isinstance(value, list):
                results.extend(item for item in value if isinstance(item, dict))
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return results
            url = self._same_host(str(next_link))
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
        """Remove ``member`` from ``group``; False when they were not a member.

        A member Exchange cannot resolve at all (``Couldn't find object "…"`` naming them: no
        longer a recipient, say a person whose mailbox is gone) cannot be in the group either,
        so that is "not a member" too; a removal must not fail for it, or a retry never ends
        it. A group that cannot be found is still an error.
        """
        try:
            await self.invoke(
                "Remove-DistributionGroupMember",
                {"Identity": group, "Member": member, "BypassSecurityGroupManagerCheck": True},
            )
        except NotFoundError as error:
            if error.code == "NotMember" or _names_only(error.message, member, group):
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

    async def _send(self, url: str, body: dict[str, Any], cmdlet: str) -> dict[str, Any]:
        info = RequestInfo("POST", f"{url.split('?', 1)[0]} ({cmdlet})")
        token = await self._tokens.get_token(self._scope)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-AnchorMailbox": self._anchor,
            "client-request-id": str(uuid.uuid4()),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        async with self._limiter.slot(None):
            with tracer.start_as_current_span(
                f"exchange {cmdlet}",
                kind=SpanKind.CLIENT,
                attributes={"exchange.cmdlet": cmdlet},
            ) as span:
                try:
                    response = await self._http.post(
                        url,
                        content=json.dumps(body),
                        headers=headers,
                        timeout=self._timeout,
                        follow_redirects=False,
                    )
                except httpx.TimeoutException:
                    raise TransientError("Exchange did not answer in time", request=info) from None
                except httpx.TransportError as error:
                    raise TransientError(
                        f"the connection to Exchange failed ({type(error).__name__})",
                        request=info,
                    ) from None
                span.set_attribute("http.response.status_code", response.status_code)
        if not response.is_success:
            raise exchange_error(
                response.status_code, response.headers, response.content, info, cmdlet=cmdlet
            )
        try:
            parsed: Any = response.json() if response.content else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise TransientError(
                f"Exchange answered {cmdlet} with HTTP {response.status_code} but no JSON object",
                status=response.status_code,
                request=info,
            )
        self._log_warnings(cmdlet, parsed, response.headers)
        return parsed

    @staticmethod
    def _log_warnings(cmdlet: str, page: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        found = page.get("@adminapi.warnings")
        warnings = [str(w) for w in found if w] if isinstance(found, list) else []
        if headers.get("X-Warnings"):
            warnings.append(headers["X-Warnings"])
        if warnings:
            log.warning("exchange.warnings", cmdlet=cmdlet, warnings=warnings)

    async def _post(
        self, url: str, body: dict[str, Any], cmdlet: str, *, idempotent: bool
    ) -> dict[str, Any]:
        refreshed = False

        async def send_once() -> dict[str, Any]:
            nonlocal refreshed
            try:
                return await self._send(url, body, cmdlet)
            except AuthenticationError:
                # A rejected token is refreshed once. A missing Exchange role (also a 401, "User is
                # not allowed to call …") is a PermissionMissingError and never gets here.
                if refreshed:
                    raise
                refreshed = True
                self._tokens.invalidate(self._scope)
                return await self._send(url, body, cmdlet)

        options: dict[str, Any] = {"sleep": self._sleep} if self._sleep else {}
        return await call_with_retries(
            send_once,
            policy=self._retry,
            idempotent=idempotent,
            label=f"Exchange {cmdlet}",
            **options,
        )


def _names_only(message: str, member: str, group: str) -> bool:
    """Whether an object-not-found ``message`` is about ``member`` (quoted in it) and not about
    ``group``."""
    said = message.lower()
    quoted = {f'"{member.lower()}"', f"'{member.lower()}'"}
    group_quoted = {f'"{group.lower()}"', f"'{group.lower()}'"}
    return any(q in said for q in quoted) and not any(q in said for q in group_quoted)
