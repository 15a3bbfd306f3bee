"""Logging set-up: structlog to stderr, readable on a terminal, JSON for machines."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(verbose: bool = False, quiet: bool = False, fmt: str = "auto") -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # MLflow and alembic log through the stdlib; keep them to warnings unless asked.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)


log = structlog.get_logger("etl")
