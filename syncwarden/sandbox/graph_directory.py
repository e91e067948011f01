"""Query rules shared by the directory collections (users, groups, apps): $filter, $select, $top.

Directory objects accept only "basic" queries unless the caller opts into advanced queries with
``ConsistencyLevel: eventual`` and ``$count=true`` (https://learn.microsoft.com/graph/aad-advanced-queries).
What that page documents is reproduced here, including its quieter rules:

- ``$count=true`` without the header is silently ignored (no ``@odata.count``), not refused;
- ``ne``, ``not``, ``endsWith`` and ``null`` comparisons need the advanced parameters, and
  ``endsWith`` exists only for mail, otherMails, userPrincipalName and proxyAddresses;
- a few user properties (mobilePhone, officeLocation, preferredLanguage) are indexed only in the
  advanced store, so any comparison on them, even ``eq``, needs the advanced parameters;
- ``$filter`` together with ``$orderby`` needs the advanced parameters;
- the ``all`` lambda operator is not supported at all (/graph/filter-query-parameter), and
  ``contains`` is not an operator directory objects offer;
- ``@odata.count`` appears on the first page only (/graph/paging).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from syncwarden.sandbox.graph_core import GraphRequest
from syncwarden.sandbox.odata import (
    Call,
    Compare,
    Evaluator,
    FilterError,
    InList,
    JsonDict,
    Lambda,
    Literal,
    Logical,
    Node,
    Not,
    Path,
    bad_request,
    parse_filter,
    parse_select,
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
MAX_PAGE = 999
DEFAULT_PAGE = 100
# endsWith is offered on these properties only, and only in advanced queries.
SUFFIX_PROPERTIES = frozenset({"mail", "otherMails", "userPrincipalName", "proxyAddresses"})


@dataclass(frozen=True)
class DirectoryRules:
    """What one directory collection lets a query do, as Microsoft's tables list it."""

    type_name: str
    resource: str
    properties: tuple[str, ...]
    advanced_eq: frozenset[str] = frozenset()
    no_prefix: frozenset[str] = frozenset()
    sort_default: frozenset[str] = frozenset()
    sort_advanced: frozenset[str] = frozenset()
    suffix: frozenset[str] = field(default=SUFFIX_PROPERTIES)


def check_options(req: GraphRequest, allowed: Iterable[str] = SUPPORTED_OPTIONS) -> None:
    allowed_set = set(allowed)
    for name in req.query:
        if name.startswith("$") and name not in allowed_set:
            raise bad_request(f"Query option '{name}' is not allowed.", "BadRequest")


def advanced_enabled(req: GraphRequest) -> bool:
    return (req.headers.get("ConsistencyLevel") or "").lower() == "eventual"


def _count_flag(req: GraphRequest) -> bool:
    raw = req.query.get("$count")
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise bad_request(f"Invalid value '{raw}' for $count query option found.", "BadRequest")
    return raw.lower() == "true"


def advanced_query(req: GraphRequest) -> bool:
    """Both advanced query parameters: the header and ``$count=true``."""
    return advanced_enabled(req) and _count_flag(req)


def count_requested(req: GraphRequest) -> bool:
    """Whether the answer carries ``@odata.count``.

    Without ``ConsistencyLevel: eventual`` Graph ignores ``$count=true`` silently; and the count
    is on the first page only, never on the pages a ``$skiptoken`` leads to.
    """
    return advanced_query(req) and "$skiptoken" not in req.query


def advanced_required(operator: str) -> Exception:
    return unsupported_query(
        f"Operator '{operator}' is not supported because the required parameters might be "
        "missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. "
        "Refer to https://aka.ms/graph-docs/advanced-queries for more information"
    )


def unsupported_clause(prop: str, resource: str) -> Exception:
    return unsupported_query(
        f"Unsupported or invalid query filter clause specified for property '{prop}' of "
        f"resource '{resource}'."
    )


def _property(node: Node, variables: dict[str, str]) -> str | None:
    if not isinstance(node, Path):
        return None
    head = node.segments[0]
    return variables.get(head, head)


def _operand_property(left: Node, right: Node, variables: dict[str, str]) -> str | None:
    return _property(left, variables) or _property(right, variables)


