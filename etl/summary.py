"""The end of a run: the summary table on stdout and the JSON report (--report PATH)."""

from __future__ import annotations

import importlib.metadata
import platform
import sqlite3
from pathlib import Path

from etl import __version__
from etl.rows import TABLES

# Bumped whenever a field of the JSON report changes meaning or goes away.
REPORT_SCHEMA_VERSION = 1


def target_counts(path: Path) -> dict[str, int]:
    """Rows per migrated table in a database, read back after the run."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in TABLES if t in present}
    finally:
        conn.close()


def new_report(command: str, source, target) -> dict:
    try:
        mlflow_version = importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        mlflow_version = None
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "etl-migrate", "version": __version__},
        "mlflow_version": mlflow_version,
        "sqlite_version": sqlite3.sqlite_version,
        "python_version": platform.python_version(),
        "command": command,
        "source": str(source),
        "target": str(target),
        "counts": {"source": {}, "target": {}},
        "files": None,
        "phases": {},
        "throughput": {},
        "problems": [],
        "skipped": [],
        "verification": None,
        "exit_status": None,
        "seconds": None,
    }


def problem_dicts(problems) -> list[dict]:
    return [{"path": p.path, "line": p.line, "reason": p.reason} for p in problems]


def fill_from_load(report: dict, stats, phases: dict[str, float]) -> None:
    report["counts"]["source"] = {t: stats.rows.get(t, 0) for t in TABLES}
    report["files"] = stats.files
    report["phases"].update({k: round(v, 3) for k, v in phases.items()})
    load = phases.get("load") or 0.0
    rows = sum(stats.rows.values())
    report["throughput"] = {
        "rows": rows,
        "rows_per_second": round(rows / load, 1) if load else None,
        "files_per_second": round(stats.files / load, 1) if load else None,
    }


def summary_table(source_counts: dict[str, int], target: dict[str, int] | None) -> str:
    header = f"{'entity table':<28}{'source rows':>14}" + (f"{'in database':>14}" if target is not None else "")
    lines = [header, "-" * len(header)]
    for table in TABLES:
        n = source_counts.get(table, 0)
        if not n and not (target or {}).get(table):
            continue
        line = f"{table:<28}{n:>14,}"
        if target is not None:
            line += f"{target.get(table, 0):>14,}"
        lines.append(line)
    total = sum(source_counts.values())
    lines.append(f"{'total':<28}{total:>14,}" + (f"{sum(target.values()):>14,}" if target is not None else ""))
    return "\n".join(lines)
