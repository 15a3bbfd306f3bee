"""The tree's experiments, checked by bytes, and the plan of folders the other checks take.

This pass proves each experiment (meta.yaml as MLflow's read_yaml parses it, tag files' bytes,
each dataset's meta.yaml) and lists its run, trace and logged-model folders, without importing
MLflow, so no verification process pays for it. An experiment it cannot prove (files that differ
from the target, an unreadable folder, an experiment only the target has) goes to MLflow's
reader alone: ``etl.verify.compare.verify_experiments``, which also reports what differs. The
other experiments stay proven by bytes.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from etl.verify.claims import foreign, renamed_from
from etl.verify.compare import EXPERIMENT_FIELDS, _connect, _source_ids, listed_stage, target_experiments
from etl.verify.files import key_files, read_meta, same, same_values, subfolders
from etl.verify.report import VerificationReport

# FileStore.RESERVED_EXPERIMENT_FOLDERS and _EXPERIMENT_ID_REGEX (mlflow.utils.validation).
RESERVED = frozenset({"tags", "datasets", "traces", "models"})
EXPERIMENT_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,63}$")
# Dataset.from_dictionary's fields; the first four are required.
DATASET_KEYS = ("name", "digest", "source_type", "source", "schema", "profile")


@dataclass
class Survey:
    report: VerificationReport
    # experiment id -> {"path": folder, "runs": [...], "traces": [...], "models": [...]} (folder names)
    plan: dict[str, dict] = field(default_factory=dict)
    # Experiments MLflow's reader must verify (and plan) instead; None: all of them.
    unproven: set[str] | None = field(default_factory=set)


def survey(mlruns: str, staging: str, skipped: dict[str, set[str]] | None = None,
           id_map: dict[str, str] | None = None, names: dict[str, str] | None = None,
           shared: frozenset[str] = frozenset(), copies: dict[str, dict] | None = None) -> Survey:
    """The source's experiments proven by bytes, and the plan of its folders. Of several sources
    (etl.verify.claims): ``names`` the renamed experiments' target names; ``shared`` the folder
    ids whose target experiment other sources' experiments join (etl.verify.merged checks those,
    here only their folders are listed); ``copies`` (kind -> ids) folders migrated from another
    source's copy, left out of the plan (etl.verify.merged checks them)."""
    skipped, names, copies = skipped or {}, names or {}, copies or {}
    back = _source_ids(id_map)  # renumbered experiments: target id -> the folder's id
    result = Survey(VerificationReport())
    conn = _connect(staging)
    try:
        target, target_tags = target_experiments(conn, back)
        target = {k: v for k, v in target.items() if not foreign(k)}
        children = {}
        for entity, query in (
            ("runs", "SELECT experiment_id, run_uuid FROM runs"),
            ("traces", "SELECT experiment_id, request_id FROM trace_info"),
            ("logged_models", "SELECT experiment_id, model_id FROM logged_models"),
        ):
            children[entity] = defaultdict(set)
            for exp_id, id_ in conn.execute(query):
                children[entity][back.get(str(exp_id), str(exp_id))].add(id_)
        datasets = defaultdict(dict)
        for exp_id, *row in conn.execute(
            "SELECT experiment_id, name, digest, dataset_source_type, dataset_source, dataset_schema, "
            "dataset_profile FROM datasets"
        ):
            datasets[back.get(str(exp_id), str(exp_id))][(row[0], row[1])] = dict(zip(DATASET_KEYS, row))
    finally:
        conn.close()
    folders = _experiment_folders(mlruns)
    if folders is None:
        result.unproven = None
        return result

    report, unproven = result.report, result.unproven
    skipped_experiments = skipped.get("experiments", set())
    seen = set()
    for exp_id, exp_dir in folders:
        if exp_id in seen:
            continue  # MLflow resolves an id to its active folder: the same experiment again
        seen.add(exp_id)
        if exp_id in skipped_experiments:
            report.skip("experiments")
            continue
        if not EXPERIMENT_ID.match(exp_id):
            # MLflow's reader refuses the name as an experiment id ('²'); its own migration and
            # the load leave the folder out, and the census names it.
            continue
        if not os.path.lexists(os.path.join(exp_dir, "meta.yaml")):
            continue  # MLflow's reader skips a folder without meta.yaml, and so does the load
        row = target.pop(exp_id, None)
        entries = subfolders(exp_dir)
        listed = {name: subfolders(os.path.join(exp_dir, name)) for name in ("traces", "models")}
        if exp_id in shared:
            if entries is None or None in listed.values():
                unproven.add(exp_id)
            else:
                result.plan[exp_id] = _plan(exp_dir, entries, listed, skipped, copies, report)
            continue
        dataset_count = _datasets_match(exp_dir, exp_id, datasets.get(exp_id, {}), skipped.get("datasets", set()))
        if (entries is None or row is None or dataset_count is None
                or None in listed.values()
                or not _experiment_matches(exp_dir, exp_id, row, target_tags.get(exp_id, {}), names.get(exp_id))):
            unproven.add(exp_id)
            continue
        report.checked("experiments")
        report.checked("datasets", dataset_count)
        plan = result.plan[exp_id] = _plan(exp_dir, entries, listed, skipped, copies, report)
        for entity, key in (("runs", "runs"), ("traces", "traces"), ("logged_models", "models")):
            expected_absent = skipped.get(entity, set())
            for extra in sorted(children[entity].get(exp_id, set()) - set(plan[key]) - expected_absent):
                report.checked(entity)
                report.mismatch(entity, extra, "presence", False, True)
    # Experiments only the target has: MLflow's reader reports them.
    unproven.update(set(target) - skipped_experiments)
    return result


