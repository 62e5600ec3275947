"""Structured logs: one JSON object a line (or plain text), for our loggers and uvicorn's.

Library code logs through the standard `logging` module with `extra=` fields; this module
only decides how records are rendered when the service runs. Request logs carry ids,
routes, statuses and timings, never API keys or stored text.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_OUR_LOGGERS = ("hirag_oz", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Render every log record of the process with structlog, at `level`."""
    pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in _OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # Requests are logged once, by our middleware, with their route template and request id.
    logging.getLogger("uvicorn.access").disabled = True


def _drop_color_message(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """uvicorn adds a terminal-coloured copy of some messages; it has no place in a log line."""
    event.pop("color_message", None)
    return event
