"""The Graph request pipeline: auth, roles, faults, mailbox throttling, then the handler.

Every Graph call, including each sub-request of a ``$batch``, goes through ``dispatch`` so the
rules apply identically; that is what lets a 429 appear inside a 200 batch, as in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from multidict import CIMultiDict

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.knobs import FaultRule, RequestRecord, ThrottledError
from syncwarden.sandbox.odata import (
    GraphError,
    JsonDict,
    decode_skiptoken,
    encode_skiptoken,
    next_link,
)
from syncwarden.sandbox.seed import GRAPH_RESOURCE
from syncwarden.sandbox.state import User

READ_DIRECTORY_USERS = (
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
READ_GROUPS = (
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
WRITE_MEMBERS = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
READ_APPS = (
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
READ_CALENDARS = ("Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite")
WRITE_CALENDARS = ("Calendars.ReadWrite",)

# Outlook's two 403 ErrorAccessDenied texts. A mailbox outside the app's access policy: the
# "Handling API errors" section of learn.microsoft.com/graph/auth-limit-mailbox-access shows
# "Access to OData is disabled."; current tenants add the [RAOP] reason after a colon (public
# client code and captures). An app without the permission the call needs: "Access is denied.
# Check credentials and try again." (public issue reports, e.g. msgraph-sdk-javascript#282).
ACCESS_POLICY_DENIED = (
    "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy "
    "settings."
)
OUTLOOK_PERMISSION_DENIED = "Access is denied. Check credentials and try again."


class HangError(Exception):
    """A fault rule asked to hold the connection until the client gives up."""

    def __init__(self, rule: FaultRule) -> None:
        super().__init__("hang")
        self.rule = rule


class DropError(Exception):
    """A fault rule asked to close the connection without an answer."""


@dataclass
class GraphRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any
    in_batch: bool = False
    params: dict[str, str] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    mailbox: User | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def client_request_id(self) -> str:
        return self.headers.get("client-request-id") or self.request_id

    @property
    def app_id(self) -> str:
        return str(self.claims.get("appid", ""))


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[GraphRequest], Awaitable[GraphResponse]]


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    roles: tuple[str, ...]
    mailbox_param: str | None = None
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        source = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern.replace("$", r"\$"))
        self.regex = re.compile(f"^{source}/?$", re.IGNORECASE)


def error_body(err: GraphError, request_id: str, client_request_id: str) -> JsonDict:
    return {
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


class GraphPipeline:
    def __init__(self, ctx: Context, verify: Callable[[str, str], dict[str, Any]]) -> None:
        self.ctx = ctx
        self.verify = verify
        self.routes: list[Route] = []

    def add(self, routes: list[Route]) -> None:
        self.routes.extend(routes)

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        path_matched = False
        for route in self.routes:
            match = route.regex.match(path)
            if match is None:
                continue
            path_matched = True
            if route.method == method:
                return route, {k: v for k, v in match.groupdict().items()}
        if path_matched:
            raise GraphError(
                405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed."
            )
        segment = path.strip("/").split("/")[-1] if path.strip("/") else ""
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def authenticate(self, req: GraphRequest) -> None:
        header = req.headers.get("Authorization", "")
        if not header:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            req.claims = self.verify(token.strip(), GRAPH_RESOURCE)
        except jwt.ExpiredSignatureError as exc:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            ) from exc
        except jwt.PyJWTError as exc:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, or the signature is not valid.",
            ) from exc

    def authorize(self, req: GraphRequest, route: Route) -> None:
        """The token's app roles against the route's; runs before the mailbox is opened.

        Outlook (a route that opens a mailbox) and the directory word the refusal differently:
        Outlook answers 403 ``ErrorAccessDenied`` "Access is denied. Check credentials and try
        again." (public issue reports of calendar calls without a ``Calendars.*`` permission),
        the directory 403 ``Authorization_RequestDenied``. The order against the access policy
        is not published; the role check comes first because Exchange's application access
        policies are "complementary to the permission scopes" an app holds (the
        New-ApplicationAccessPolicy cmdlet page): without a scope there is nothing to restrict.
        """
        roles = set(req.claims.get("roles") or [])
        if roles.intersection(route.roles):
            return
        if route.mailbox_param is not None:
            raise GraphError(403, "ErrorAccessDenied", OUTLOOK_PERMISSION_DENIED)
        raise GraphError(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )

    def open_mailbox(self, req: GraphRequest, key: str) -> User:
        user = self.ctx.state.user(key)
        if user is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
        if not user.has_mailbox:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        if not self.ctx.state.mailbox_allowed(req.app_id, user.id):
            raise GraphError(403, "ErrorAccessDenied", ACCESS_POLICY_DENIED)
        return user

    async def dispatch(self, req: GraphRequest) -> GraphResponse:
        record = RequestRecord(
            method=req.method,
            path=req.path,
            query="&".join(f"{k}={v}" for k, v in req.query.items()),
            mailbox=None,
            started=time.time(),
            in_batch=req.in_batch,
        )
        behaviour = self.ctx.behaviour
        behaviour.record(record)
        entered: str | None = None
        try:
            rule = behaviour.match_fault(req.method, f"/v1.0{req.path}")
            if rule is not None:
                record.fault = rule.id
                if rule.action == "hang":
                    raise HangError(rule)
                if rule.action == "drop":
                    raise DropError()
                headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
                raise GraphError(rule.status, rule.code, rule.message, headers)
            self.authenticate(req)
            record.app_id = req.app_id
            route, req.params = self.resolve(req.method, req.path)
            self.authorize(req, route)
            if route.mailbox_param is not None:
                req.mailbox = self.open_mailbox(req, req.params[route.mailbox_param])
                record.mailbox = req.mailbox.id
                try:
                    behaviour.enter_mailbox(req.mailbox.id)
                except ThrottledError as exc:
                    record.throttled = True
                    raise GraphError(
                        429, "ApplicationThrottled", exc.message, {"Retry-After": exc.retry_after}
                    ) from exc
                entered = req.mailbox.id
            await self.delay()
            response = await route.handler(req)
        except GraphError as err:
            response = GraphResponse(
                err.status,
                error_body(err, req.request_id, req.client_request_id),
                dict(err.headers),
            )
        finally:
            if entered is not None:
                behaviour.leave_mailbox(entered)
            record.ended = time.time()
        record.status = response.status
        response.headers.setdefault("request-id", req.request_id)
        response.headers.setdefault("client-request-id", req.client_request_id)
        return response

    async def delay(self) -> None:
        latency = self.ctx.behaviour.knobs.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)


# ---------------------------------------------------------------- collection helpers


def graph_url(ctx: Context) -> str:
    return f"{ctx.base_url}/v1.0"


def paged(
    ctx: Context,
    req: GraphRequest,
    items: list[JsonDict],
    context: str,
    *,
    top: int,
    count: int | None = None,
) -> JsonDict:
    offset = 0
    token = req.query.get("$skiptoken")
    if token is not None:
        offset = int(decode_skiptoken(token).get("o", 0))
    page = items[offset : offset + top]
    body: JsonDict = {"@odata.context": f"{graph_url(ctx)}/$metadata#{context}"}
    if count is not None:
        body["@odata.count"] = count
    if offset + top < len(items):
        body["@odata.nextLink"] = next_link(
            graph_url(ctx), req.path, req.query, encode_skiptoken({"o": offset + top})
        )
    body["value"] = page
    return body


def ok(body: Any, status: int = 200) -> GraphResponse:
    return GraphResponse(status, body)


def no_content() -> GraphResponse:
    return GraphResponse(204, None)


def json_body(req: GraphRequest) -> JsonDict:
    if not isinstance(req.body, dict):
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    return req.body


def parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format.",
        ) from exc
