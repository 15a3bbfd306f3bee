"""The end of a run: the summary table on stdout and the JSON report (--report PATH)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys

from etl import __version__
from etl.rows import TABLES
from etl.sql_limits import FLOAT_MAX

# Bumped whenever a field of the JSON report changes meaning or goes away.
REPORT_SCHEMA_VERSION = 1


def mlflow_version() -> str | None:
    """The installed MLflow, whose schema the database gets."""
    try:
        return importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return None


def new_report(command: str, source, target) -> dict:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": "etl-migrate", "version": __version__},
        "mlflow_version": mlflow_version(),
        "sqlite_version": sqlite3.sqlite_version,
        "python_version": platform.python_version(),
        "command": command,
        "source": str(source),
        "target": str(target),
        "counts": {"source": {}, "target": {}},
        # Experiments the target could not hold under their ids: old id -> new id (strings).
        "experiment_id_map": {},
        # Per source: what its experiments and registered models became (several sources: etl.source.merge).
        "sources": [],
        "merged": [],
        "on_name_clash": None,
        "files": None,
        "phases": {},
        "throughput": {},
        "problems": [],
        "skipped": [],
        "census": None,
        "unrepresentable_values": [],
        "duplicate_points": [],
        "verification": None,
        "exit_status": None,
        "seconds": None,
    }


def problem_dicts(problems) -> list[dict]:
    return [{"path": p.path, "line": p.line, "reason": p.reason} for p in problems]


# How MLflow's SQL store holds a value it cannot hold as written, per (table, kind).
_STORED_AS = {
    ("logged_model_metrics", "NaN"): "0 (no NaN flag: reads back as 0)",
    ("logged_model_metrics", "+Inf"): f"{FLOAT_MAX!r}",
    ("logged_model_metrics", "-Inf"): f"{-FLOAT_MAX!r}",
    ("metrics", "+Inf"): f"{FLOAT_MAX!r}",
    ("metrics", "-Inf"): f"{-FLOAT_MAX!r}",
}
_OWNER = {"metrics": "run", "logged_model_metrics": "logged model"}


def lossy_dicts(lossy) -> list[dict]:
    """Every metric series holding values the database cannot hold as written, named."""
    return [
        {"table": table, "entity": _OWNER[table], "id": id_, "key": key, "value": kind,
         "points": n, "stored_as": _STORED_AS[(table, kind)]}
        for (table, id_, key, kind), n in sorted(lossy.items())
    ]


def lossy_lines(lossy, limit: int = 20) -> list[str]:
    if not lossy:
        return []
    items = lossy_dicts(lossy)
    lines = ["", f"CHANGED BY MLflow's SQL schema: {sum(lossy.values()):,} metric value(s) in "
             f"{len(items):,} series cannot be stored as the files hold them; the database holds "
             "them as MLflow's own SQL store does:"]
    lines += [f"  - {d['entity']} {d['id']}, metric {d['key']!r}: {d['points']:,} {d['value']} "
              f"point(s) stored as {d['stored_as']}" for d in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit:,} more series (all are listed in the --report JSON)")
    return lines


def duplicate_dicts(duplicates) -> list[dict]:
    """Every metric series with points the database holds once, named."""
    return [
        {"table": table, "entity": _OWNER[table], "id": id_, "key": key, "points": n, "exact": exact}
        for (table, id_, key, exact), n in sorted(duplicates.items(), key=lambda kv: (not kv[0][3], kv[0]))
    ]


def duplicate_lines(duplicates, limit: int = 20) -> list[str]:
    """The summary's account of the points a metric file holds that the database holds once:
    repeats of an earlier point (exact), and logged-model points at the key of an earlier one."""
    lines = []
    items = duplicate_dicts(duplicates)
    for exact in (True, False):
        mine = [d for d in items if d["exact"] is exact]
        if not mine:
            continue
        points = sum(d["points"] for d in mine)
        if exact:
            lines += ["", f"Duplicate points: {points:,} metric point(s) in {len(mine):,} series repeat an "
                      "earlier point of their series exactly and are stored once (MLflow itself logs "
                      "a run's metrics again when the run logs a model):"]
            what = "duplicate point(s)"
        else:
            lines += ["", f"NOT STORED: {points:,} logged-model metric point(s) in {len(mine):,} series repeat "
                      "the timestamp, step and run of an earlier point with another value or dataset; "
                      "MLflow's SQL schema holds one point per timestamp, step and run, and the database "
                      "keeps the first, as MLflow's SQL store does:"]
            what = "point(s) not stored"
        lines += [f"  - {d['entity']} {d['id']}, metric {d['key']!r}: {d['points']:,} {what}" for d in mine[:limit]]
        if len(mine) > limit:
            lines.append(f"  ... and {len(mine) - limit:,} more series (all are listed in the --report JSON)")
    return lines


def fill_from_load(report: dict, stats, phases: dict[str, float]) -> None:
    report["counts"]["source"] = {t: stats.rows.get(t, 0) for t in TABLES}
    report["unrepresentable_values"] = lossy_dicts(stats.lossy)
    report["duplicate_points"] = duplicate_dicts(stats.duplicates)
    report["files"] = stats.files
    report["phases"].update({k: round(v, 3) for k, v in phases.items()})
    load = phases.get("load") or 0.0
    rows = sum(stats.rows.values())
    report["throughput"] = {
        "rows": rows,
        "rows_per_second": round(rows / load, 1) if load else None,
        "files_per_second": round(stats.files / load, 1) if load else None,
    }


# What a row of these tables is, where the table's name does not say it: "metrics" is the
# name of both a table of points and (in MLflow's API) of a run's series.
ROW_UNITS = {"metrics": "points", "latest_metrics": "series", "logged_model_metrics": "points"}


def summary_table(source_counts: dict[str, int], target: dict[str, int] | None) -> str:
    header = f"{'table (rows are)':<32}{'source rows':>14}" + (f"{'in database':>14}" if target is not None else "")
    lines = [header, "-" * len(header)]
    for table in TABLES:
        n = source_counts.get(table, 0)
        if not n and not (target or {}).get(table):
            continue
        name = f"{table} ({ROW_UNITS[table]})" if table in ROW_UNITS else table
        line = f"{name:<32}{n:>14,}"
        if target is not None:
            line += f"{target.get(table, 0):>14,}"
        lines.append(line)
    total = sum(source_counts.values())
    lines.append(f"{'total':<32}{total:>14,}" + (f"{sum(target.values()):>14,}" if target is not None else ""))
    return "\n".join(lines)


def _relative(path: str, is_dir: bool, source: str) -> str:
    rel = os.path.relpath(path, source).replace(os.sep, "/")
    return rel + "/" if is_dir else rel


def census_dict(census, source: str) -> dict:
    """The census for the report: paths relative to the source, a folder as one entry."""
    strays = sorted(census.strays, key=lambda s: s.path)
    return {
        "counts": {
            "migrated_files": sum(census.migrated.values()),
            "kept_in_place_folders": sum(census.kept.values()),
            "not_filestore_entries": len(strays),
        },
        "migrated": {t: census.migrated[t] for t in TABLES if census.migrated[t]},
        "kept_in_place": dict(sorted(census.kept.items())),
        "not_filestore": [_relative(s.path, s.is_dir, source) for s in strays],
        "warnings": [{"path": _relative(s.path, s.is_dir, source), "reason": s.warning}
                     for s in sorted(census.warnings, key=lambda s: s.path)],
    }


def census_lines(report_census: dict) -> list[str]:
    """The census for the summary on stdout: the three counts, then each warning."""
    counts = report_census["counts"]
    lines = [
        f"Census of the source: {counts['migrated_files']:,} files migrated into "
        f"{len(report_census['migrated'])} tables; {counts['kept_in_place_folders']:,} artifact "
        f"folders kept in place; {counts['not_filestore_entries']:,} entries not FileStore data, "
        "not migrated" + (" (named in the report's census and under --verbose)"
                          if counts["not_filestore_entries"] else "")
    ]
    lines += [f"WARNING: {w['path']} {w['reason']}" for w in report_census["warnings"]]
    return lines


def server_command(server_uri: str, packages: tuple[str, ...] = ()) -> str:
    """A command line that starts `mlflow server` on the database, as printed, in the user's
    shell, on the MLflow whose schema the database has.

    Started by uv (`uv run --project`, `uvx`: the environment is uv's, possibly a temporary one,
    and its `mlflow` is on no PATH of the user's), uvx with that MLflow pinned and the packages
    the URI needs (a database driver). Otherwise this environment's own MLflow: as `mlflow`
    when that is what the shell finds, else through this interpreter's path."""
    tail = ["server", "--backend-store-uri", server_uri]
    if os.environ.get("UV"):
        extras = [arg for package in packages for arg in ("--with", package)]
        argv = ["uvx", "--from", f"mlflow=={mlflow_version()}", *extras, "mlflow", *tail]
    elif _on_path_here("mlflow"):
        argv = ["mlflow", *tail]
    else:
        argv = [sys.executable, "-m", "mlflow", *tail]
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


def _on_path_here(program: str) -> bool:
    """Whether the shell's ``program`` is the one installed beside this interpreter."""
    found = shutil.which(program)
    try:
        return found is not None and os.path.samefile(os.path.dirname(found), os.path.dirname(sys.executable))
    except OSError:
        return False


def server_lines(server_uri: str, packages: tuple[str, ...] = ()) -> list[str]:
    """The end of a migration's summary: the schema's MLflow, and how to start a server on it."""
    return [f"The database has the schema of MLflow {mlflow_version()}; start a server of that version on it:",
            f"  {server_command(server_uri, packages)}"]


# --- what each source became (one source: the ids the target could not hold) ------------------


def fill_sources(report: dict, result) -> None:
    """The report's source fields: ``sources`` (what each became: ids, names, copies migrated
    once), ``merged`` and ``on_name_clash``; and ``source``, ``experiment_id_map`` and
    ``census``, of one source as ever, of several per source (a list of paths; maps keyed by
    the source's path)."""
    sources = result.plan.sources
    census = {str(s.mlruns): census_dict(stats.census, str(s.mlruns)) for s, stats in zip(sources, result.load.sources)}
    report["on_name_clash"] = result.plan.rule
    report["sources"] = [source_dict(s) for s in sources]
    report["merged"] = result.plan.merges
    if len(sources) == 1:
        report["source"] = str(sources[0].mlruns)
        report["experiment_id_map"] = _id_map_dict(sources[0].id_map)
        report["census"] = census[report["source"]]
        return
    report["source"] = [str(s.mlruns) for s in sources]
    report["experiment_id_map"] = {str(s.mlruns): _id_map_dict(s.id_map) for s in sources}
    report["census"] = census


def _id_map_dict(id_map: dict[int, int]) -> dict[str, str]:
    return {str(old): str(new) for old, new in sorted(id_map.items())}


def source_dict(source) -> dict:
    """One source's part of the report: every id and name that changed, and the copies."""
    return {
        "path": str(source.mlruns),
        "label": source.label,
        "experiment_id_map": _id_map_dict(source.id_map),
        "experiments_renamed": {str(old): t.name for old, t in sorted(source.experiments.items()) if t.name},
        "experiments_merged": sorted(str(old) for old, t in source.experiments.items() if t.joins),
        "registered_models_renamed": {n: t.name for n, t in sorted(source.models.items()) if t.name != n},
        "registered_models_merged": {n: t.version_offset for n, t in sorted(source.models.items()) if t.joins},
        "copies": [{"kind": kind, "id": entity_id, "path": own, "migrated_from": origin}
                   for kind, held in source.copies.items() for entity_id, (own, origin) in sorted(held.items())],
    }


def id_map_text(id_map: dict[int, int]) -> str:
    if not id_map:
        return "Experiment ids: all kept."
    lines = [f"Experiment ids renumbered ({len(id_map)}; the target's INTEGER cannot hold them; "
             "artifact locations keep the old ids):"]
    lines += [f"  {old} -> {new}" for old, new in sorted(id_map.items(), key=lambda kv: kv[1])]
    return "\n".join(lines)


def plan_lines(plan, dry_run: bool = False) -> list[str]:
    """What each source became, for the summary (one source: the renumbered experiments only)."""
    if len(plan.sources) == 1:
        id_map = plan.sources[0].id_map
        return [id_map_text(id_map)] if id_map or dry_run else []
    labels = {str(s.mlruns): s.label for s in plan.sources}
    lines = [f"Sources ({len(plan.sources)}, in this order: where ids or names clash, the first keeps its own):"]
    lines += [f"  {n}. {s.label}: {s.mlruns}" for n, s in enumerate(plan.sources, 1)]
    changed = [(s, old, new) for s in plan.sources for old, new in sorted(s.id_map.items())
               if not s.experiments[old].joins]
    if changed:
        lines += [f"Experiment ids changed ({len(changed)}; artifact locations keep the old ids):"]
        lines += [f"  {s.label}: {old} -> {new}" for s, old, new in changed]
    kept_once = [m for m in plan.merges if m["kind"] == "experiment" and all(j.get("empty") for j in m["joined"])]
    for m in kept_once:
        joined = ", ".join(f"{labels[j['source']]}'s {j['experiment_id']}" for j in m["joined"])
        lines += [f"Experiment {m['name']!r} kept once: {labels[m['fields_from']['source']]}'s "
                  f"{m['fields_from']['experiment_id']}, as experiment {m['experiment_id']}; the empty {joined} "
                  "joined it"]
    renamed = [(s, old, t.name) for s in plan.sources
               for old, t in sorted(s.experiments.items(), key=lambda kv: kv[1].name or "") if t.name]
    renamed_models = [(s, n, t.name) for s in plan.sources for n, t in sorted(s.models.items()) if t.name != n]
    if renamed or renamed_models:
        lines += [f"Renamed ({len(renamed) + len(renamed_models)}, --on-name-clash rename; the name is an "
                  "earlier source's too):"]
        lines += [f"  {s.label}: experiment {old} -> {name!r}" for s, old, name in renamed]
        lines += [f"  {s.label}: registered model {n!r} -> {name!r}" for s, n, name in renamed_models]
    merged = [m for m in plan.merges if m not in kept_once]
    if merged:
        lines += [f"Merged ({len(merged)}, --on-name-clash merge; the first one's fields, tags and datasets "
                  "win, the others' join where it has none):"]
        for m in merged:
            joined = ", ".join(labels[j["source"]] + (f"'s {j['experiment_id']}" if "experiment_id" in j else "")
                               for j in m["joined"])
            where = f" as experiment {m['experiment_id']}" if "experiment_id" in m else ""
            head = labels[m["fields_from"]["source"]]
            lines += [f"  {m['kind']} {m['name']!r}{where}: {head}'s, joined by {joined}"]
            lines += [f"    tag {t['key']!r} = {t['value']!r} of {labels[t['source']]} not taken (kept {t['kept']!r})"
                      for t in m["not_taken"] if "key" in t]
            lines += [f"    alias {t['alias']!r} of {labels[t['source']]} not taken (kept version {t['kept']})"
                      for t in m["not_taken"] if "alias" in t]
            lines += [f"    dataset {t['dataset']} not taken: the same name and digest, other fields, as {t['kept']}"
                      for t in m["not_taken"] if "dataset" in t]
    copies = [(kind, i, own, origin) for s in plan.sources for kind, held in s.copies.items()
              for i, (own, origin) in sorted(held.items())]
    if copies:
        lines += [f"Copies migrated once ({len(copies)}; the same id with the same files in two sources):"]
        lines += [f"  {kind[:-1].replace('_', ' ')} {i}: {own} is a copy of {origin}" for kind, i, own, origin in copies]
    return lines


def census_text(report: dict) -> list[str]:
    """The census lines of one source, or of each of several."""
    if isinstance(report["source"], str):
        return census_lines(report["census"])
    return [line for path, census in report["census"].items()
            for line in [f"{path}:", *("  " + c for c in census_lines(census))]]
