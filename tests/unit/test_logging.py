"""Logging: one configuration for structlog and stdlib, and no secret ever reaches the output."""

from __future__ import annotations

import io
import json
import logging

import pytest

from syncwarden.core.logging import MASK, configure_logging, get_logger
from syncwarden.core.settings import Mode, Settings

GRAPH_SECRET = "Gr4ph~secret.value-111"
BOT_SECRET = 'B0t"secret\\value-222'
DB_PASSWORD = "pg-Pa55word-333"


def settings(mode: Mode = Mode.SANDBOX) -> Settings:
    return Settings.model_validate(
        {
            "mode": mode,
            "graph": {"client_secret": GRAPH_SECRET},
            "bot": {"client_secret": BOT_SECRET},
            "database": {"url": f"postgresql+asyncpg://sync:{DB_PASSWORD}@db.example.edu/sw"},
            "log": {"level": "DEBUG"},
        }
    )


@pytest.fixture
def output() -> io.StringIO:
    return io.StringIO()


def test_secrets_never_appear_in_any_log_output(output: io.StringIO) -> None:
    configured = settings()
    configure_logging(configured, stream=output)
    log = get_logger("test")
    log.info(f"graph secret is {GRAPH_SECRET}", bot=BOT_SECRET, nested={"db": DB_PASSWORD})
    log.warning("settings", settings=configured, model=configured.model_dump())
    logging.getLogger("some.library").debug(
        "config %s / %r", {"CLIENTSECRET": BOT_SECRET}, GRAPH_SECRET
    )
    try:
        raise RuntimeError(f"connect failed for postgresql://sync:{DB_PASSWORD}@db")
    except RuntimeError:
        log.exception("boom")
    text = output.getvalue()
    assert "graph secret is" in text and "connect failed" in text, (
        "the lines themselves must be written"
    )
    for secret in (GRAPH_SECRET, BOT_SECRET, DB_PASSWORD, json.dumps(BOT_SECRET)[1:-1]):
        assert secret not in text
    assert text.count(MASK) >= 5


def test_production_writes_json_lines_with_bound_context(output: io.StringIO) -> None:
    configure_logging(settings(Mode.PRODUCTION), stream=output)
    get_logger("test", ticket="SW-1042").info("step.started", step="add_to_group")
    line = json.loads(output.getvalue().strip().splitlines()[-1])
    assert line["event"] == "step.started"
    assert line["ticket"] == "SW-1042"
    assert line["step"] == "add_to_group"
    assert line["level"] == "info"
    assert "timestamp" in line


def test_sandbox_writes_human_readable_lines(output: io.StringIO) -> None:
    configure_logging(settings(), stream=output)
    get_logger("test").info("hello", who="ada")
    text = output.getvalue()
    assert "hello" in text and "who=ada" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.strip().splitlines()[-1])
