"""Trust for outgoing HTTPS: the public roots, plus an organisation's own CA when configured.

Behind a TLS-inspecting proxy (and in front of the sandbox tenant) certificates are signed by a CA
the public bundle does not know. We *add* that CA to the public roots rather than replace them, and
write the combined bundle to a file because msal (through requests) only accepts a path.
"""

from __future__ import annotations

import functools
import ssl
import tempfile
from pathlib import Path
from typing import Any

import certifi
import requests


@functools.cache
def combined_bundle(extra_ca: Path) -> str:
    """Path of a PEM file with the public roots followed by ``extra_ca``; made once per process."""
    pem = Path(certifi.where()).read_text() + "\n" + extra_ca.read_text()
    with tempfile.NamedTemporaryFile(
        "w", prefix="syncwarden-ca-", suffix=".pem", delete=False
    ) as handle:
        handle.write(pem)
    return handle.name


def verify_for_requests(extra_ca: Path | None) -> str | bool:
    """The ``verify`` argument for requests-based clients (msal)."""
    return True if extra_ca is None else combined_bundle(extra_ca)


def ssl_context(extra_ca: Path | None) -> ssl.SSLContext:
    """The SSL context for httpx: system/certifi roots plus ``extra_ca``."""
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


class TrustingSession(requests.Session):
    """A requests session that keeps *its* CA trust and a default timeout.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's ``verify``
    (environment settings win when merged), which silently drops our bundle on exactly the
    machines that need it: those behind an inspecting proxy, where such variables are common.
    Proxy variables from the environment still apply.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(
            url, proxies, stream, verify, cert
        )
        settings["verify"] = self.verify if verify in (None, True) else verify
        return settings

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)
