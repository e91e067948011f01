"""The contract tier: one test per Microsoft behaviour Syncwarden relies on, against the sandbox.

Each test's docstring names where the behaviour is published (a learn.microsoft.com page,
Microsoft's docs repository, a public issue or client code). Where nothing is published, the
docstring says so and says which answers the product is built to survive. A reader audits the
sandbox against Microsoft by reading this folder; ``test_sources.py`` keeps every test honest
about its source.

The fixtures are the sandbox tests' own: a fresh tenant per test and HTTPS clients trusting its CA.
"""

from __future__ import annotations

from tests.sandbox.conftest import (
    _no_ca_bundle_override,
    client_factory,
    graph,
    raw,
    sandbox_factory,
    tenant,
)

__all__ = [
    "_no_ca_bundle_override",
    "client_factory",
    "graph",
    "raw",
    "sandbox_factory",
    "tenant",
]