def _plan(exp_dir: str, entries: list[str], listed: dict, skipped: dict, copies: dict, report) -> dict:
    """The folders of one experiment the chunked checks take: its runs (every folder MLflow does
    not reserve), traces and logged models, without those left out as invalid (counted as
    skipped) or migrated from another source's copy."""
    plan = {"path": exp_dir, "runs": [n for n in entries if n not in RESERVED and n not in copies.get("runs", ())]}
    for key, entity in (("traces", "traces"), ("models", "logged_models")):
        left_out = skipped.get(entity, set())
        report.skip(entity, sum(1 for n in listed[key] if n in left_out))
        plan[key] = [n for n in listed[key] if n not in left_out and n not in copies.get(entity, ())]
    return plan


def _datasets_match(exp_dir: str, exp_id: str, target: dict, skipped: set[str]) -> int | None:
    """How many dataset folders the experiment holds, if each meta.yaml holds exactly one of the
    target's datasets and the target has no other; else None (MLflow's reader decides)."""
    names = subfolders(os.path.join(exp_dir, "datasets"))
    if names is None or any(f"{exp_id}/{name}" in skipped for name in names) or len(names) != len(target):
        return None
    found = set()
    for name in names:
        meta = read_meta(os.path.join(exp_dir, "datasets", name))
        if meta is None or not meta.keys() <= set(DATASET_KEYS) or not set(DATASET_KEYS[:4]) <= meta.keys():
            return None
        key = (meta["name"], meta["digest"])
        row = target.get(key) if all(isinstance(k, str) for k in key) else None
        if row is None or key in found or not all(same(meta.get(k), row[k]) for k in DATASET_KEYS):
            return None
        found.add(key)
    return len(names)


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


def _experiment_matches(exp_dir: str, exp_id: str, row: dict, tags: dict[str, str], renamed: str | None) -> bool:
    meta = read_meta(exp_dir)
    if meta is None or str(meta.get("experiment_id")) != exp_id:
        return False
    # Experiment() requires these; MLflow's reader says why one is missing.
    if not {"name", "artifact_location", "lifecycle_stage"} <= meta.keys():
        return False
    if renamed is not None:
        if not isinstance(meta["name"], str) or not renamed_from(meta["name"], renamed):
            return False
        meta = {**meta, "name": renamed}
    meta = {**meta, "lifecycle_stage": listed_stage(meta["lifecycle_stage"], exp_dir)}
    if any(meta.get(f) != row[f] for f in EXPERIMENT_FIELDS):
        return False
    files = key_files(os.path.join(exp_dir, "tags"))
    return files is not None and same_values(files, tags)
