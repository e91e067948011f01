"""What every front of the sandbox shares: state, knobs, keys and the public base URL."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from syncwarden.sandbox.knobs import Behaviour
from syncwarden.sandbox.seed import SeedInfo
from syncwarden.sandbox.signing import SigningKey
from syncwarden.sandbox.state import TenantState


@dataclass
class Context:
    state: TenantState
    seed: SeedInfo
    behaviour: Behaviour
    base_url: str = ""
    entra_key: SigningKey = field(default_factory=lambda: SigningKey("sandbox-entra-signing"))
    bot_key: SigningKey = field(default_factory=lambda: SigningKey("sandbox-botframework"))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # What a host's managed-identity endpoint expects in X-IDENTITY-HEADER (App Service style).
    identity_header: str = field(default_factory=lambda: secrets.token_urlsafe(24))
