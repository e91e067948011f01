"""Query rules shared by the directory collections (users, groups, apps): $filter, $select, $top.

Directory objects accept only "basic" queries unless the caller opts into advanced queries with
``ConsistencyLevel: eventual`` and ``$count=true``; Graph's 400 for anything else is reproduced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sandbox.graph_core import GraphRequest
from sandbox.odata import (
    Evaluator,
    FilterError,
    JsonDict,
    Node,
    bad_request,
    needs_advanced_query,
    parse_filter,
    parse_select,
    parse_top,
    project,
    root_properties,
    unsupported_query,
)

SUPPORTED_OPTIONS = {
    "$filter",
    "$select",
    "$top",
    "$count",
    "$search",
    "$orderby",
    "$skiptoken",
    "$expand",
}


def check_options(req: GraphRequest, allowed: Iterable[str] = SUPPORTED_OPTIONS) -> None:
    allowed_set = set(allowed)
    for name in req.query:
        if name.startswith("$") and name not in allowed_set:
            raise bad_request(f"Query option '{name}' is not allowed.", "BadRequest")


def advanced_enabled(req: GraphRequest) -> bool:
    return (req.headers.get("ConsistencyLevel") or "").lower() == "eventual"


def count_requested(req: GraphRequest) -> bool:
    raw = req.query.get("$count")
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise bad_request(f"Invalid value '{raw}' for $count query option found.", "BadRequest")
    return raw.lower() == "true"


def directory_filter(req: GraphRequest, type_name: str, filterable: Sequence[str]) -> Node | None:
    raw = req.query.get("$filter")
    wants_count = count_requested(req)
    advanced = advanced_enabled(req)
    if "$count" in req.query and wants_count and not advanced:
        raise unsupported_query(
            "$count is not currently supported without the ConsistencyLevel header."
        )
    if "$search" in req.query and not advanced:
        raise unsupported_query(
            "Request with $search query parameter only works through MSGraph with a special "
            "request header: 'ConsistencyLevel: eventual'"
        )
    if raw is None:
        return None
    try:
        node = parse_filter(raw)
    except FilterError as exc:
        raise bad_request(f"Invalid filter clause: {exc}", "BadRequest") from exc
    known = {name.lower() for name in filterable}
    for name in root_properties(node):
        if name.lower() not in known:
            raise bad_request(f"Could not find a property named '{name}' on type '{type_name}'.")
    if needs_advanced_query(node) and not (advanced and wants_count):
        raise unsupported_query("Unsupported or invalid query filter clause specified.")
    return node


def apply_search(req: GraphRequest, items: list[JsonDict]) -> list[JsonDict]:
    """``$search="displayName:av"``: tokenised prefix match, joined with AND/OR as Graph does."""
    raw = req.query.get("$search")
    if raw is None:
        return items
    clauses: list[tuple[str, str]] = []
    for term in raw.replace(" AND ", " OR ").split(" OR "):
        term = term.strip().strip('"')
        prop, sep, value = term.partition(":")
        if not sep:
            raise bad_request('Syntax error: expected "property:value" in $search.', "BadRequest")
        clauses.append((prop, value.lower()))
    use_and = " AND " in raw

    def matches(item: JsonDict, prop: str, value: str) -> bool:
        text = str(item.get(prop) or "").lower()
        return any(
            word.startswith(value) for word in text.replace(".", " ").replace("@", " ").split()
        ) or text.startswith(value)

    if use_and:
        return [i for i in items if all(matches(i, p, v) for p, v in clauses)]
    return [i for i in items if any(matches(i, p, v) for p, v in clauses)]


def apply_orderby(
    req: GraphRequest, items: list[JsonDict], sortable: Sequence[str]
) -> list[JsonDict]:
    raw = req.query.get("$orderby")
    if raw is None:
        return items
    prop, _, direction = raw.strip().partition(" ")
    if prop not in sortable or direction.strip().lower() not in ("", "asc", "desc"):
        raise unsupported_query(f"Sorting not supported for '{raw}'.")
    return sorted(
        items,
        key=lambda i: str(i.get(prop) or "").lower(),
        reverse=direction.strip().lower() == "desc",
    )


def filtered(items: Iterable[JsonDict], node: Node | None) -> list[JsonDict]:
    if node is None:
        return list(items)
    evaluator = Evaluator(case_insensitive=True)
    return [item for item in items if evaluator.test(node, item, {})]


def select_and_top(
    req: GraphRequest, properties: Sequence[str], type_name: str
) -> tuple[list[str] | None, int]:
    select = parse_select(req.query.get("$select"), properties, type_name, "Request_BadRequest")
    top = parse_top(req.query.get("$top"), 100, 999)
    return select, top


def shape(
    items: list[JsonDict], select: list[str] | None, default: Sequence[str]
) -> list[JsonDict]:
    return [project(item, select, default) for item in items]
