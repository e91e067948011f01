"""Run the sandbox tenant on its own: ``python -m syncwarden.sandbox --help``.

On start it prints one JSON line (``{"event": "sandbox.ready", ...}``) to stdout so a parent
process can read the base URL and the CA bundle path; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from pathlib import Path

from syncwarden.sandbox.knobs import Knobs
from syncwarden.sandbox.seed import DEFAULT_SEED
from syncwarden.sandbox.server import SandboxTenant

EPILOG = """\
On start, one JSON line goes to stdout:
  {"event": "sandbox.ready", "base_url": ..., "ca_path": ..., "tenant_id": ...,
   "apps": {name: {"client_id", "client_secret"}}, "groups": {name: id}}
Point clients at the printed base_url with the printed ca_path as their CA bundle:
  msal authority  {base_url}/{tenant_id}   (validate_authority=False, instance_discovery=False)
  Graph           {base_url}/v1.0/...
  Exchange        {base_url}/adminapi/beta/{tenant_id}/InvokeCommand
  Bot Framework   {base_url}/botframework/v1/.well-known/openidconfiguration
  Admin (loopback only, no auth)  {base_url}/_sandbox/health, /_sandbox/knobs,
                                  /_sandbox/requests ...
The Syncwarden app's sandbox-only client secret is in the seed file (applications[0].secrets).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m syncwarden.sandbox",
        description="A local, strict stand-in for Entra ID, Microsoft Graph v1.0 (subset), the "
        "Exchange Online admin API and Bot Framework token issuance, over HTTPS with its own CA.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--seed", type=Path, default=DEFAULT_SEED, help="seed JSON file")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var/sandbox"),
        help="where the CA and server certificate are written",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to every Graph/Exchange request"
    )
    parser.add_argument(
        "--mailbox-concurrency",
        type=int,
        default=4,
        help="concurrent requests per mailbox before 429 (default 4)",
    )
    parser.add_argument(
        "--mailbox-budget",
        type=int,
        default=None,
        help="requests per mailbox per window before 429",
    )
    parser.add_argument(
        "--mailbox-budget-window", type=float, default=600.0, help="budget window in seconds"
    )
    parser.add_argument(
        "--exchange-page-size", type=int, default=1000, help="Get-DistributionGroupMember page size"
    )
    parser.add_argument(
        "--extra-apps", type=int, default=None, help="add N generated app registrations"
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when standard input closes (the parent gives us a pipe and holds its end)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    knobs = Knobs(
        latency_ms=args.latency_ms,
        mailbox_concurrency=args.mailbox_concurrency,
        mailbox_budget=args.mailbox_budget,
        mailbox_budget_window_s=args.mailbox_budget_window,
        exchange_page_size=args.exchange_page_size,
    )
    tenant = await SandboxTenant.launch(
        args.seed,
        args.state_dir,
        host=args.host,
        port=args.port,
        extra_apps=args.extra_apps,
        knobs=knobs,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_parent:
        threading.Thread(
            target=_stop_at_end_of_input, args=(loop, stop), name="parent-watch", daemon=True
        ).start()
    ready = {
        "event": "sandbox.ready",
        "base_url": tenant.base_url,
        "ca_path": str(tenant.ca_path.resolve()),
        "tenant_id": tenant.tenant_id,
        # Sandbox-only credentials and ids, so `syncwarden serve --sandbox` can wire itself up.
        "apps": {
            name: {"client_id": app_id, "client_secret": tenant.seed.app_secrets.get(app_id)}
            for name, app_id in tenant.seed.app_ids.items()
            if tenant.seed.app_secrets.get(app_id)
        },
        "groups": dict(tenant.seed.group_ids),
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await tenant.stop()


def _stop_at_end_of_input(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block until the parent's end of our standard input closes (it exited, or was killed)."""
    while sys.stdin.buffer.read(4096):
        pass
    loop.call_soon_threadsafe(stop.set)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
