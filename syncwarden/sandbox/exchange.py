"""Exchange Online's admin API (``/adminapi/beta/{tenant}/InvokeCommand``), the cmdlets we use.

This endpoint is what the EXO V3 PowerShell module calls; Microsoft does not publish it as a
contract. What is modelled here, and where it was seen (``tests/contract/test_exchange_contract.py``
pins each with its source):

- the URL, the ``CmdletInput`` body, results in ``value``, paging by re-POSTing
  ``@odata.nextLink``, warnings in ``@adminapi.warnings`` (CIPP-API ``New-ExoRequest``, ExoHelper);
- success: 200 ``{"@odata.context", "adminapi.warnings@odata.type", "@adminapi.warnings": [],
  "value": [...]}`` (public captures);
- a failed cmdlet: ``{"error": {"code": "NotFound" | "BadRequest", "message": "Error executing
  cmdlet", "details": [{"code": "Client", "target": "", "message": "Ex6F9304|<.NET exception
  type>|<text>"}], "innererror": {..., "internalexception": {...}}}}``, 404 for an object that
  cannot be found (a capture printed by the module); parameter trouble is 400 "Invalid
  Operation" with the text also in ``innererror.internalexception`` (a live capture);
- Exchange RBAC, separate from the Entra app role ``Exchange.ManageAsApp``: a cmdlet none of the
  app's roles grants is 401 ``{"error": {"code": "Unauthorized", "message": "User is not allowed
  to call <cmdlet>"}}`` (MicrosoftDocs/office-docs-powershell#7970); a parameter the roles do not
  grant does not exist for the caller (``-BypassSecurityGroupManagerCheck`` needs Organization
  Management or "Security Group Creation and Membership", the cmdlet's reference page);
- throttling: 429/503/504, and the tenant concurrency text as a plain-text body (ExoHelper).

Guesses the product must stay tolerant of: the status of "already a member" (400 here) and of
"not a member" (404 here), the exact "not a member" text, the error ids other than Ex6F9304 and
Ex94914C, and which role grants ``Test-ApplicationAccessPolicy``. The cmdlets change the same
group objects Graph shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Literal

import jwt
from aiohttp import web

from syncwarden.sandbox.context import Context
from syncwarden.sandbox.entra import EntraFront
from syncwarden.sandbox.knobs import FaultRule, RequestRecord
from syncwarden.sandbox.odata import JsonDict, decode_skiptoken, encode_skiptoken
from syncwarden.sandbox.seed import EXCHANGE_RESOURCE
from syncwarden.sandbox.state import Group, User

SERVER = "SA1PR00MB0000.namprd00.prod.outlook.com"
EXECUTION_FAILED = "Error executing cmdlet"
INVALID_OPERATION = "Invalid Operation"
ODATA_EXCEPTION = "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
DIRECT_INVOKE = "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException"
OBJECT_NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
ALREADY_MEMBER = "Microsoft.Exchange.Management.Tasks.MemberAlreadyExistsException"
NOT_MEMBER = "Microsoft.Exchange.Management.Tasks.MemberNotFoundException"
NOT_MANAGER = "Microsoft.Exchange.Management.Tasks.RecipientTaskException"
PARAMETER_SET = "Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException"
PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"
COMMAND_NOT_FOUND = "System.Management.Automation.CommandNotFoundException"
TENANT_CONCURRENCY = (
    "You have reached the maximum number of concurrent requests per tenant. "
    "Please wait and try again."
)

# How an ungranted (or unknown) parameter is refused. "rest" is what InvokeCommand answered in a
# live capture for an unknown parameter; "powershell" is the text PowerShell itself prints
# (MicrosoftDocs/office-docs-powershell#9985). Which one a raw REST client gets for a parameter
# hidden by RBAC is not published, so tests switch between them.
ParameterErrorStyle = Literal["rest", "powershell"]

_MEMBERSHIP = frozenset({"identity", "member", "confirm", "whatif"})
_MEMBERSHIP_BYPASS = _MEMBERSHIP | {"bypasssecuritygroupmanagercheck"}
_READ_MEMBERS = frozenset({"identity", "resultsize"})

# Management roles: cmdlet (lower-case) -> the parameters (lower-case) the role grants for it.
# Built-in role names; the entries are the subset of each role Syncwarden touches.
MANAGEMENT_ROLES: dict[str, dict[str, frozenset[str]]] = {
    "Distribution Groups": {
        "add-distributiongroupmember": _MEMBERSHIP,
        "remove-distributiongroupmember": _MEMBERSHIP,
        "get-distributiongroupmember": _READ_MEMBERS,
    },
    # The only role besides Organization Management that lets -BypassSecurityGroupManagerCheck
    # change a mail-enabled security group (Add-DistributionGroupMember's reference page).
    "Security Group Creation and Membership": {
        "add-distributiongroupmember": _MEMBERSHIP_BYPASS,
        "remove-distributiongroupmember": _MEMBERSHIP_BYPASS,
    },
    "View-Only Recipients": {"get-distributiongroupmember": _READ_MEMBERS},
    # Unpublished which role grants it; Microsoft365DSC lists Organization Configuration for the
    # application access policy cmdlets.
    "Organization Configuration": {
        "test-applicationaccesspolicy": frozenset({"identity", "appid"})
    },
}
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "Organization Management": tuple(MANAGEMENT_ROLES),
    "Recipient Management": ("Distribution Groups", "View-Only Recipients"),
    "View-Only Organization Management": ("View-Only Recipients",),
}
# Every cmdlet the sandbox implements, by lower-case name, with the name as Exchange spells it.
CMDLETS = {
    "add-distributiongroupmember": "Add-DistributionGroupMember",
    "remove-distributiongroupmember": "Remove-DistributionGroupMember",
    "get-distributiongroupmember": "Get-DistributionGroupMember",
    "test-applicationaccesspolicy": "Test-ApplicationAccessPolicy",
}


def granted(assigned: Iterable[str]) -> dict[str, set[str]]:
    """What a set of roles and role groups lets an app call: cmdlet -> parameters."""
    roles: set[str] = set()
    for name in assigned:
        roles.update(ROLE_GROUPS.get(name, (name,)))
    entries: dict[str, set[str]] = {}
    for role in roles:
        for cmdlet, parameters in MANAGEMENT_ROLES.get(role, {}).items():
            entries.setdefault(cmdlet, set()).update(parameters)
    return entries


def known_role(name: str) -> bool:
    return name in MANAGEMENT_ROLES or name in ROLE_GROUPS


class CmdletError(Exception):
    """A cmdlet that failed inside Exchange: rendered in the InvokeCommand error envelope."""

    def __init__(
        self,
        exception_type: str,
        text: str,
        *,
        status: int = 400,
        code: str = "BadRequest",
        error_id: str = "",
        summary: str = EXECUTION_FAILED,
        internal: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(text)
        self.exception_type, self.text, self.status, self.code = exception_type, text, status, code
        self.error_id, self.summary = error_id, summary
        # A failure inside the cmdlet reports a generic wrapper exception here; parameter trouble
        # reports the real exception and text (both seen in captures).
        self.internal = internal or (
            DIRECT_INVOKE,
            f"Exception of type '{DIRECT_INVOKE}' was thrown.",
        )

    def body(self) -> JsonDict:
        internal_type, internal_text = self.internal
        return {
            "error": {
                "code": self.code,
                "message": self.summary,
                "details": [
                    {
                        "code": "Client",
                        "target": "",
                        "message": f"{self.error_id}|{self.exception_type}|{self.text}",
                    }
                ],
                "innererror": {
                    "message": self.summary,
                    "type": ODATA_EXCEPTION,
                    "stacktrace": "",
                    "internalexception": {
                        "message": internal_text,
                        "type": internal_type,
                        "stacktrace": "",
                    },
                },
                "adminapi.warnings@odata.type": "#Collection(String)",
                "@adminapi.warnings": [],
            }
        }


def object_not_found(identity: str) -> CmdletError:
    return CmdletError(
        OBJECT_NOT_FOUND,
        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
        f"'{SERVER}'.",
        status=404,
        code="NotFound",
        error_id="Ex6F9304",
    )


def recipient_not_found(member: str) -> CmdletError:
    return CmdletError(
        OBJECT_NOT_FOUND,
        f'Couldn\'t find object "{member}". Please make sure that it was spelled correctly or '
        "specify a different object.",
        status=404,
        code="NotFound",
        error_id="Ex94914C",
    )


def parameter_error(name: str, style: ParameterErrorStyle) -> CmdletError:
    if style == "rest":
        exception_type = PARAMETER_SET
        text = (
            "Parameter set cannot be resolved using the specified named parameters. "
            f"Invalid cmdlet parameters specified. {name}"
        )
    else:
        exception_type = PARAMETER_BINDING
        text = f"A parameter cannot be found that matches parameter name '{name}'."
    return CmdletError(
        exception_type, text, summary=INVALID_OPERATION, internal=(exception_type, text)
    )


def missing_parameter(name: str) -> CmdletError:
    text = f"Cannot process command because of one or more missing mandatory parameters: {name}."
    return CmdletError(
        PARAMETER_BINDING, text, summary=INVALID_OPERATION, internal=(PARAMETER_BINDING, text)
    )


class ExchangeFront:
    def __init__(self, ctx: Context, entra: EntraFront) -> None:
        self.ctx = ctx
        self.entra = entra
        self.parameter_error_style: ParameterErrorStyle = "rest"
        # Warnings a cmdlet (lower-case name) adds to every successful answer, for tests.
        self.warnings: dict[str, list[str]] = {}
        unknown = {
            role
            for roles in ctx.state.exchange_roles.values()
            for role in roles
            if not known_role(role)
        }
        if unknown:
            raise ValueError(f"unknown Exchange roles in the seed: {sorted(unknown)}")

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/adminapi/beta/{tenant}/InvokeCommand", self.invoke)]

    # ------------------------------------------------------------ Python API for tests

    def roles_of(self, app_id: str) -> set[str]:
        """The Exchange roles and role groups assigned to ``app_id``."""
        return set(self.ctx.state.exchange_roles.get(app_id, set()))

    def assign_role(self, app_id: str, role: str) -> None:
        """``New-ManagementRoleAssignment -App`` (or membership of a role group)."""
        self._check_role(app_id, role)
        self.ctx.state.exchange_roles.setdefault(app_id, set()).add(role)

    def remove_role(self, app_id: str, role: str) -> None:
        self._check_role(app_id, role)
        self.ctx.state.exchange_roles.get(app_id, set()).discard(role)

    def _check_role(self, app_id: str, role: str) -> None:
        if self.ctx.state.service_principal_for(app_id) is None:
            raise KeyError(app_id)
        if not known_role(role):
            raise ValueError(f"unknown Exchange role {role!r}")

    def add_warning(self, cmdlet: str, text: str) -> None:
        """Make every successful ``cmdlet`` answer carry ``text`` in ``@adminapi.warnings``."""
        self.warnings.setdefault(cmdlet.lower(), []).append(text)

    def clear_warnings(self) -> None:
        self.warnings.clear()

    def throttle(
        self, status: int = 429, *, retry_after: str | None = "1", count: int | None = 1
    ) -> FaultRule:
        """Refuse the next ``count`` calls with the tenant concurrency text (plain text)."""
        return self.ctx.behaviour.add_fault(
            FaultRule(
                path=r"/InvokeCommand$",
                method="POST",
                status=status,
                code="",
                message=TENANT_CONCURRENCY,
                retry_after=retry_after,
                count=count,
            )
        )

    # ------------------------------------------------------------ HTTP

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

    def _fault(self, rule: FaultRule) -> web.Response:
        headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
        if not rule.code:
            # The tenant concurrency refusal comes as bare text, not as a JSON envelope.
            return web.Response(
                text=rule.message, status=rule.status, headers=headers, content_type="text/plain"
            )
        return web.json_response(
            {"error": {"code": rule.code, "message": rule.message}},
            status=rule.status,
            headers=headers,
        )

    async def _invoke(self, request: web.Request, record: RequestRecord) -> web.Response:
        rule = self.ctx.behaviour.match_fault("POST", request.path)
        if rule is not None and rule.action == "status":
            record.fault = rule.id
            return self._fault(rule)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._auth_error(401, "The access token is missing.")
        try:
            claims = self.entra.verify_access_token(token.strip(), EXCHANGE_RESOURCE)
        except jwt.PyJWTError:
            return self._auth_error(
                401, "The access token is invalid, expired or for another audience."
            )
        app_id = str(claims.get("appid"))
        record.app_id = app_id
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
            await asyncio.sleep(self.ctx.behaviour.knobs.latency_ms / 1000)
        try:
            payload = await request.json()
        except ValueError:
            return self._error(
                CmdletError(
                    "System.ArgumentException",
                    "The request body is not valid JSON.",
                    summary=INVALID_OPERATION,
                )
            )
        cmdlet_input = payload.get("CmdletInput") if isinstance(payload, dict) else None
        if not isinstance(cmdlet_input, dict) or not isinstance(
            cmdlet_input.get("CmdletName"), str
        ):
            return self._error(
                CmdletError(
                    "System.ArgumentException",
                    "CmdletInput.CmdletName is required.",
                    summary=INVALID_OPERATION,
                )
            )
        name = cmdlet_input["CmdletName"]
        params = cmdlet_input.get("Parameters") or {}
        if not isinstance(params, dict):
            return self._error(missing_parameter("Identity"))
        handler = {
            "add-distributiongroupmember": self.add_member,
            "remove-distributiongroupmember": self.remove_member,
            "get-distributiongroupmember": self.get_members,
            "test-applicationaccesspolicy": self.test_policy,
        }.get(name.lower())
        if handler is None:
            return self._error(
                CmdletError(
                    COMMAND_NOT_FOUND,
                    f"The term '{name}' is not recognized as a name of a cmdlet.",
                    summary=INVALID_OPERATION,
                )
            )
        allowed = granted(self.ctx.state.exchange_roles.get(app_id, set())).get(name.lower())
        if allowed is None:
            text = f"User is not allowed to call {CMDLETS[name.lower()]}"
            return web.json_response(
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": text,
                        "innererror": {"message": text, "type": ODATA_EXCEPTION},
                    }
                },
                status=401,
            )
        try:
            for parameter in params:
                # A parameter no assigned role grants does not exist for this caller.
                if str(parameter).lower() not in allowed:
                    raise parameter_error(str(parameter), self.parameter_error_style)
            # PowerShell parameter names are not case-sensitive.
            value, extra = handler({str(k).lower(): v for k, v in params.items()}, request)
        except CmdletError as exc:
            return self._error(exc)
        tid = self.ctx.state.tenant_id
        body: JsonDict = {
            "@odata.context": f"{self.ctx.base_url}/adminapi/beta/{tid}/$metadata#Collection("
            "Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": list(self.warnings.get(name.lower(), [])),
            **extra,
            "value": value,
        }
        return web.json_response(body)

    @staticmethod
    def _error(error: CmdletError) -> web.Response:
        return web.json_response(error.body(), status=error.status)

    # ------------------------------------------------------------ resolution

    def _group(self, params: dict[str, Any]) -> Group:
        identity = str(params.get("identity") or "")
        if not identity:
            raise missing_parameter("Identity")
        group = self.ctx.state.exchange_group(identity)
        if group is None:
            raise object_not_found(identity)
        return group

    def _member(self, params: dict[str, Any]) -> User:
        member = str(params.get("member") or "")
        if not member:
            raise missing_parameter("Member")
        user = self.ctx.state.recipient(member)
        if user is None or (not user.has_mailbox and user.mail is None):
            raise recipient_not_found(member)
        return user

    def _check_manager(self, params: dict[str, Any], group: Group) -> None:
        if group.securityEnabled and not params.get("bypasssecuritygroupmanagercheck"):
            raise CmdletError(
                NOT_MANAGER,
                "You don't have sufficient permissions. This operation can only be performed by a "
                "manager of the group.",
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
                ALREADY_MEMBER,
                f'The recipient "{params["member"]}" is already a member of the group '
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
            # The real text is not published; the exception type is (public client code).
            raise CmdletError(
                NOT_MEMBER,
                f'The recipient "{params["member"]}" isn\'t a member of the group '
                f'"{group.displayName}".',
                status=404,
                code="NotFound",
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
        identity = str(params.get("identity") or "")
        app_id = str(params.get("appid") or "")
        if not identity or not app_id:
            raise missing_parameter("Identity" if not identity else "AppId")
        user = self.ctx.state.recipient(identity)
        if user is None or not user.has_mailbox:
            raise object_not_found(identity)
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
