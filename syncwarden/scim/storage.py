"""Where scim2-server keeps Users: the ``scim_users`` table, and what each change means.

scim2-server validates every request, applies PUT and PATCH to the stored resource and builds
the responses; it calls this storage with whole resources. Each write here first asks the
provisioning intake to open the ticket the change means (enroll, remove, move), then stores the
new state. In that order a failure leaves the resource as it was, so Entra ID's retry of the same
request finds the same difference and asks again, and the intake answers a second ask with the
ticket already open (it never opens two for one person).

Filters: ``userName eq`` and ``externalId eq`` (what Entra ID matches on) are answered by an
index; any other filter is evaluated by scim2-models over the stored Users, which is fine for the
number of people one calendar-sync service provisions but not for a whole directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Union, cast

from scim2_models import (
    ForbiddenException,
    Meta,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    SearchRequest,
    UniquenessException,
    User,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.storage import AsyncScimStorage, SearchPage
from scim2_server.utils import parametrize
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now
from syncwarden.scim.records import ScimUser
from syncwarden.workflows.provisioning import (
    Assignment,
    DirectoryUnavailableError,
    ProvisioningIntake,
    ProvisioningOutcome,
)


class ServiceUnavailableException(SCIMException):
    """503: a dependency (the directory) did not answer; the client retries the same request."""

    status = 503
    _default_detail = "Service temporarily unavailable"


_INDEXED = {"username": ScimUser.user_name_key, "externalid": ScimUser.external_id}


def version_tag(version: int) -> str:
    return f'W/"{version}"'


def assignment_of(resource: Resource[Any], directory_id: str | None = None) -> Assignment:
    """What a User says about calendar sync: who, whether assigned, which work address.

    ``active`` left out counts as assigned: Entra ID always sends it, and a User created
    without it was still pushed by the identity provider."""
    user = cast(User[Any], resource)
    return Assignment(
        user_name=user.user_name or "",
        active=user.active is not False,
        external_id=user.external_id,
        work_email=_work_email(user),
        directory_id=directory_id,
    )


def _work_email(user: User[Any]) -> str | None:
    """``emails[type eq "work"].value``, else the primary address, else the first."""
    emails = [e for e in user.emails or [] if e.value]
    work = [e for e in emails if (e.type or "").lower() == "work"]
    primary = [e for e in emails if e.primary]
    for email in [*work, *primary, *emails][:1]:
        return str(email.value)
    return None


class ScimUserStorage(AsyncScimStorage):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        model: type[Resource[Any]],
        intake: ProvisioningIntake,
        *,
        pilot_cap: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self._intake = intake
        self._pilot_cap = pilot_cap
        self._clock = clock

    # ----------------------------------------------------------------------------- reading

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        async with self._sessions() as session:
            return self._resource(await self._row(session, resource_id))

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        start = search_request.start_index_0 or 0
        count = search_request.count
        scim_filter = search_request.filter
        query = select(ScimUser).order_by(ScimUser.created_at, ScimUser.id)
        async with self._sessions() as session:
            if scim_filter is None:
                total = await session.scalar(select(func.count()).select_from(ScimUser))
                page = query.offset(start)
                if count is not None:
                    page = page.limit(count)
                rows = (await session.scalars(page)).all()
                return SearchPage(int(total or 0), [self._resource(row) for row in rows])
            indexed = _indexed(scim_filter, query)
            rows = (await session.scalars(indexed if indexed is not None else query)).all()
        typed = parametrize(ScimFilter, Union[self._model])(str(scim_filter))  # noqa: UP007
        found = [r for r in (self._resource(row) for row in rows) if typed.match(r)]
        stop = None if count is None else start + count
        return SearchPage(len(found), found[start:stop])

    # ----------------------------------------------------------------------------- writing

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        wanted = assignment_of(resource)
        key = wanted.user_name.lower()
        async with self._sessions() as session:
            if await session.scalar(select(ScimUser.id).where(ScimUser.user_name_key == key)):
                raise UniquenessException(detail=f"userName {wanted.user_name!r} is taken")
            if wanted.active:
                await self._check_cap(session)
        outcome = await self._apply(None, wanted)
        now = self._clock()
        resource = resource.model_copy(deep=True)
        resource.id = uuid.uuid4().hex
        resource.meta = Meta(
            resource_type=resource_type.name, created=now, last_modified=now, version=version_tag(1)
        )
        row = ScimUser(
            id=resource.id,
            user_name_key=key,
            user_name=wanted.user_name,
            external_id=wanted.external_id,
            active=wanted.active,
            directory_id=outcome.directory_id,
            resource=_stored(resource),
            version=1,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise UniquenessException(detail=f"userName {wanted.user_name!r} is taken") from None
        return self._resource(row)

    async def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        async with self._sessions() as session:
            row = await self._row(session, cast(str, resource.id))
            _check_version(row, expected_version)
            before = assignment_of(self._resource(row), row.directory_id)
            after = assignment_of(resource, row.directory_id)
            key = after.user_name.lower()
            if key != row.user_name_key and await session.scalar(
                select(ScimUser.id).where(ScimUser.user_name_key == key)
            ):
                raise UniquenessException(detail=f"userName {after.user_name!r} is taken")
            if after.active and not before.active:
                await self._check_cap(session)
        directory_id = row.directory_id
        if _meaningful(before, after):
            directory_id = (await self._apply(before, after)).directory_id or directory_id
        now = self._clock()
        resource = resource.model_copy(deep=True)
        resource.meta = Meta(
            resource_type=resource_type.name,
            created=row.created_at,
            last_modified=now,
            version=version_tag(row.version + 1),
        )
        try:
            async with self._sessions() as session, session.begin():
                stored = await self._row(session, row.id, for_update=True)
                _check_version(stored, version_tag(row.version))
                stored.user_name_key = key
                stored.user_name = after.user_name
                stored.external_id = after.external_id
                stored.active = after.active
                stored.directory_id = directory_id
                stored.resource = _stored(resource)
                stored.version = row.version + 1
                stored.updated_at = now
                result = self._resource(stored)
        except IntegrityError:
            raise UniquenessException(detail=f"userName {after.user_name!r} is taken") from None
        return result

    async def delete(
        self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None
    ) -> None:
        async with self._sessions() as session:
            row = await self._row(session, resource_id)
            _check_version(row, expected_version)
            before = assignment_of(self._resource(row), row.directory_id)
        await self._apply(before, None)
        async with self._sessions() as session, session.begin():
            stored = await session.get(ScimUser, resource_id)
            if stored is not None:
                await session.delete(stored)

    # ----------------------------------------------------------------------------- helpers

    async def _apply(
        self, before: Assignment | None, after: Assignment | None
    ) -> ProvisioningOutcome:
        try:
            return await self._intake.apply(before, after)
        except DirectoryUnavailableError as error:
            raise ServiceUnavailableException(detail=str(error)) from None

    async def _check_cap(self, session: AsyncSession) -> None:
        if not self._pilot_cap:
            return
        active = await session.scalar(
            select(func.count()).select_from(ScimUser).where(ScimUser.active.is_(True))
        )
        if int(active or 0) >= self._pilot_cap:
            raise ForbiddenException(
                detail=f"the pilot is full: {self._pilot_cap} people are provisioned to "
                "Syncwarden, its pilot cap; an administrator raises SYNCWARDEN_SCIM__PILOT_CAP "
                "to let more in"
            )

    @staticmethod
    async def _row(
        session: AsyncSession, resource_id: str, *, for_update: bool = False
    ) -> ScimUser:
        query = select(ScimUser).where(ScimUser.id == resource_id)
        if for_update:
            query = query.with_for_update()
        row = await session.scalar(query)
        if row is None:
            raise NotFoundException(detail=f"User {resource_id!r} not found")
        return row

    def _resource(self, row: ScimUser) -> Resource[Any]:
        return self._model.model_validate(row.resource)


def _stored(resource: Resource[Any]) -> dict[str, Any]:
    """The resource as JSON, meta without its location (the server adds the URL it is served
    at, which a stored copy cannot know)."""
    data = resource.model_dump(mode="json", exclude_none=True, by_alias=True)
    meta = data.get("meta")
    if isinstance(meta, dict):
        meta.pop("location", None)
    return data


def _check_version(row: ScimUser, expected: str | None) -> None:
    if expected is not None and expected != version_tag(row.version):
        raise PreconditionFailedException(
            detail=f"User {row.id!r} is at version {version_tag(row.version)}"
        )


def _meaningful(before: Assignment, after: Assignment) -> bool:
    """Whether calendar sync cares: assigned or not, the name, the work address."""
    return (
        before.active != after.active
        or before.user_name.lower() != after.user_name.lower()
        or (before.work_email or "").lower() != (after.work_email or "").lower()
    )


def _indexed(scim_filter: ScimFilter[Any], query: Select[ScimUser]) -> Select[ScimUser] | None:
    """``query`` narrowed by an index when the filter is ``userName eq`` or ``externalId eq``
    (the rows it keeps are still matched by the filter itself); None for any other filter."""
    node = scim_filter.ast
    if (
        not isinstance(node, Comparison)
        or node.op != CompareOperator.eq
        or not isinstance(node.value, str)
    ):
        return None
    name = str(node.attr_path).rsplit(":", 1)[-1].lower()
    column = _INDEXED.get(name)
    if column is None:
        return None
    value = node.value.lower() if name == "username" else node.value
    return query.where(column == value)
