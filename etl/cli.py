"""The etl-migrate command: flags -> MigrationConfig -> pipeline -> exit status."""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import anyio
import click

from etl import __version__
from etl import config as defaults
from etl.config import RULES, MigrationConfig
from etl.errors import (
    EXIT_CODES,
    VERIFY_EXIT_CODES,
    InvalidSourceError,
    MigrationError,
    TargetError,
    VerificationFailed,
)
from etl.observe import configure_logging, log, make_progress, structured_logs
from etl.sink.target import redact
from etl.summary import (
    census_text,
    duplicate_dicts,
    duplicate_lines,
    fill_from_load,
    fill_sources,
    lossy_dicts,
    lossy_lines,
    new_report,
    plan_lines,
    problem_dicts,
    server_lines,
    summary_table,
)

def _exit_help(codes: dict[int, str]) -> str:
    return "\b\nExit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in codes.items())


EXIT_HELP = _exit_help(EXIT_CODES)
VERIFY_EXIT_HELP = _exit_help(VERIFY_EXIT_CODES)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run unwinds exactly as Ctrl-C does. A
    KeyboardInterrupt because asyncio re-raises only that (and SystemExit) from inside its
    transports: raised during a write to a worker's pipe, any other exception was taken for a
    broken pipe, and the run ended in exit 4 instead of 143."""


# How long a stop (Ctrl-C, SIGTERM) may take to unwind before the process exits regardless.
STOP_GRACE_SECONDS = 30


def _arm_stop_watchdog(code: int) -> None:
    """If unwinding after a signal ever hangs (a worker that will not die, say), still exit with
    the signal's status and without this run's staging file; the lock dies with the process."""

    def fire() -> None:
        for path in glob.glob(f"{_staging_glob}{os.getpid()}*"):
            with contextlib.suppress(OSError):
                os.unlink(path)
        # The unwinding that would have said how the run ended is what hung (a thread importing
        # MLflow on a loaded machine took the whole grace): say it here, unbuffered.
        if _stopped is not None:
            word = "terminated" if code == 143 else "interrupted"
            with contextlib.suppress(OSError):
                os.write(2, f"{word}: {_stopped}\n".encode())
        os._exit(code)

    timer = threading.Timer(STOP_GRACE_SECONDS, fire)
    timer.daemon = True
    timer.start()


_staging_glob = ""
# What a stopped run left as it was, in the running command's terms (UNTOUCHED); set by
# _guarded, which installs the handlers, and None once said.
_stopped: str | None = None


def _on_sigterm(signum, frame):
    _arm_stop_watchdog(143)
    raise Terminated()


def _on_sigint(signum, frame):
    # Our own handler, not Python's default: asyncio replaces the default one with a handler that
    # only cancels the main task, and a cancelled anyio task group can swallow that and go on.
    _arm_stop_watchdog(130)
    raise KeyboardInterrupt()


def _workers_option(help_text: str):
    return click.option("--workers", default=defaults.DEFAULT_WORKERS, show_default=True,
                        type=click.IntRange(1, 256), help=help_text)


def _common_options(func):
    options = [
        click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write a JSON report of the run here (counts, timings, problems, "
                     "census of the tree, metric values stored otherwise than written, duplicate "
                     "points stored once, verification, exit status)."),
        click.option("--verbose", "-v", is_flag=True,
                     help="Log every step, per experiment, and every entry of the tree that is "
                     "not FileStore data."),
        click.option("--quiet", "-q", is_flag=True,
                     help="Print nothing but errors: no summary, progress or warnings (the "
                     "--report file still records the warnings)."),
        click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
                     show_default=True,
                     help="Log lines on stderr: readable, or one JSON object per line, with "
                     "the records of the run (its start, load and end: phases, counts) "
                     "(auto: readable on a terminal, JSON otherwise)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run() -> None:
    """The installed command (console script and ``python -m etl``): main(), then the exit."""
    try:
        main()
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            raise
        _exit_now(e.code or 0)


def _exit_now(code: int) -> None:
    """Exit without tearing the interpreter down. Teardown frees every object of every loaded
    module one by one: with MLflow loaded (~2,000 modules) that was 0.7 s of CPU, a quarter of a
    small tree's whole run. Nothing is left to release by now (the staging file, the lock and the
    worker processes went when the run ended), so only what a normal exit does for others
    remains, in its order: waiting for threads that are not daemons, exit handlers (logging's,
    MLflow's), flushing stdout and stderr."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def _source_options(help_text: str):
    def add(func):
        func = click.option(
            "--on-name-clash", type=click.Choice(RULES), default=RULES[0], show_default=True,
            help="With several --source: an experiment, registered model or prompt name that more than "
            "one source holds. rename: the later ones get the source's folder name after theirs, "
            "'churn (proj-b)'; merge: into the first one, whose fields and tags win; fail: refuse, "
            "listing them. An empty Default experiment is kept once whatever the choice.")(func)
        return click.option("--source", "sources", multiple=True, default=[defaults.DEFAULT_SOURCE],
                            show_default=True, type=click.Path(file_okay=False, path_type=Path),
                            help=help_text)(func)
    return add


@click.group(invoke_without_command=True, epilog=EXIT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@_source_options("The FileStore tree: an mlruns folder, or a folder that contains one. Give it "
                 "several times to migrate several trees into one database, in one verified run: "
                 "where their ids or names clash, the first source keeps its own.")
@click.option("--target", default=defaults.DEFAULT_TARGET, show_default=True,
              help="The MLflow database to create or fill: sqlite:///path.db (a symlink is followed "
              "to its file), postgresql://user@host:5432/db (also postgresql+psycopg://; password "
              "from the URI, PGPASSWORD or ~/.pgpass; the schema is public or the one the URI's "
              "options=-csearch_path=... names), or mysql://user@host:3306/db (also "
              "mysql+pymysql://; MySQL or MariaDB, utf8mb4; password from the URI, MYSQL_PWD or "
              "~/.my.cnf; staged in a database etl_migrate_staging_... of the same server). It must "
              "not hold data (one MLflow just created counts as empty).")
@click.option("--batch-size", default=defaults.DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(1), help="Rows written per transaction.")
@click.option("--queue-size", default=defaults.DEFAULT_QUEUE_SIZE, show_default=True,
              type=click.IntRange(1), help="Parsed batches that may wait for the writer; bounds memory.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare the database with the source, field by field, before it replaces the target.")
@click.option("--keep-failed", is_flag=True,
              help="When verification fails, keep the staging database (named in the error) for inspection.")
@click.option("--skip-invalid", is_flag=True,
              help="Migrate everything readable and list every item left out (file and reason) "
              "in the output and the report, instead of stopping at invalid input.")
@click.option("--dry-run", is_flag=True,
              help="Read and parse everything, print what would be written and any problems (a "
              "target a real run would refuse among them); write nothing.")
@_workers_option("Concurrent producers reading and parsing the tree (parsing runs in at most "
                 "one process per CPU core; a tree of up to 100 run, trace and model folders is "
                 "parsed in this process).")
@_common_options
@click.version_option(__version__, prog_name="etl-migrate")
@click.pass_context
def main(ctx, sources, on_name_clash, target, batch_size, queue_size, verify, keep_failed, skip_invalid, dry_run,
         workers, report_path, verbose, quiet, log_format):
    """Migrate an MLflow FileStore tree (mlruns/) into an MLflow database (SQLite, PostgreSQL or
    MySQL / MariaDB).

    The database is built in a staging area (SQLite: a file beside the target; PostgreSQL: a
    schema of its own in the target database; MySQL: a database of its own on the same server),
    verified against the source files (rendered into their bytes, and through MLflow's own
    readers wherever those differ), and only then promoted. SQLite: linked into place, or copied
    into an existing empty target (one a running mlflow server may have open) under its write
    lock. PostgreSQL: MLflow's empty tables are replaced by the staged ones in one transaction.
    MySQL: by one RENAME TABLE. The target is never half-written and never clobbered: if it
    gained data during the run, it is left alone and the verified database is kept beside it.
    Artifacts and trace spans stay where they are; their URIs are migrated. On PostgreSQL and
    MySQL, experiments whose ids do not fit their 32-bit INTEGER get new ids; the summary and the
    report list the mapping. On MySQL, keys its collation holds as one (lr/LR, a/a ) are invalid
    input. Several --source trees go into one database in one run: ids and names that clash are
    renumbered, renamed or merged, and listed per source.

    \b
    Examples:
      etl-migrate --source ./mlruns --target sqlite:///mlflow.db --workers 8
      etl-migrate --source ./mlruns --target postgresql://mlflow@dbhost:5432/mlflow
      etl-migrate --source ./mlruns --target mysql://mlflow@dbhost:3306/mlflow
      etl-migrate --source ~/proj-a/mlruns --source ~/proj-b/mlruns --target sqlite:///team.db
      etl-migrate --dry-run --source ./mlruns
      etl-migrate verify --source ./mlruns --target sqlite:///mlflow.db
    """
    # MLflow is a library here, reading files offline; its usage telemetry (on by default) would
    # report this tool's imports as someone's MLflow use and reach out from air-gapped hosts.
    # Set before any MLflow import, and inherited by worker processes; the user's own setting wins.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if ctx.invoked_subcommand is not None:
        return
    configure_logging(verbose=verbose, quiet=quiet, fmt=log_format)
    if (error := _report_path_error(report_path)) is not None:
        raise click.UsageError(error)
    cfg = MigrationConfig(sources=tuple(sources), target=target, workers=workers, batch_size=batch_size,
                          queue_size=queue_size, verify=verify, keep_failed=keep_failed,
                          skip_invalid=skip_invalid, report_path=report_path, on_name_clash=on_name_clash)
    ctx.exit(_run_migrate(cfg, dry_run, quiet))


@main.command("verify", epilog=VERIFY_EXIT_HELP,
              short_help="Check an existing database against a tree, field by field; change nothing.")
@_source_options("The FileStore tree the database was made from; several, in the order the "
                 "migration was given them.")
@click.option("--target", default=defaults.DEFAULT_TARGET, show_default=True,
              help="URI of the database to check, sqlite:///..., postgresql://... or mysql://... (made by "
              "etl-migrate or by `mlflow migrate-filestore`).")
@_workers_option("Concurrent comparisons of the tree with the database (in at most one process per "
                 "CPU core; a tree of up to 100 run, trace and model folders is compared in this "
                 "process).")
@_common_options
@click.pass_context
def verify_command(ctx, sources, on_name_clash, target, workers, report_path, verbose, quiet, log_format):
    """Verify an existing database against a FileStore tree, field by field; change nothing.

    Prints the census of the tree and names the metric values MLflow's SQL store cannot hold as
    the files hold them (a logged model's NaN held as 0, any +-Inf as +-max), as a migration does.
    """
    configure_logging(verbose=verbose, quiet=quiet, fmt=log_format)
    if (error := _report_path_error(report_path)) is not None:
        raise click.UsageError(error)
    ctx.exit(_run_verify(tuple(sources), on_name_clash, target, workers, report_path, quiet))


def _install_stop_handlers() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    # Windows delivers Ctrl-Break as SIGBREAK (and has no other way to stop a console program
    # politely); it stops the run as Ctrl-C does. SIGTERM is absent on some platforms.
    for name, handler in (("SIGBREAK", _on_sigint), ("SIGTERM", _on_sigterm)):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


# What a run that ended early left as it was, in each command's terms.
UNTOUCHED = {"migrate": ("the target was not touched", "the staging file was removed and the target was not touched"),
             "dry-run": ("nothing was written", "nothing was written"),
             "verify": ("nothing was changed", "nothing was changed")}


def _guarded(report: dict, body) -> int:
    """Run body(); map every way a run can end to its exit status and an error line."""
    global _stopped
    untouched, stopped = UNTOUCHED[report["command"]]
    _stopped = stopped
    _install_stop_handlers()
    started = time.monotonic()
    try:
        body()
        code = 0
    except VerificationFailed as e:
        click.echo(e.report.to_text(), err=True)
        click.echo(f"error: {e}; {untouched}", err=True)
        report["verification"] = e.report.to_dict()
        code = e.exit_code
    except InvalidSourceError as e:
        click.echo(f"error: {e}", err=True)
        report["problems"] = problem_dicts(e.problems)
        code = e.exit_code
    except MigrationError as e:
        click.echo(f"error: {redact(str(e))}", err=True)
        code = e.exit_code
    except Terminated:
        _stopped = None
        click.echo(f"terminated: {stopped}", err=True)
        code = 143
    except KeyboardInterrupt:
        _stopped = None
        click.echo(f"interrupted: {stopped}", err=True)
        code = 130
    except OSError as e:
        click.echo(f"error: {redact(str(e))}; {untouched}", err=True)
        code = 4
    except Exception as e:  # noqa: BLE001 - an unforeseen failure still ends cleanly, and says so
        if structured_logs():  # on a terminal, the error line below says it once
            log.error("internal error", error=redact(f"{type(e).__name__}: {e}"))
        click.echo(f"error: internal error ({type(e).__name__}: {redact(str(e))}); {untouched}", err=True)
        code = 4
    report["exit_status"] = code
    report["seconds"] = round(time.monotonic() - started, 3)
    return code


def _shown(progress, func, *args):
    """func(*args) under the progress display, which ends complete only if func returned: a
    run stopped midway leaves its bar where it stopped, saying why, not at 100%."""
    try:
        result = func(*args)
    except Terminated:
        progress.close("terminated")
        raise
    except KeyboardInterrupt:
        progress.close("interrupted")
        raise
    except BaseException:
        progress.close("stopped")
        raise
    progress.close()
    return result


def _finish(report: dict, report_path: Path | None, code: int) -> int:
    """Log the run's end and write the report; the exit status, which a report that cannot be
    written does not change (after a promotion the database is there: say so, plainly)."""
    # A record for machines: with JSON logs (and in --report). On a terminal the last thing
    # printed is the outcome, which the summary or the error line has said.
    if structured_logs():
        log.info("run finished", command=report["command"], exit_status=report["exit_status"],
                 seconds=report["seconds"], phases=report["phases"],
                 rows_per_second=report["throughput"].get("rows_per_second"),
                 counts={k: v for k, v in report["counts"]["source"].items() if v})
    if report_path is None:
        return code
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere: JSON's own escapes keep it
        data = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode("ascii")
    try:
        report_path.write_bytes(data)
    except OSError as e:
        click.echo(f"error: the report could not be written to {report_path}: {e.strerror or e} "
                   f"(the run itself ended with exit status {code})", err=True)
    return code


def _report_path_error(report_path: Path | None) -> str | None:
    """Why the report could not be written, checked before the run: the report is written after
    promotion, where nothing may fail."""
    if report_path is None:
        return None
    folder = report_path.parent if str(report_path.parent) else Path(".")
    if report_path.is_dir():
        return f"--report {report_path}: is a folder"
    if not folder.is_dir():
        return f"--report {report_path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (report_path.exists() and not os.access(report_path, os.W_OK)):
        return f"--report {report_path}: not writable"
    return None


def _run_migrate(cfg: MigrationConfig, dry_run: bool, quiet: bool) -> int:
    from etl.pipeline import dry_run as run_dry, migrate
    from etl.sink.target import open_target

    global _staging_glob
    with contextlib.suppress(MigrationError):
        _staging_glob = open_target(cfg.target).staging_glob()

    report = new_report("dry-run" if dry_run else "migrate", _sources_shown(cfg.sources), redact(cfg.target))
    progress = make_progress(quiet)

    def body():
        result = _shown(progress, anyio.run, run_dry if dry_run else migrate, cfg, progress)
        report["target"] = result.target
        fill_from_load(report, result.load, result.phases)
        fill_sources(report, result)
        if dry_run:
            _print_dry_run(result, report, quiet)
            if result.load.problems:
                raise InvalidSourceError(result.load.problems, len(result.sources))
            if result.refused is not None:  # the exit status a real run would have
                raise TargetError(f"a real run would refuse the target: {result.refused}")
            return
        report["skipped"] = problem_dicts(result.load.problems) + [
            {"path": None, "line": None, "reason": f"{n} {table} rows of skipped entities left out"}
            for table, n in result.load.orphans.items()
        ]
        report["counts"]["target"] = result.counts
        report["verification"] = result.report.to_dict() if result.report is not None else {"skipped": True}
        _print_summary(result, report, quiet)

    code = _guarded(report, body)
    return _finish(report, cfg.report_path, code)


def _print_dry_run(result, report: dict, quiet: bool) -> None:
    if quiet:
        return
    click.echo("Dry run: nothing was written. This is what would be migrated:")
    click.echo(summary_table(dict(result.load.rows), None))
    click.echo(f"{result.load.files:,} files read in {result.phases['load']:.1f}s")
    click.echo("\n".join(census_text(report)))
    for line in duplicate_lines(result.load.duplicates) + lossy_lines(result.load.lossy):
        click.echo(line)
    if result.load.problems:
        click.echo(f"{len(result.load.problems)} problem(s) would stop the migration (see below).")
    elif result.refused is not None:
        click.echo("No problems found in the tree, but a real run would refuse the target (see below).")
    else:
        click.echo("\n".join(plan_lines(result.plan, dry_run=True)))
        click.echo(f"No problems found: a run without --dry-run would migrate it into {result.target}.")


def _print_summary(result, report: dict, quiet: bool) -> None:
    if quiet:
        return
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
    lines = [summary_table(report["counts"]["source"], report["counts"]["target"]),
             f"{result.load.files:,} files; {report['seconds'] or sum(result.phases.values()):.1f}s "
             f"({phases}); {report['throughput']['rows_per_second'] or 0:,.0f} rows/s loading",
             *census_text(report), *duplicate_lines(result.load.duplicates)]
    if result.load.problems:
        lines += ["", f"SKIPPED {len(result.load.problems)} invalid item(s) (--skip-invalid); "
                  "they are NOT in the database:"]
        lines += [f"  - {p}" for p in result.load.problems]
        lines += [f"  - {n} {table} row(s) belonging to them" for table, n in result.load.orphans.items()]
    lines += lossy_lines(result.load.lossy)
    plan = plan_lines(result.plan)
    if plan:
        lines += ["", *plan]
    if result.report is not None:
        lines += ["", result.report.to_text()]
    else:
        lines += ["", "WARNING: verification was skipped (--no-verify); the database was NOT "
                  "compared with the source."]
    lines += ["", *server_lines(result.server_uri, result.server_packages)]
    click.echo("\n".join(lines))


def _sources_shown(sources) -> str | list[str]:
    """--source as the report shows it before the run resolves it: a path, or the list of them."""
    return str(sources[0]) if len(sources) == 1 else [str(s) for s in sources]


def _run_verify(sources: tuple[Path, ...], on_name_clash: str, target: str, workers: int,
                report_path: Path | None, quiet: bool) -> int:
    from etl.pipeline import verify_existing

    report = new_report("verify", _sources_shown(sources), redact(target))
    progress = make_progress(quiet)

    def body():
        run = _shown(progress, anyio.run, verify_existing, sources, target, workers, progress, on_name_clash)
        result = run.report
        report["target"] = run.target
        report["phases"] = {k: round(v, 3) for k, v in run.phases.items()}
        report["counts"]["target"] = run.counts
        fill_sources(report, run)
        report["verification"] = result.to_dict()
        report["unrepresentable_values"] = lossy_dicts(result.lossy)
        report["duplicate_points"] = duplicate_dicts(result.duplicates)
        if not quiet:
            click.echo("\n".join(census_text(report) + duplicate_lines(result.duplicates)
                                  + lossy_lines(result.lossy)))
        if not result.ok:
            raise VerificationFailed(result)
        if not quiet:
            plan = plan_lines(run.plan)
            if plan:
                click.echo("\n".join(plan) + "\n")
            click.echo(result.to_text())

    code = _guarded(report, body)
    return _finish(report, report_path, code)
