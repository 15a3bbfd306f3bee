"""What the user sees while a run goes: structlog events on stderr, and a progress display.

Logs: readable on a terminal, one JSON object per line otherwise (or with --log-format json).
Progress: a rich display on stderr when stderr is a terminal and --quiet is not given; otherwise
nothing, so piped output holds only log lines. It counts the run, trace and model folders of the
tree, found before the load starts ("discover"), so its total does not grow under the bar.
"""

from __future__ import annotations

import logging
import sys
import time

import structlog

log = structlog.get_logger("etl")


_structured = True


def structured_logs() -> bool:
    """Whether log lines are JSON records (--log-format json, or auto off a terminal)."""
    return _structured


def record(event: str, **fields) -> None:
    """A record of the run for machines (where it started, what the load did): logged with JSON
    logs; on a terminal only under --verbose, where the progress display and the summary say it."""
    (log.info if _structured else log.debug)(event, **fields)


def configure_logging(verbose: bool = False, quiet: bool = False, fmt: str = "auto") -> None:
    # --quiet: errors only. A warning (--no-verify, items --skip-invalid left out, strays that
    # look like a newer MLflow's data) is still in the --report file.
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    global _structured
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    _structured = fmt == "json"
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
    """No display: the pipeline reports to this; subclasses show it.

    A phase counts what a user counts (the folders of runs, traces and models it found), against
    a total known before it starts; ``total=None`` is a phase that is still finding its total
    (discovery), shown as a count that grows."""

    def phase(self, name: str, total: int | None = None, counting: str = "") -> None: ...

    def set_total(self, total: int, counting: str = "") -> None:
        """The total of a phase that started without one."""

    def advance(self, done: int = 1, rows: int = 0, files: int = 0) -> None: ...

    def close(self, stopped: str | None = None) -> None:
        """The end of the display: the phase that ran is complete, unless ``stopped`` says why
        it is not (interrupted, failed): then it stays where it was, marked so."""


class RichProgress(Progress):
    """Per phase: done/total of what it counts, rows/s and files/s, elapsed, and an ETA from the
    phase's average rate (the rate of the last seconds swings with the size of the folders)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBar
        from rich.text import Text

        class Count(ProgressColumn):
            def render(self, task) -> Text:
                done = f"{int(task.completed):,}"
                shown = done if task.total is None or task.fields["open"] else f"{done}/{int(task.total):,}"
                return Text(f"{shown} {task.fields['counting']}".rstrip())

        class Eta(ProgressColumn):
            def render(self, task) -> Text:
                if task.total is None or task.fields["stopped"]:
                    return Text(task.fields["stopped"], style="bold red")
                elapsed = task.elapsed or 0.0
                if task.finished or not task.completed or elapsed < 1:
                    return Text("" if task.finished else "ETA -:--:--", style="progress.remaining")
                left = round(elapsed * (task.total - task.completed) / task.completed)
                return Text(f"ETA {left // 3600}:{left // 60 % 60:02}:{left % 60:02}", style="progress.remaining")

        self._bar = RichBar(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            Count(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            Eta(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = None
        self._rows = self._files = 0
        self._started = time.monotonic()

    def phase(self, name: str, total: int | None = None, counting: str = "") -> None:
        self._complete()
        self._rows = self._files = 0
        self._started = time.monotonic()
        # open: a phase that finds its own total (discovery) shows only what it has found.
        self._task = self._bar.add_task(name, total=total, rate="", counting=counting, stopped="",
                                        open=total is None)

    def set_total(self, total: int, counting: str = "") -> None:
        self._bar.update(self._task, total=total, counting=counting, open=False)

    def advance(self, done: int = 1, rows: int = 0, files: int = 0) -> None:
        self._rows += rows
        self._files += files
        seconds = max(time.monotonic() - self._started, 1e-6)
        rate = f"{self._rows / seconds:,.0f} rows/s {self._files / seconds:,.0f} files/s" if rows or files else ""
        self._bar.update(self._task, advance=done, rate=rate)

    def _complete(self) -> None:
        """The phase ended as planned: done is its total (a discovery's total is what it found)."""
        if self._task is not None:
            task = self._bar.tasks[self._task]
            self._bar.update(self._task, total=task.completed if task.total is None else task.total,
                             completed=task.completed if task.total is None else task.total)

    def close(self, stopped: str | None = None) -> None:
        if stopped is None:
            self._complete()
        elif self._task is not None:
            self._bar.update(self._task, stopped=stopped)
            self._bar.stop_task(self._task)
        self._bar.stop()


def make_progress(quiet: bool) -> Progress:
    return RichProgress() if sys.stderr.isatty() and not quiet else Progress()
