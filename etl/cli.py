"""The etl-migrate command: flags -> MigrationConfig -> pipeline -> exit status."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import anyio
import click

from etl import __version__, config as defaults
from etl.config import MigrationConfig
from etl.errors import EXIT_CODES, InvalidSourceError, MigrationError, VerificationFailed
from etl.observe import configure_logging, log
from etl.rows import TABLES

EXIT_HELP = "\b\nExit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the run unwinds like Ctrl-C does."""


def _on_sigterm(signum, frame):
    raise Terminated()


@click.group(
    invoke_without_command=True,
    epilog=EXIT_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--source",
    default=defaults.DEFAULT_SOURCE,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The FileStore tree: an mlruns folder, or a folder that contains one.",
)
@click.option(
    "--target",
    default=defaults.DEFAULT_TARGET,
    show_default=True,
    help="SQLite URI of the database to create. It must not hold data already.",
)
@click.option("--workers", default=defaults.DEFAULT_WORKERS, show_default=True, type=click.IntRange(1, 256),
              help="Concurrent producers reading and parsing the tree (parsing runs in at most "
              "one process per CPU core).")
@click.option("--batch-size", default=defaults.DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(1),
              help="Rows written per transaction.")
@click.option("--queue-size", default=defaults.DEFAULT_QUEUE_SIZE, show_default=True, type=click.IntRange(1),
              help="Parsed batches that may wait for the writer; bounds memory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare the database with the source, field by field, before it replaces the target.")
@click.option("--keep-failed", is_flag=True, help="Keep the staging database when verification fails, for inspection.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JSON report of the run (counts, timings, problems, verification) here.")
@click.option("--verbose", "-v", is_flag=True, help="Log every step.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
              help="Log lines on stderr: readable, or one JSON object per line (auto: console on a terminal).")
@click.version_option(__version__, prog_name="etl-migrate")
@click.pass_context
def main(ctx, source, target, workers, batch_size, queue_size, verify, keep_failed, report_path,
         verbose, quiet, log_format):
    """Migrate an MLflow FileStore tree (mlruns/) into an MLflow SQLite database.

    The database is built in a staging file beside the target, verified against the source
    through MLflow's own readers, and only then renamed over the target: the target is never
    half-written. Artifacts stay where they are; their URIs are migrated.

    \b
    Example:
      etl-migrate --source ./mlruns --target sqlite:///mlflow.db --workers 8
    """
    if ctx.invoked_subcommand is not None:
        return
    configure_logging(verbose=verbose, quiet=quiet, fmt=log_format)
    cfg = MigrationConfig(
        source=source, target=target, workers=workers, batch_size=batch_size, queue_size=queue_size,
        verify=verify, keep_failed=keep_failed, report_path=report_path,
    )
    sys.exit(_run(cfg, quiet))


def _run(cfg: MigrationConfig, quiet: bool) -> int:
    from etl.pipeline import migrate

    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    report: dict = {"tool": "etl-migrate", "version": __version__, "source": str(cfg.source), "target": cfg.target}
    result = None
    try:
        result = anyio.run(migrate, cfg)
        code = 0
    except VerificationFailed as e:
        click.echo(e.report.to_text(), err=True)
        click.echo(f"error: {e}; the target was not touched", err=True)
        report["verification"] = e.report.to_dict()
        code = e.exit_code
    except InvalidSourceError as e:
        click.echo(f"error: {e}", err=True)
        report["problems"] = [{"path": p.path, "line": p.line, "reason": p.reason} for p in e.problems]
        code = e.exit_code
    except MigrationError as e:
        click.echo(f"error: {e}", err=True)
        code = e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted: the staging file was removed and the target was not touched", err=True)
        code = 130
    except Terminated:
        click.echo("terminated: the staging file was removed and the target was not touched", err=True)
        code = 143
    except OSError as e:
        click.echo(f"error: {e}; the target was not touched", err=True)
        code = 4
    elapsed = time.monotonic() - started
    if result is not None:
        _summary(result, elapsed, quiet)
        report.update(_result_dict(result))
    report["exit_status"] = code
    report["seconds"] = round(elapsed, 3)
    log.info("run finished", exit_status=code, seconds=round(elapsed, 2))
    if cfg.report_path is not None:
        cfg.report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return code


def _result_dict(result) -> dict:
    return {
        "source": str(result.source),
        "target": str(result.target),
        "rows": {t: result.load.rows.get(t, 0) for t in TABLES},
        "files": result.load.files,
        "phases": {k: round(v, 3) for k, v in result.phases.items()},
        "verification": result.report.to_dict() if result.report is not None else None,
    }


def _summary(result, elapsed: float, quiet: bool) -> None:
    if quiet:
        return
    rows = result.load.rows
    total = sum(rows.values())
    lines = [f"{'table':<28}{'rows':>12}"]
    lines += [f"{t:<28}{rows.get(t, 0):>12,}" for t in TABLES if rows.get(t)]
    lines.append(f"{'total':<28}{total:>12,}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
    rate = total / result.phases["load"] if result.phases.get("load") else 0.0
    lines.append(f"{result.load.files:,} files read; {elapsed:.1f}s in all ({phases}); {rate:,.0f} rows/s loading")
    if result.report is not None:
        lines += ["", result.report.to_text()]
    else:
        lines += ["", "WARNING: verification was skipped (--no-verify); the database was not compared with the source."]
    lines += ["", "Start a server on the result:", f"  mlflow server --backend-store-uri sqlite:///{result.target}"]
    click.echo("\n".join(lines))
