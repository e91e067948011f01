"""Exchange Online's admin API (``/adminapi/beta/{tenant}/InvokeCommand``), the cmdlets we use.

This endpoint is what the EXO V3 PowerShell module calls; Microsoft does not publish it as a
contract. Confirmed by public traffic: the URL, the ``CmdletInput`` body, results in ``value``,
paging by re-POSTing ``@odata.nextLink``, warnings in ``@adminapi.warnings``. Assumptions made
here (keep the product tolerant of them): success bodies of write cmdlets are ``{"value": []}``;
errors are HTTP 400 with ``error.code`` ``BadRequest``, the text in ``error.message``,
``error.details[].message`` and ``error.innererror.internalException.message``, prefixed with
the .NET exception type as ``|Type|Text``; the exact exception type names; 401/403 bodies.
The cmdlets change the same group objects Graph shows.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from aiohttp import web

from sandbox.context import Context
from sandbox.entra import EntraFront
from sandbox.knobs import RequestRecord
from sandbox.odata import JsonDict, decode_skiptoken, encode_skiptoken
from sandbox.seed import EXCHANGE_RESOURCE
from sandbox.state import Group, User

SERVER = "SA1PR00MB0000.namprd00.prod.outlook.com"


class CmdletError(Exception):
    def __init__(self, exception_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.exception_type, self.message, self.status = exception_type, message, status

    def body(self) -> JsonDict:
        text = f"|{self.exception_type}|{self.message}"
        return {
            "error": {
                "code": "BadRequest" if self.status == 400 else "InternalServerError",
                "message": text,
                "details": [{"code": "Context", "target": "", "message": text}],
                "innererror": {
                    "message": text,
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                    "internalException": {"message": self.message, "type": self.exception_type},
                },
            }
        }


def not_found(identity: str) -> CmdletError:
    return CmdletError(
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
        f"'{SERVER}'.",
    )


class ExchangeFront:
    def __init__(self, ctx: Context, entra: EntraFront) -> None:
        self.ctx = ctx
        self.entra = entra

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/adminapi/beta/{tenant}/InvokeCommand", self.invoke)]

    def _auth_error(self, status: int, message: str) -> web.Response:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
        code = "Unauthorized" if status == 401 else "Forbidden"
        return web.json_response(
            {"error": {"code": code, "message": message}}, status=status, headers=headers
        )

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(
            method="POST",
            path=request.path,
            query=request.query_string,
            mailbox=None,
            started=time.time(),
        )
        self.ctx.behaviour.record(record)
        try:
            response = await self._invoke(request, record)
        finally:
            record.ended = time.time()
        record.status = response.status
        return response

    async def _invoke(self, request: web.Request, record: RequestRecord) -> web.Response:
        rule = self.ctx.behaviour.match_fault("POST", request.path)
        if rule is not None and rule.action == "status":
            record.fault = rule.id
            headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
            return web.json_response(
                {"error": {"code": rule.code, "message": rule.message}},
                status=rule.status,
                headers=headers,
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._auth_error(401, "The access token is missing.")
        try:
            claims = self.entra.verify_access_token(token.strip(), EXCHANGE_RESOURCE)
        except jwt.PyJWTError:
            return self._auth_error(
                401, "The access token is invalid, expired or for another audience."
            )
        record.app_id = str(claims.get("appid"))
        if request.match_info["tenant"].lower() not in {
            self.ctx.state.tenant_id.lower(),
            *(d.lower() for d in self.ctx.state.domains),
        }:
            return self._auth_error(401, "The token's tenant does not match the request's tenant.")
        if "Exchange.ManageAsApp" not in (claims.get("roles") or []):
            return self._auth_error(
                403, "The role assigned to application isn't supported in this scenario."
            )
        if self.ctx.behaviour.knobs.latency_ms > 0:
            import asyncio

            await asyncio.sleep(self.ctx.behaviour.knobs.latency_ms / 1000)
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response(
                CmdletError(
                    "System.ArgumentException", "The request body is not valid JSON."
                ).body(),
                status=400,
            )
        cmdlet_input = payload.get("CmdletInput") if isinstance(payload, dict) else None
        if not isinstance(cmdlet_input, dict) or not isinstance(
            cmdlet_input.get("CmdletName"), str
        ):
            return web.json_response(
                CmdletError(
                    "System.ArgumentException", "CmdletInput.CmdletName is required."
                ).body(),
                status=400,
            )
        name = cmdlet_input["CmdletName"]
        params = cmdlet_input.get("Parameters") or {}
        try:
            handler = {
                "add-distributiongroupmember": self.add_member,
                "remove-distributiongroupmember": self.remove_member,
                "get-distributiongroupmember": self.get_members,
                "test-applicationaccesspolicy": self.test_policy,
            }.get(name.lower())
            if handler is None:
                raise CmdletError(
                    "System.Management.Automation.CommandNotFoundException",
                    f"The term '{name}' is not recognized as a name of a cmdlet.",
                )
            value, extra = handler(params, request)
        except CmdletError as exc:
            return web.json_response(exc.body(), status=exc.status)
        tid = self.ctx.state.tenant_id
        body: JsonDict = {
            "@odata.context": f"{self.ctx.base_url}/adminapi/beta/{tid}/$metadata#Collection("
            "Microsoft.Exchange.Admin.OData.Core.PSObject)",
            **extra,
            "value": value,
        }
        return web.json_response(body)

    # ------------------------------------------------------------ resolution

    def _group(self, params: dict[str, Any]) -> Group:
        identity = str(params.get("Identity") or "")
        if not identity:
            raise CmdletError(
                "System.Management.Automation.ParameterBindingException", "Identity is required."
            )
        group = self.ctx.state.exchange_group(identity)
        if group is None:
            raise not_found(identity)
        return group

    def _member(self, params: dict[str, Any]) -> User:
        member = str(params.get("Member") or "")
        if not member:
            raise CmdletError(
                "System.Management.Automation.ParameterBindingException", "Member is required."
            )
        user = self.ctx.state.recipient(member)
        if user is None or (not user.has_mailbox and user.mail is None):
            raise CmdletError(
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                f'Couldn\'t find object "{member}". Please make sure that it was spelled correctly '
                "or specify a different object.",
            )
        return user

    def _check_manager(self, params: dict[str, Any], group: Group) -> None:
        if group.securityEnabled and not params.get("BypassSecurityGroupManagerCheck"):
            raise CmdletError(
                "Microsoft.Exchange.Management.Tasks.RecipientTaskException",
                "You don't have sufficient permissions. This operation can only be performed by a "
                f'manager of the group. (Group "{group.displayName}"; use '
                "-BypassSecurityGroupManagerCheck.)",
            )

    # ------------------------------------------------------------ cmdlets

    def add_member(
        self, params: dict[str, Any], request: web.Request
    ) -> tuple[list[JsonDict], JsonDict]:
        group = self._group(params)
        user = self._member(params)
        self._check_manager(params, group)
        if user.id in group.members:
            raise CmdletError(
                "Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException",
                f'The recipient "{params["Member"]}" is already a member of the group '
                f'"{group.displayName}".',
            )
        self.ctx.state.add_members(group, [user.id])
        return [], {}

    def remove_member(
        self, params: dict[str, Any], request: web.Request
    ) -> tuple[list[JsonDict], JsonDict]:
        group = self._group(params)
        user = self._member(params)
        self._check_manager(params, group)
        if user.id not in group.members:
            raise CmdletError(
                "Microsoft.Exchange.Management.Tasks.MemberNotFoundException",
                f'The recipient "{params["Member"]}" isn\'t a member of the group '
                f'"{group.displayName}".',
            )
        self.ctx.state.remove_member(group, user.id)
        return [], {}

    def get_members(
        self, params: dict[str, Any], request: web.Request
    ) -> tuple[list[JsonDict], JsonDict]:
        group = self._group(params)
        rows: list[JsonDict] = []
        for member_id in group.members:
            user = self.ctx.state.users.get(member_id)
            if user is not None:
                rows.append(
                    {
                        "Identity": user.displayName,
                        "Name": user.userPrincipalName.split("@")[0],
                        "DisplayName": user.displayName,
                        "Alias": user.userPrincipalName.split("@")[0],
                        "PrimarySmtpAddress": user.mail or user.userPrincipalName,
                        "RecipientType": "UserMailbox" if user.has_mailbox else "MailUser",
                        "RecipientTypeDetails": "UserMailbox" if user.has_mailbox else "MailUser",
                        "ExternalDirectoryObjectId": user.id,
                        "Guid": user.id,
                    }
                )
            elif (nested := self.ctx.state.groups.get(member_id)) is not None:
                rows.append(
                    {
                        "Identity": nested.displayName,
                        "Name": nested.displayName,
                        "DisplayName": nested.displayName,
                        "Alias": nested.mailNickname,
                        "PrimarySmtpAddress": nested.mail,
                        "RecipientType": "MailUniversalSecurityGroup"
                        if nested.mailEnabled
                        else "Group",
                        "RecipientTypeDetails": "MailUniversalSecurityGroup"
                        if nested.mailEnabled
                        else "Group",
                        "ExternalDirectoryObjectId": nested.id,
                        "Guid": nested.id,
                    }
                )
        offset = 0
        token = request.query.get("$skiptoken")
        if token:
            offset = int(decode_skiptoken(token).get("o", 0))
        size = self.ctx.behaviour.knobs.exchange_page_size
        extra: JsonDict = {}
        if offset + size < len(rows):
            extra["@odata.nextLink"] = (
                f"{self.ctx.base_url}{request.path}"
                f"?$skiptoken={encode_skiptoken({'o': offset + size})}"
            )
        return rows[offset : offset + size], extra

    def test_policy(
        self, params: dict[str, Any], request: web.Request
    ) -> tuple[list[JsonDict], JsonDict]:
        identity = str(params.get("Identity") or "")
        app_id = str(params.get("AppId") or "")
        user = self.ctx.state.recipient(identity)
        if user is None or not user.has_mailbox:
            raise not_found(identity)
        allowed = self.ctx.state.mailbox_allowed(app_id, user.id, live=True)
        return [
            {
                "AppId": app_id,
                "Mailbox": user.userPrincipalName.split("@")[0],
                "MailboxId": user.id,
                "MailboxSid": f"S-1-5-21-0-0-0-{int(user.id[:6], 16)}",
                "AccessCheckResult": "Granted" if allowed else "Denied",
            }
        ], {}
