"""Errors that end a run, each with the exit status the CLI documents."""

from __future__ import annotations

from etl.rows import Problem


class MigrationError(Exception):
    exit_code = 4  # anything not classified below: I/O errors, disk full, internal errors


class TargetError(MigrationError):
    """The target cannot be used: wrong URI, missing folder, holds data, locked."""

    exit_code = 2


class TargetHoldsData(TargetError):
    """The target holds MLflow data. ``shown`` says what, as MLflow shows it; ``run_ids`` and
    ``experiment_names`` (samples) tell an earlier migration of the same tree."""

    def __init__(self, target: str, shown: str, run_ids=frozenset(), experiment_names=frozenset(),
                 hint: str = "Move it away or choose another --target."):
        self.target, self.shown, self.hint = target, shown, hint
        self.run_ids, self.experiment_names = frozenset(run_ids), frozenset(experiment_names)
        super().__init__(f"target {target} already holds MLflow data ({shown}); etl-migrate never "
                         f"merges into or overwrites a database with data. {hint}")


class InvalidSourceError(MigrationError):
    """The source tree has files that cannot be migrated; every one is listed."""

    exit_code = 3

    def __init__(self, problems: list[Problem], sources: int = 1):
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        which = "the source tree has" if sources == 1 else f"the {sources} source trees have"
        super().__init__(f"{which} {len(problems)} problem(s); nothing was written:\n{listed}")


class VerificationFailed(MigrationError):
    exit_code = 1

    def __init__(self, report, kept=None):
        self.report = report
        self.kept = kept
        where = f"; the staging database is kept at {kept} (--keep-failed)" if kept else ""
        super().__init__(f"verification found {len(report.mismatches)} mismatch(es){where}")


class NotPromoted(MigrationError):
    """The database was built (and verified) but the target could not take it; it is kept."""

    def __init__(self, cause: BaseException, target, kept, verified: bool):
        self.kept = kept
        # A target that is busy, changed or refused is a target error; anything else is I/O.
        self.exit_code = 2 if isinstance(cause, (TargetError, PermissionError)) else 4
        what = "verified database" if verified else "migrated database (NOT verified: --no-verify)"
        super().__init__(
            f"{cause}; it was not touched. The {what} is kept at {kept}: "
            f"once {target} is free, move it there (or point MLflow at it)"
        )


EXIT_CODES = {
    0: "success: migrated and verified (or verification skipped with --no-verify)",
    1: "verification failed: the database differs from the source; target untouched",
    2: "usage or target error: bad option, target neither sqlite:///, postgresql:// nor mysql://, folder "
    "missing or not writable, server unreachable, password rejected, missing privileges, target "
    "holds data or another MLflow version's schema (also when it gained data or stayed locked "
    "during the run: the migrated database is then kept beside it, named in the error), or "
    "another etl-migrate runs on it",
    3: "invalid input: the source tree has files that cannot be migrated (all listed)",
    4: "migration failed: I/O error (e.g. disk full) or internal error; target untouched",
    130: "interrupted (Ctrl-C, or Ctrl-Break on Windows); target untouched",
    143: "terminated (SIGTERM); target untouched",
}

# etl-migrate verify changes nothing; its own outcomes.
VERIFY_EXIT_CODES = {
    0: "the database holds what the tree holds, field by field",
    1: "the database differs from the tree: every difference is listed",
    2: "usage or target error: bad option, source not an mlruns tree, target neither sqlite:/// "
    "nor postgresql://, database missing or not an MLflow database, server unreachable, password "
    "rejected",
    4: "I/O error or internal error",
    130: "interrupted (Ctrl-C, or Ctrl-Break on Windows)",
    143: "terminated (SIGTERM)",
}
