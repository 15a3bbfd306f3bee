"""What the user sees while a run goes: structlog events on stderr, and a progress display.

Logs: readable on a terminal, one JSON object per line otherwise (or with --log-format json).
Progress: a rich display on stderr when stderr is a terminal and --quiet is not given; otherwise
nothing, so piped output holds only log lines.
"""

from __future__ import annotations

import logging
import sys
import time

import structlog

log = structlog.get_logger("etl")


def configure_logging(verbose: bool = False, quiet: bool = False, fmt: str = "auto") -> None:
    # --quiet: errors only. A warning (--no-verify, items --skip-invalid left out, strays that
    # look like a newer MLflow's data) is still in the --report file.
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
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
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    # MLflow and alembic log through the stdlib; keep them to warnings unless asked.
    logging.basicConfig(level=logging.DEBUG if verbose else max(level, logging.WARNING), stream=sys.stderr)


class _CurrentStderr:
    """sys.stderr as it is at each write: the progress display swaps it so that log lines are
    printed above the bars instead of through them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class Progress:
    """No display: the pipeline reports to this; subclasses show it."""

    def phase(self, name: str, total: int | None = None) -> None: ...

    def add_total(self, units: int) -> None: ...

    def advance(self, units: int = 1, rows: int = 0, files: int = 0) -> None: ...

    def close(self) -> None: ...


class RichProgress(Progress):
    """Per phase: done/discovered units, rows/s, files/s, elapsed and ETA (rich draws it)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("units"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = None
        self._rows = self._files = 0
        self._started = time.monotonic()

    def phase(self, name: str, total: int | None = None) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=self._bar.tasks[self._task].total or 0)
        self._rows = self._files = 0
        self._started = time.monotonic()
        self._task = self._bar.add_task(name, total=total or 0, rate="")

    def add_total(self, units: int) -> None:
        task = self._bar.tasks[self._task]
        self._bar.update(self._task, total=(task.total or 0) + units)

    def advance(self, units: int = 1, rows: int = 0, files: int = 0) -> None:
        self._rows += rows
        self._files += files
        seconds = max(time.monotonic() - self._started, 1e-6)
        rate = f"{self._rows / seconds:,.0f} rows/s {self._files / seconds:,.0f} files/s" if rows or files else ""
        self._bar.update(self._task, advance=units, rate=rate)

    def close(self) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=self._bar.tasks[self._task].total or 0)
        self._bar.stop()


def make_progress(quiet: bool) -> Progress:
    return RichProgress() if sys.stderr.isatty() and not quiet else Progress()
