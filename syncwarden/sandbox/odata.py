"""OData pieces Graph applies to every collection: $filter, $select, paging and error bodies.

The parser is deliberately strict: what Graph would reject with 400 is rejected here too, so a
client that only works against a lenient fake fails in tests, not in production.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlencode

JsonDict = dict[str, Any]


class GraphError(Exception):
    """A Graph-shaped failure; the pipeline renders it with innerError and request ids."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def not_found(message: str = "Resource not found.") -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", message)


def bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    return GraphError(400, code, message)


def unsupported_query(message: str = "Unsupported Query.") -> GraphError:
    return GraphError(400, "Request_UnsupportedQuery", message)


class FilterError(ValueError):
    """The $filter text is not valid OData (Graph answers 400)."""


# ---------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: str | bool | int | float | None


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class InList:
    left: Node
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Logical:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Lambda:
    collection: Path
    kind: str
    variable: str
    body: Node


Node = Union[Literal, Path, Compare, InList, Logical, Not, Call, Lambda]  # noqa: UP007

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
FUNCTIONS = ("startswith", "endswith", "contains")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?(?![\w-]))
  | (?P<punct>[(),:/])
  | (?P<word>[A-Za-z_@$][\w.@$#-]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


@dataclass
class _Parser:
    text: str
    tokens: list[_Token]
    index: int = 0
    variables: list[str] = field(default_factory=list)

    def peek(self, offset: int = 0) -> _Token | None:
        at = self.index + offset
        return self.tokens[at] if at < len(self.tokens) else None

    def fail(self, token: _Token | None = None) -> FilterError:
        where = token.pos if token else len(self.text)
        return FilterError(f"Syntax error at position {where} in '{self.text}'.")

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail()
        if text is not None and token.text.lower() != text:
            raise self.fail(token)
        if kind is not None and token.kind != kind:
            raise self.fail(token)
        self.index += 1
        return token

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def parse(self) -> Node:
        if not self.tokens:
            raise self.fail()
        node = self.expression()
        if self.peek() is not None:
            raise self.fail(self.peek())
        return node

    def expression(self) -> Node:
        node = self.conjunction()
        while self.at_word("or"):
            self.index += 1
            node = Logical("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.unary()
        while self.at_word("and"):
            self.index += 1
            node = Logical("and", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at_word("not"):
            self.index += 1
            return Not(self.unary())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() in COMPARISONS:
            self.index += 1
            return Compare(token.text.lower(), left, self.operand())
        if self.at_word("in"):
            self.index += 1
            self.take("(")
            values = [self.literal()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.index += 1
                values.append(self.literal())
            self.take(")")
            return InList(left, tuple(values))
        if isinstance(left, Call | Lambda | Logical | Not | Compare):
            return left
        if isinstance(left, Literal) and isinstance(left.value, bool):
            return left
        raise self.fail(token)

    def literal(self) -> Literal:
        node = self.operand()
        if not isinstance(node, Literal):
            raise self.fail(self.peek())
        return node

    def operand(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail()
        if token.text == "(":
            self.index += 1
            node = self.expression()
            self.take(")")
            return node
        if token.kind == "string":
            self.index += 1
            return Literal(token.text[1:-1].replace("''", "'"))
        if token.kind == "number":
            self.index += 1
            return Literal(float(token.text) if "." in token.text else int(token.text))
        if token.kind != "word":
            raise self.fail(token)
        lowered = token.text.lower()
        if lowered in ("true", "false"):
            self.index += 1
            return Literal(lowered == "true")
        if lowered == "null":
            self.index += 1
            return Literal(None)
        nxt = self.peek(1)
        if lowered in FUNCTIONS and nxt is not None and nxt.text == "(":
            self.index += 2
            args = [self.operand()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.index += 1
                args.append(self.operand())
            self.take(")")
            if len(args) != 2:
                raise self.fail(token)
            return Call(lowered, tuple(args))
        return self.path()

    def path(self) -> Node:
        segments = [self.take(kind="word").text]
        while self.peek() is not None and self.peek().text == "/":  # type: ignore[union-attr]
            self.index += 1
            word = self.take(kind="word")
            nxt = self.peek()
            if word.text.lower() in ("any", "all") and nxt is not None and nxt.text == "(":
                self.index += 1
                variable = self.take(kind="word").text
                self.take(":")
                self.variables.append(variable)
                body = self.expression()
                self.variables.pop()
                self.take(")")
                return Lambda(Path(tuple(segments)), word.text.lower(), variable, body)
            segments.append(word.text)
        return Path(tuple(segments))


def parse_filter(text: str) -> Node:
    return _Parser(text, tokenize(text)).parse()


def render(node: Node) -> str:
    """Back to OData text; parse(render(x)) == x is what the property tests check."""
    if isinstance(node, Literal):
        if node.value is None:
            return "null"
        if isinstance(node.value, bool):
            return "true" if node.value else "false"
        if isinstance(node.value, str):
            return "'" + node.value.replace("'", "''") + "'"
        return repr(node.value)
    if isinstance(node, Path):
        return "/".join(node.segments)
    if isinstance(node, Compare):
        return f"{render(node.left)} {node.op} {render(node.right)}"
    if isinstance(node, InList):
        return f"{render(node.left)} in ({', '.join(render(v) for v in node.values)})"
    if isinstance(node, Logical):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    if isinstance(node, Not):
        return f"not ({render(node.operand)})"
    if isinstance(node, Call):
        return f"{node.name}({', '.join(render(a) for a in node.args)})"
    return f"{render(node.collection)}/{node.kind}({node.variable}:{render(node.body)})"


def walk(node: Node) -> Iterable[Node]:
    yield node
    children: tuple[Node, ...] = ()
    if isinstance(node, Compare | Logical):
        children = (node.left, node.right)
    elif isinstance(node, InList):
        children = (node.left, *node.values)
    elif isinstance(node, Not):
        children = (node.operand,)
    elif isinstance(node, Call):
        children = node.args
    elif isinstance(node, Lambda):
        children = (node.collection, node.body)
    for child in children:
        yield from walk(child)


def root_properties(node: Node) -> set[str]:
    """Top-level property names the filter reads (lambda variables excluded)."""
    names: set[str] = set()
    bound: set[str] = set()
    for item in walk(node):
        if isinstance(item, Lambda):
            bound.add(item.variable)
    for item in walk(node):
        if isinstance(item, Path) and item.segments[0] not in bound:
            names.add(item.segments[0])
    return names


# ---------------------------------------------------------------- evaluation


def _fold(value: Any, case_insensitive: bool) -> Any:
    if case_insensitive and isinstance(value, str):
        return value.casefold()
    return value


@dataclass
class Evaluator:
    """Evaluates a filter against a JSON-shaped object; directory strings compare caselessly."""

    case_insensitive: bool = True
    value_hook: Callable[[tuple[str, ...], Any], Any] | None = None

    def resolve(self, node: Node, obj: Mapping[str, Any], env: Mapping[str, Any]) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Path):
            head, *rest = node.segments
            current: Any = env[head] if head in env else obj.get(head)
            for segment in rest:
                current = current.get(segment) if isinstance(current, Mapping) else None
            if self.value_hook is not None:
                current = self.value_hook(node.segments, current)
            return current
        return self.test(node, obj, env)

    def test(self, node: Node, obj: Mapping[str, Any], env: Mapping[str, Any]) -> bool:
        ci = self.case_insensitive
        if isinstance(node, Logical):
            if node.op == "and":
                return self.test(node.left, obj, env) and self.test(node.right, obj, env)
            return self.test(node.left, obj, env) or self.test(node.right, obj, env)
        if isinstance(node, Not):
            return not self.test(node.operand, obj, env)
        if isinstance(node, Compare):
            left = _fold(self.resolve(node.left, obj, env), ci)
            right = _fold(self.resolve(node.right, obj, env), ci)
            if node.op == "eq":
                return bool(left == right)
            if node.op == "ne":
                return bool(left != right)
            if left is None or right is None:
                return False
            try:
                return bool(
                    {
                        "gt": left > right,
                        "ge": left >= right,
                        "lt": left < right,
                        "le": left <= right,
                    }[node.op]
                )
            except TypeError:
                return False
        if isinstance(node, InList):
            left = _fold(self.resolve(node.left, obj, env), ci)
            return any(left == _fold(v.value, ci) for v in node.values)
        if isinstance(node, Call):
            subject = self.resolve(node.args[0], obj, env)
            needle = self.resolve(node.args[1], obj, env)
            if not isinstance(subject, str) or not isinstance(needle, str):
                return False
            subject, needle = _fold(subject, ci), _fold(needle, ci)
            if node.name == "startswith":
                return bool(subject.startswith(needle))
            if node.name == "endswith":
                return bool(subject.endswith(needle))
            return bool(needle in subject)
        if isinstance(node, Lambda):
            items = self.resolve(node.collection, obj, env) or []
            results = (self.test(node.body, obj, {**env, node.variable: item}) for item in items)
            return any(results) if node.kind == "any" else all(results)
        if isinstance(node, Literal):
            return bool(node.value)
        raise FilterError("A path alone is not a condition.")


# ---------------------------------------------------------------- $select and paging


def parse_select(
    raw: str | None, known: Iterable[str], type_name: str, code: str
) -> list[str] | None:
    if raw is None:
        return None
    names = [part.strip() for part in raw.split(",") if part.strip()]
    known_set = {k.lower(): k for k in known}
    chosen: list[str] = []
    for name in names:
        if name == "*":
            chosen.extend(known_set.values())
            continue
        canonical = known_set.get(name.lower())
        if canonical is None:
            raise bad_request(
                f"Could not find a property named '{name}' on type '{type_name}'.", code
            )
        chosen.append(canonical)
    return chosen


def project(
    item: Mapping[str, Any], select: Sequence[str] | None, default: Sequence[str]
) -> JsonDict:
    names = list(select) if select is not None else list(default)
    shaped = {name: item.get(name) for name in names}
    if "@odata.type" in item:
        shaped = {"@odata.type": item["@odata.type"], **shaped}
    return shaped


def parse_top(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit():
        raise bad_request(f"Invalid value '{raw}' for $top query option found.", "BadRequest")
    value = int(raw)
    if value < 1 or value > maximum:
        raise bad_request(
            f"Invalid page size specified: '{value}'. Must be between 1 and {maximum} inclusive.",
            "Request_UnsupportedQuery" if value > maximum else "BadRequest",
        )
    return value


def encode_skiptoken(payload: Mapping[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return "RFNwdAI" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> JsonDict:
    if not token.startswith("RFNwdAI"):
        raise bad_request("Invalid paging token.", "Directory_ExpiredPageToken")
    body = token[len("RFNwdAI") :]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, json.JSONDecodeError) as exc:
        raise bad_request("Invalid paging token.", "Directory_ExpiredPageToken") from exc
    if not isinstance(decoded, dict):
        raise bad_request("Invalid paging token.", "Directory_ExpiredPageToken")
    return decoded


_SAFE = "$,()/:'"


def next_link(base_url: str, path: str, query: Mapping[str, str], skiptoken: str) -> str:
    params = {k: v for k, v in query.items() if k != "$skiptoken"}
    params["$skiptoken"] = skiptoken
    return f"{base_url}{path}?{urlencode(params, safe=_SAFE)}"
