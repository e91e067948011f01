"""The $filter parser: property-based round trips and robustness against arbitrary text."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.sandbox.odata import (
    Call,
    Compare,
    Evaluator,
    FilterError,
    Lambda,
    Literal,
    Logical,
    Node,
    Not,
    Path,
    parse_filter,
    render,
)

names = st.sampled_from(["mail", "displayName", "accountEnabled", "jobTitle", "userPrincipalName"])
strings = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12
)
literals = st.one_of(
    strings.map(Literal),
    st.booleans().map(Literal),
    st.integers(-999, 999).map(Literal),
    st.just(Literal(None)),
)
comparisons = st.builds(
    Compare,
    st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]),
    names.map(lambda n: Path((n,))),
    literals,
)
calls = st.builds(
    lambda f, n, s: Call(f, (Path((n,)), Literal(s))),
    st.sampled_from(["startswith", "endswith"]),
    names,
    strings,
)
lambdas = st.builds(
    lambda c, s: Lambda(Path((c,)), "any", "x", Compare("eq", Path(("x",)), Literal(s))),
    st.sampled_from(["proxyAddresses", "otherMails"]),
    strings,
)


def trees() -> st.SearchStrategy[Node]:
    leaves = st.one_of(comparisons, calls, lambdas)
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.builds(Logical, st.sampled_from(["and", "or"]), inner, inner),
            st.builds(Not, inner),
        ),
        max_leaves=6,
    )


@given(trees())
def test_render_then_parse_is_identity(tree: Node) -> None:
    assert parse_filter(render(tree)) == tree


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(FilterError):
        parse_filter(text)


@given(st.emails())
def test_address_lookup_is_caseless(address: str) -> None:
    user = {
        "mail": "x@example.edu",
        "proxyAddresses": [f"SMTP:{address.upper()}"],
        "otherMails": [],
    }
    quoted = address.replace("'", "''")
    tree = parse_filter(f"mail eq '{quoted}' or proxyAddresses/any(p:p eq 'smtp:{quoted}')")
    assert Evaluator().test(tree, user, {})


def test_precedence_and_binds_tighter_than_or() -> None:
    tree = parse_filter("mail eq 'a' or mail eq 'b' and jobTitle eq 'c'")
    assert isinstance(tree, Logical) and tree.op == "or"
    assert isinstance(tree.right, Logical) and tree.right.op == "and"