def _needs(node: Node, rules: DirectoryRules, variables: dict[str, str]) -> list[str]:
    """Operators in ``node`` that need advanced queries; raises for ones never supported."""
    if isinstance(node, Logical):
        return _needs(node.left, rules, variables) + _needs(node.right, rules, variables)
    if isinstance(node, Not):
        return ["not", *_needs(node.operand, rules, variables)]
    if isinstance(node, Lambda):
        collection = _property(node.collection, variables) or ""
        if node.kind == "all":
            raise unsupported_clause(collection, rules.resource)
        return _needs(node.body, rules, {**variables, node.variable: collection})
    if isinstance(node, Compare):
        prop = _operand_property(node.left, node.right, variables) or ""
        needed: list[str] = []
        if node.op == "ne":
            needed.append("ne")
        if Literal(None) in (node.left, node.right):
            needed.append(node.op)
        if prop in rules.advanced_eq:
            needed.append(node.op)
        return needed
    if isinstance(node, InList):
        prop = _property(node.left, variables) or ""
        return ["in"] if prop in rules.advanced_eq else []
    if isinstance(node, Call):
        prop = _property(node.args[0], variables) or ""
        if node.name == "contains":
            raise unsupported_clause(prop, rules.resource)
        if node.name == "startswith":
            if prop in rules.no_prefix:
                raise unsupported_clause(prop, rules.resource)
            return ["startsWith"] if prop in rules.advanced_eq else []
        if prop not in rules.suffix:
            raise unsupported_clause(prop, rules.resource)
        return ["endsWith"]
    return []


def directory_filter(req: GraphRequest, rules: DirectoryRules) -> Node | None:
    raw = req.query.get("$filter")
    advanced = advanced_query(req)
    if "$search" in req.query and not advanced_enabled(req):
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
    known = {name.lower() for name in rules.properties}
    for name in root_properties(node):
        if name.lower() not in known:
            raise bad_request(
                f"Could not find a property named '{name}' on type '{rules.type_name}'."
            )
    needed = _needs(node, rules, {})
    if needed and not advanced:
        raise advanced_required(needed[0])
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
    req: GraphRequest, items: list[JsonDict], rules: DirectoryRules
) -> list[JsonDict]:
    """Sort as ``$orderby`` asks; Graph refuses properties it has not indexed for sorting, and
    sorting combined with ``$filter`` (or on an advanced-only property) without the advanced
    query parameters."""
    raw = req.query.get("$orderby")
    if raw is None:
        return items
    prop, _, direction = raw.strip().partition(" ")
    direction = direction.strip().lower()
    sortable = rules.sort_default | rules.sort_advanced
    if prop not in sortable or direction not in ("", "asc", "desc"):
        raise unsupported_query(f"Sorting not supported for '{raw}'.")
    needs_advanced = "$filter" in req.query or prop in rules.sort_advanced
    if needs_advanced and not advanced_query(req):
        raise unsupported_query("Sorting not supported for current query.")
    return sorted(items, key=lambda i: str(i.get(prop) or "").lower(), reverse=direction == "desc")


def filtered(items: Iterable[JsonDict], node: Node | None) -> list[JsonDict]:
    if node is None:
        return list(items)
    evaluator = Evaluator(case_insensitive=True)
    return [item for item in items if evaluator.test(node, item, {})]


def parse_page_size(raw: str | None) -> int:
    """``$top`` for directory collections: 1 to 999, else 400 ``Request_UnsupportedQuery``."""
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit():
        raise bad_request(f"Invalid value '{raw}' for $top query option found.", "BadRequest")
    value = int(raw)
    if not 1 <= value <= MAX_PAGE:
        raise unsupported_query(
            f"Invalid page size specified: '{value}'. Must be between 1 and {MAX_PAGE} inclusive."
        )
    return value


def select_and_top(
    req: GraphRequest, properties: Sequence[str], type_name: str
) -> tuple[list[str] | None, int]:
    select = parse_select(req.query.get("$select"), properties, type_name, "Request_BadRequest")
    return select, parse_page_size(req.query.get("$top"))


def run_query(
    req: GraphRequest, items: Iterable[JsonDict], rules: DirectoryRules
) -> tuple[list[JsonDict], list[str] | None, int, int | None]:
    """Filter, search and sort ``items``: (matches, $select, page size, count or None)."""
    node = directory_filter(req, rules)
    select, top = select_and_top(req, rules.properties, rules.type_name)
    chosen = filtered(items, node)
    chosen = apply_search(req, chosen)
    chosen = apply_orderby(req, chosen, rules)
    count = len(chosen) if count_requested(req) else None
    return chosen, select, top, count


def shape(
    items: list[JsonDict], select: list[str] | None, default: Sequence[str]
) -> list[JsonDict]:
    return [project(item, select, default) for item in items]
