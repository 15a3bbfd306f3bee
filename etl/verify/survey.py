"""The tree's experiments, checked by bytes, and the plan of folders the other checks take.

Most trees hold experiments and runs only. For those, this pass proves the experiments (meta.yaml
as MLflow's read_yaml parses it, tag files' bytes) and lists the run folders, without importing
MLflow, so no verification process pays for it. When it cannot prove everything it covers
(datasets, traces or logged models to read, an experiment whose files differ from the target),
it says so and MLflow's reader takes over: ``etl.verify.compare.verify_experiments``, which also
reports what differs.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from etl.verify.compare import EXPERIMENT_FIELDS, _connect, _source_ids
from etl.verify.files import key_files, read_meta, same_values, subfolders
from etl.verify.report import VerificationReport

# FileStore.RESERVED_EXPERIMENT_FOLDERS and _EXPERIMENT_ID_REGEX (mlflow.utils.validation).
RESERVED = frozenset({"tags", "datasets", "traces", "models"})
EXPERIMENT_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,63}$")


@dataclass
class Survey:
    report: VerificationReport
    # experiment id -> {"path": folder, "runs": [run folder names], "traces": [], "models": []}
    plan: dict[str, dict] = field(default_factory=dict)
    # False: MLflow's reader must verify the experiments (and make the plan) instead.
    proven: bool = True
    # Whether there is a model registry to verify, in the source or in the target.
    registry: bool = False


def survey(mlruns: str, staging: str, skipped: dict[str, set[str]] | None = None,
           id_map: dict[str, str] | None = None) -> Survey:
    skipped = skipped or {}
    back = _source_ids(id_map)  # renumbered experiments: target id -> the folder's id
    result = Survey(VerificationReport())
    conn = _connect(staging)
    try:
        target = {
            back.get(str(r[0]), str(r[0])): dict(zip(EXPERIMENT_FIELDS, r[1:]))
            for r in conn.execute(
                "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
                "last_update_time FROM experiments"
            )
        }
        target_tags = defaultdict(dict)
        for exp_id, key, value in conn.execute("SELECT experiment_id, key, value FROM experiment_tags"):
            target_tags[back.get(str(exp_id), str(exp_id))][key] = value
        target_runs = defaultdict(set)
        for exp_id, run_id in conn.execute("SELECT experiment_id, run_uuid FROM runs"):
            target_runs[back.get(str(exp_id), str(exp_id))].add(run_id)
        others = [
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("datasets", "trace_info", "logged_models")
        ]
        result.registry = any(
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("registered_models", "model_versions")
        )
    finally:
        conn.close()
    registry = subfolders(os.path.join(mlruns, "models"))
    result.registry = result.registry or registry is None or bool(registry)
    folders = _experiment_folders(mlruns)
    if any(others) or folders is None:
        result.proven = False
        return result

    report = result.report
    skipped_experiments = skipped.get("experiments", set())
    skipped_runs = skipped.get("runs", set())
    seen = set()
    for exp_id, exp_dir in folders:
        if exp_id in seen:
            continue  # MLflow resolves an id to its active folder: the same experiment again
        seen.add(exp_id)
        if exp_id in skipped_experiments:
            report.skip("experiments")
            continue
        entries = subfolders(exp_dir)
        if entries is None or not EXPERIMENT_ID.match(exp_id):
            result.proven = False
            return result
        if not os.path.lexists(os.path.join(exp_dir, "meta.yaml")):
            continue  # MLflow's reader skips a folder without meta.yaml, and so does the load
        row = target.pop(exp_id, None)
        if row is None or not _experiment_matches(exp_dir, exp_id, row, target_tags.get(exp_id, {})):
            result.proven = False
            return result
        if any(subfolders(os.path.join(exp_dir, name)) != [] for name in ("datasets", "traces", "models")):
            result.proven = False  # read through MLflow's reader
            return result
        report.checked("experiments")
        runs = [name for name in entries if name not in RESERVED]
        result.plan[exp_id] = {"path": exp_dir, "runs": runs, "traces": [], "models": []}
        for extra in sorted(target_runs.get(exp_id, set()) - set(runs) - skipped_runs):
            report.checked("runs")
            report.mismatch("runs", extra, "presence", False, True)
    if set(target) - skipped_experiments:
        result.proven = False  # experiments only the target has: MLflow's reader reports them
    return result


def _experiment_folders(mlruns: str) -> list[tuple[str, str]] | None:
    """(id, folder) of active then deleted experiments, as FileStore lists them."""
    trash = os.path.join(mlruns, ".trash")
    active, deleted = subfolders(mlruns), subfolders(trash)
    if active is None or deleted is None:
        return None
    return [
        (name, os.path.join(mlruns, name)) for name in active
        if not name.endswith(".trash") and name != "models"
    ] + [(name, os.path.join(trash, name)) for name in deleted]


def _experiment_matches(exp_dir: str, exp_id: str, row: dict, tags: dict[str, str]) -> bool:
    meta = read_meta(exp_dir)
    if meta is None or str(meta.get("experiment_id")) != exp_id:
        return False
    # Experiment() requires these; MLflow's reader says why one is missing.
    if not {"name", "artifact_location", "lifecycle_stage"} <= meta.keys():
        return False
    if any(meta.get(f) != row[f] for f in EXPERIMENT_FIELDS):
        return False
    files = key_files(os.path.join(exp_dir, "tags"))
    return files is not None and same_values(files, tags)
