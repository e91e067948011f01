"""Calendar events: create/update/delete, calendarView expansion and calendarView delta.

Delta state lives server-side behind opaque tokens, so the sandbox can "expire" them and the
sync engine's 410 resync path runs. Deltas are computed by diffing snapshots of instance ids and
change keys, which also reports events that left the window as ``@removed``. As the ``event:
delta`` page says, an event *outside* the round's window that was added, changed or deleted
since the previous call is also reported under ``@removed`` with reason ``deleted``: the
mailbox's change log tells which.

A create that reuses a ``transactionId`` is refused with 400 ``ErrorDuplicateTransactionId``
and the existing event's id (client code and issue reports); the ``duplicate_transaction`` knob
switches to the other answers the product must survive.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from syncwarden.sandbox.calendar import (
    EVENT_PROPERTIES,
    CalendarEvent,
    apply_fields,
    new_event_id,
    parse_datetime_tz,
    zone,
)
from syncwarden.sandbox.context import Context
from syncwarden.sandbox.graph_core import (
    READ_CALENDARS,
    WRITE_CALENDARS,
    GraphRequest,
    GraphResponse,
    Route,
    error_body,
    json_body,
    no_content,
    ok,
    paged,
)
from syncwarden.sandbox.odata import (
    Evaluator,
    FilterError,
    GraphError,
    JsonDict,
    Node,
    parse_filter,
    parse_select,
    parse_top,
    project,
    root_properties,
)

EVENT_TYPE = "microsoft.graph.event"
FILTERABLE = (*EVENT_PROPERTIES, "singleValueExtendedProperties")
_EXPAND = re.compile(
    r"^singleValueExtendedProperties(?:\(\$filter=(?P<filter>.+)\))?$", re.IGNORECASE
)
_PREFER_TZ = re.compile(r'outlook\.timezone\s*=\s*"([^"]+)"', re.IGNORECASE)
_PREFER_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
REMOVED: JsonDict = {"@removed": {"reason": "deleted"}}
DELTA_FORBIDDEN = ("$select", "$filter", "$orderby", "$search", "$expand", "$top")


def item_not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def invalid_param(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidParameter", message)


def parse_query_time(raw: str, name: str) -> dt.datetime:
    text = raw.strip().replace(" ", "+")
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise invalid_param(f"The value '{raw}' of parameter '{name}' is invalid.") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


@dataclass
class DeltaState:
    mailbox: str
    start: dt.datetime
    end: dt.datetime
    snapshot: dict[str, str]
    # The mailbox change sequence this state has seen; later changes outside the window are
    # reported as removed.
    seen_change: int = 0


@dataclass
class PendingDelta:
    state: DeltaState
    items: list[JsonDict]


class EventsFront:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.delta_tokens: dict[str, DeltaState] = {}
        self.pending: dict[str, PendingDelta] = {}
        # (mailbox id, transactionId) -> id of the deleted event that used it.
        self.spent_transactions: dict[tuple[str, str], str] = {}

    def routes(self) -> list[Route]:
        m = "user"
        return [
            Route("POST", "/users/{user}/events", self.create, WRITE_CALENDARS, m),
            Route("GET", "/users/{user}/events", self.list_events, READ_CALENDARS, m),
            Route("GET", "/users/{user}/events/{event}", self.get_event, READ_CALENDARS, m),
            Route("PATCH", "/users/{user}/events/{event}", self.update, WRITE_CALENDARS, m),
            Route("DELETE", "/users/{user}/events/{event}", self.delete, WRITE_CALENDARS, m),
            Route("GET", "/users/{user}/calendarView", self.calendar_view, READ_CALENDARS, m),
            Route("GET", "/users/{user}/calendarView/delta", self.delta, READ_CALENDARS, m),
        ]

    def expire_delta_tokens(self) -> int:
        count = len(self.delta_tokens) + len(self.pending)
        self.delta_tokens.clear()
        self.pending.clear()
        return count

    # ------------------------------------------------------------ helpers

    def _events(self, req: GraphRequest) -> dict[str, CalendarEvent]:
        assert req.mailbox is not None
        return self.ctx.state.mailbox_events(req.mailbox.id)

    def _event(self, req: GraphRequest) -> CalendarEvent:
        key = req.params["event"]
        found = self._events(req).get(key)
        if found is None:
            raise item_not_found()
        return found

    def _tz(self, req: GraphRequest) -> str:
        match = _PREFER_TZ.search(req.headers.get("Prefer", ""))
        if match is None:
            return "UTC"
        zone(match.group(1))
        return match.group(1)

    def _page_size(self, req: GraphRequest, default: int) -> int:
        match = _PREFER_PAGE.search(req.headers.get("Prefer", ""))
        return max(1, min(int(match.group(1)), 1000)) if match else default

    def _expand_filter(self, req: GraphRequest) -> Node | bool | None:
        raw = req.query.get("$expand")
        if raw is None:
            return False
        match = _EXPAND.match(raw.strip())
        if match is None:
            raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: '{raw}'.")
        if match.group("filter") is None:
            return None
        try:
            return parse_filter(match.group("filter"))
        except FilterError as exc:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {exc}") from exc

    def _render(self, req: GraphRequest, event: CalendarEvent, data: JsonDict) -> JsonDict:
        select = parse_select(
            req.query.get("$select"), EVENT_PROPERTIES, EVENT_TYPE, "RequestBroker--ParseUri"
        )
        shaped = project(data, select, ("@odata.etag", *EVENT_PROPERTIES)) if select else data
        if select:
            shaped = {"@odata.etag": data["@odata.etag"], **shaped}
        expand = self._expand_filter(req)
        if expand is not False:
            props = event.extended
            if expand is not None and not isinstance(expand, bool):
                evaluator = Evaluator(case_insensitive=True)
                props = [p for p in props if evaluator.test(expand, p, {})]
            shaped["singleValueExtendedProperties"] = [dict(p) for p in props]
        return shaped

    def _notify(self, req: GraphRequest, event_id: str, change: str) -> None:
        assert req.mailbox is not None
        self.ctx.state.record_change(req.mailbox.id, event_id, change)

    # ------------------------------------------------------------ CRUD

    async def create(self, req: GraphRequest) -> GraphResponse:
        body = json_body(req)
        events = self._events(req)
        transaction = body.get("transactionId")
        if transaction is not None:
            existing = next((e for e in events.values() if e.transaction_id == transaction), None)
            if existing is not None:
                return self._duplicate_transaction(req, existing)
            assert req.mailbox is not None
            spent = self.spent_transactions.get((req.mailbox.id, str(transaction)))
            knobs = self.ctx.behaviour.knobs
            if spent and knobs.spent_transactions_kept and knobs.duplicate_transaction != "replay":
                return self._duplicate_transaction(req, None, spent)
        for required in ("start", "end"):
            if required not in body:
                raise GraphError(
                    400, "ErrorInvalidRequest", f"The event's {required} time is required."
                )
        start, start_tz = parse_datetime_tz(body["start"], "start")
        end, end_tz = parse_datetime_tz(body["end"], "end")
        event = CalendarEvent(
            id=new_event_id(), start=start, end=end, start_tz=start_tz, end_tz=end_tz
        )
        apply_fields(event, body, creating=True)
        event.transaction_id = transaction
        events[event.id] = event
        self._notify(req, event.id, "created")
        return ok(self._with_context(req, event), 201)

    def _duplicate_transaction(
        self, req: GraphRequest, existing: CalendarEvent | None, deleted_id: str | None = None
    ) -> GraphResponse:
        """The answer to a reused transactionId; ``existing`` is None when its event is deleted."""
        answer = self.ctx.behaviour.knobs.duplicate_transaction
        if answer == "replay" and existing is not None:
            return ok(self._with_context(req, existing), 201)
        error = GraphError(
            409 if answer == "conflict" else 400,
            "ErrorDuplicateTransactionId",
            "Your request can't be completed. The TransactionId specified in the request has "
            "already been used to create a different event.",
        )
        body = error_body(error, req.request_id, req.client_request_id)
        if answer == "error":
            body["error"]["@event.existingEventId"] = existing.id if existing else deleted_id
        return GraphResponse(error.status, body)

    def _with_context(self, req: GraphRequest, event: CalendarEvent) -> JsonDict:
        assert req.mailbox is not None
        return {
            "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#users('{req.mailbox.id}')"
            "/events/$entity",
            **self._render(req, event, event.to_graph(self._tz(req))),
        }

    async def get_event(self, req: GraphRequest) -> GraphResponse:
        return ok(self._with_context(req, self._event(req)))

    async def update(self, req: GraphRequest) -> GraphResponse:
        event = self._event(req)
        apply_fields(event, json_body(req), creating=False)
        event.touch()
        self._notify(req, event.id, "updated")
        return ok(self._with_context(req, event))

    async def delete(self, req: GraphRequest) -> GraphResponse:
        event = self._event(req)
        del self._events(req)[event.id]
        if event.transaction_id is not None:
            assert req.mailbox is not None
            self.spent_transactions[(req.mailbox.id, event.transaction_id)] = event.id
        self._notify(req, event.id, "deleted")
        return no_content()

    async def list_events(self, req: GraphRequest) -> GraphResponse:
        for name in req.query:
            if name.startswith("$") and name not in (
                "$filter",
                "$select",
                "$top",
                "$expand",
                "$skiptoken",
                "$orderby",
            ):
                raise GraphError(400, "BadRequest", f"Query option '{name}' is not allowed.")
        node: Node | None = None
        if "$filter" in req.query:
            try:
                node = parse_filter(req.query["$filter"])
            except FilterError as exc:
                raise GraphError(400, "BadRequest", f"Invalid filter clause: {exc}") from exc
            for name in root_properties(node):
                if name not in FILTERABLE:
                    raise GraphError(
                        400,
                        "RequestBroker--ParseUri",
                        f"Could not find a property named '{name}' on type '{EVENT_TYPE}'.",
                    )
        top = parse_top(req.query.get("$top"), self._page_size(req, 10), 1000)
        tz = self._tz(req)
        evaluator = Evaluator(case_insensitive=True)
        items: list[JsonDict] = []
        for event in sorted(self._events(req).values(), key=lambda e: e.created):
            data = event.to_graph(tz)
            probe = {**data, "singleValueExtendedProperties": event.extended}
            if node is not None and not evaluator.test(node, probe, {}):
                continue
            items.append(self._render(req, event, data))
        assert req.mailbox is not None
        return ok(paged(self.ctx, req, items, f"users('{req.mailbox.id}')/events", top=top))

    # ------------------------------------------------------------ views

    def _window(self, req: GraphRequest) -> tuple[dt.datetime, dt.datetime]:
        lowered = {k.lower(): v for k, v in req.query.items()}
        if "startdatetime" not in lowered or "enddatetime" not in lowered:
            raise invalid_param(
                "This request requires a time window specified by the query string parameters "
                "StartDateTime and EndDateTime."
            )
        start = parse_query_time(lowered["startdatetime"], "startDateTime")
        end = parse_query_time(lowered["enddatetime"], "endDateTime")
        if end <= start:
            raise invalid_param("The parameter 'EndDateTime' must be later than 'StartDateTime'.")
        return start, end

    def _instances(
        self, mailbox_id: str, start: dt.datetime, end: dt.datetime, tz: str
    ) -> list[JsonDict]:
        found: list[tuple[dt.datetime, JsonDict]] = []
        for event in self.ctx.state.mailbox_events(mailbox_id).values():
            for begin, finish in event.instances(start, end):
                occurrence = (begin, finish) if event.recurrence else None
                data = event.to_graph(tz, instance=occurrence)
                if occurrence is not None:
                    data["changeKey"] = f"{event.change_key}.{begin:%Y%m%d%H%M}"
                    data["@odata.etag"] = f'W/"{data["changeKey"]}"'
                found.append((begin, data))
        return [data for _, data in sorted(found, key=lambda pair: pair[0])]

    async def calendar_view(self, req: GraphRequest) -> GraphResponse:
        start, end = self._window(req)
        top = parse_top(req.query.get("$top"), self._page_size(req, 10), 1000)
        select = parse_select(
            req.query.get("$select"), EVENT_PROPERTIES, EVENT_TYPE, "RequestBroker--ParseUri"
        )
        assert req.mailbox is not None
        items = self._instances(req.mailbox.id, start, end, self._tz(req))
        if select:
            items = [{"@odata.etag": i["@odata.etag"], **project(i, select, ())} for i in items]
        items = self._with_expanded_properties(req, items)
        return ok(paged(self.ctx, req, items, f"users('{req.mailbox.id}')/calendarView", top=top))

    def _with_expanded_properties(self, req: GraphRequest, items: list[JsonDict]) -> list[JsonDict]:
        """Occurrences carry their series master's extended properties, as in Graph."""
        expand = self._expand_filter(req)
        if expand is False:
            return items
        assert req.mailbox is not None
        events = self.ctx.state.mailbox_events(req.mailbox.id)
        evaluator = Evaluator(case_insensitive=True)
        expanded = []
        for item in items:
            owner = events.get(item.get("seriesMasterId") or item["id"])
            props = list(owner.extended) if owner is not None else []
            if expand is not None and not isinstance(expand, bool):
                props = [p for p in props if evaluator.test(expand, p, {})]
            expanded.append({**item, "singleValueExtendedProperties": [dict(p) for p in props]})
        return expanded

    async def delta(self, req: GraphRequest) -> GraphResponse:
        assert req.mailbox is not None
        forbidden = [name for name in req.query if name in DELTA_FORBIDDEN]
        if forbidden:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "The following parameters are not supported with change tracking over the "
                f"'CalendarView' resource: '{', '.join(forbidden)}'.",
            )
        size = self._page_size(req, 10)
        if "$skiptoken" in req.query:
            pending = self.pending.get(req.query["$skiptoken"])
            if pending is None or pending.state.mailbox != req.mailbox.id:
                raise self._gone()
            del self.pending[req.query["$skiptoken"]]
            return self._delta_page(req, pending, size)
        if "$deltatoken" in req.query:
            state = self.delta_tokens.get(req.query["$deltatoken"])
            if state is None or state.mailbox != req.mailbox.id:
                raise self._gone()
            current = self._instances(req.mailbox.id, state.start, state.end, "UTC")
            snapshot = {i["id"]: i["changeKey"] for i in current}
            changed = [i for i in current if state.snapshot.get(i["id"]) != i["changeKey"]]
            gone = [event_id for event_id in state.snapshot if event_id not in snapshot]
            gone += self._changed_outside(req.mailbox.id, state, current, set(gone))
            removed = [
                {"@odata.type": "#microsoft.graph.event", "id": event_id, **REMOVED}
                for event_id in gone
            ]
            fresh = DeltaState(
                req.mailbox.id, state.start, state.end, snapshot, self.ctx.state.change_seq
            )
            return self._delta_page(req, PendingDelta(fresh, changed + removed), size)
        start, end = self._window(req)
        current = self._instances(req.mailbox.id, start, end, "UTC")
        state = DeltaState(
            req.mailbox.id,
            start,
            end,
            {i["id"]: i["changeKey"] for i in current},
            self.ctx.state.change_seq,
        )
        return self._delta_page(req, PendingDelta(state, current), size)

    def _changed_outside(
        self, mailbox_id: str, state: DeltaState, current: list[JsonDict], reported: set[str]
    ) -> list[str]:
        """Events outside the window added, changed or deleted since the state was taken."""
        in_window = {i["id"] for i in current} | {
            i["seriesMasterId"] for i in current if i.get("seriesMasterId")
        }
        found: list[str] = []
        for seq, event_id in self.ctx.state.change_log.get(mailbox_id, []):
            if seq <= state.seen_change or event_id in in_window or event_id in reported:
                continue
            reported.add(event_id)
            found.append(event_id)
        return found

    def _gone(self) -> GraphError:
        return GraphError(
            410,
            "SyncStateNotFound",
            "The sync state generation is not found or has expired. Please perform a full "
            "resync (resyncRequired).",
        )

    def _delta_page(self, req: GraphRequest, pending: PendingDelta, size: int) -> GraphResponse:
        assert req.mailbox is not None
        link = f"{self.ctx.base_url}/v1.0/users/{req.params['user']}/calendarView/delta"
        page, rest = pending.items[:size], pending.items[size:]
        body: JsonDict = {
            "@odata.context": f"{self.ctx.base_url}/v1.0/$metadata#Collection(event)",
        }
        if rest:
            token = secrets.token_urlsafe(24)
            self.pending[token] = PendingDelta(pending.state, rest)
            body["@odata.nextLink"] = f"{link}?$skiptoken={token}"
        else:
            token = secrets.token_urlsafe(24)
            self.delta_tokens[token] = pending.state
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token}"
        body["value"] = page
        return ok(body)
