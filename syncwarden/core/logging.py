"""Structured logging, configured once per process, with secrets scrubbed from every line.

Both structlog calls and the standard-library loggers used by aiohttp, msal and the Agents SDK go
through the same processors, so a secret that reaches *any* log call (say, a library that logs its
configuration object at debug level) is replaced before the line is written. Scrubbing happens on
the rendered text, after every other processor, so nothing can reintroduce the value later.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import IO, Any

import structlog
from structlog.typing import Processor, WrappedLogger

from syncwarden.core.settings import LogFormat, Settings

MASK = "**********"
_MIN_SECRET_LENGTH = 4
# Libraries that narrate routine work at INFO; our own log lines report the outcome instead.
_CHATTY_LIBRARIES = (
    "alembic",
    "aiohttp.access",
    "msal",
    "httpx",
    "httpcore",
    "microsoft_agents",
    "apscheduler",
)


class SecretScrubber:
    """Replaces every known secret (and its JSON-escaped form) in a rendered log line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < _MIN_SECRET_LENGTH:
                continue
            variants.add(secret)
            variants.add(json.dumps(secret)[1:-1])
        # Longest first, so a secret that contains another is replaced whole.
        self._variants = sorted(variants, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, MASK)
        return text

    def __call__(self, _logger: WrappedLogger, _name: str, rendered: Any) -> Any:
        if isinstance(rendered, str):
            return self.scrub(rendered)
        return rendered


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """Set up structlog and stdlib logging (console lines in sandbox, JSON in production)."""
    output = stream if stream is not None else sys.stderr
    use_json = settings.log.format is LogFormat.JSON or (
        settings.log.format is LogFormat.AUTO and settings.is_production
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    scrubber = SecretScrubber(settings.secret_values())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
            scrubber,
        ],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log.level.upper())
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A logger with optional context bound to every line it writes."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**bound) if bound else logger
