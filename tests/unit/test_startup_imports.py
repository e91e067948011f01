"""What a process start pays for: the SCIM libraries only when SCIM is enabled.

Their models take about a second and a half of CPU to import, and the service starts (and
restarts after a crash) far more often than SCIM is turned on.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_service_imports_no_scim_library_until_scim_is_enabled() -> None:
    probe = (
        "import sys, syncwarden.server, syncwarden.cli, syncwarden.web;"
        "libraries = ('scim2_server', 'scim2_models');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in libraries))"
    )
    loaded = subprocess.run(  # noqa: S603 - our own interpreter and a fixed probe
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert loaded == "[]"
