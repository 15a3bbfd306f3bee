"""What several sources put into one target together: merged experiments, and copies.

An experiment several sources' experiments share (``--on-name-clash merge``, or an empty
``Default`` kept once) is compared with all of their files at once, through MLflow's reader:

- every one of them has the target's name (a merge is by name);
- the target's fields are those of the first one that holds anything (runs, traces, models,
  datasets or tags) if the name is ``Default``, else of the first one, in the order of the sources;
- its tags are all of theirs, the first holder of a key winning; its datasets all of theirs,
  one per (name, digest), the first holder's;
- it holds no run, trace or logged model that none of their folders holds.

Their runs, traces and logged models are compared per source, as any other (etl.verify.runs...).

A copy (an id two sources hold, migrated once from the first) is compared by bytes with the
folder migrated: every file but those under ``artifacts/``, which stay where they are.
"""

from __future__ import annotations

import os
from collections import defaultdict

from etl.verify.claims import Claims
from etl.verify.compare import (DATASET_FIELDS, EXPERIMENT_FIELDS, _compare_dict, _connect, listed_stage,
                                target_experiments)
from etl.verify.files import read_bytes, read_meta
from etl.verify.report import VerificationReport

DEFAULT = "Default"
# FileStore.RESERVED_EXPERIMENT_FOLDERS: what an experiment folder holds that is no run.
RESERVED = frozenset({"tags", "datasets", "traces", "models"})


def verify_merged(groups: dict[str, list[tuple[Claims, str]]], staging: str) -> VerificationReport:
    """``groups``: target experiment id -> the (source, folder id) of each experiment that went
    into it, in the order of the sources."""
    from etl.verify.oracle import tracking_store

    report = VerificationReport()
    conn = _connect(staging)
    try:
        rows, tags = target_experiments(conn, {})
        datasets, children = defaultdict(dict), {kind: defaultdict(set) for kind in ("runs", "traces", "logged_models")}
        for exp_id, *row in conn.execute(
            "SELECT experiment_id, name, digest, dataset_source_type, dataset_source, dataset_schema, "
            "dataset_profile FROM datasets"
        ):
            datasets[str(exp_id)][(row[0], row[1])] = tuple(row[2:])
        for kind, query in (("runs", "SELECT experiment_id, run_uuid FROM runs"),
                            ("traces", "SELECT experiment_id, request_id FROM trace_info"),
                            ("logged_models", "SELECT experiment_id, model_id FROM logged_models")):
            for exp_id, id_ in conn.execute(query):
                children[kind][str(exp_id)].add(id_)
    finally:
        conn.close()
    for target_id, members in groups.items():
        read = []
        for claims, folder in members:
            name = f"{folder} ({claims.label or claims.root})"
            report.checked("experiments")
            store = tracking_store(claims.root)
            try:
                exp = store._get_experiment(folder)
                path = store._get_experiment_path(folder, assert_exists=True)
                sets = {ds: store._get_dataset_from_dir(os.path.join(path, "datasets"), ds)
                        for ds in _folders(os.path.join(path, "datasets"))}
            except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
                report.mismatch("experiments", name, "readable by MLflow", str(e)[:200], None)
                continue
            read.append((claims, folder, name, exp, path, sets))
        row = rows.get(target_id)
        if row is None:
            report.mismatch("experiments", target_id, "presence", True, False)
            continue
        _compare_group(report, target_id, read, row, tags.get(target_id, {}), datasets.get(target_id, {}))
        listed = {"runs": set(), "traces": set(), "logged_models": set()}
        for claims, _folder, _name, _exp, path, _sets in read:
            listed["runs"] |= {f for f in _folders(path) if f not in RESERVED}
            listed["traces"] |= set(_folders(os.path.join(path, "traces")))
            listed["logged_models"] |= set(_folders(os.path.join(path, "models")))
            for kind in listed:
                listed[kind] |= claims.skipped.get(kind, set())
        for kind, ids in listed.items():
            for extra in sorted(children[kind].get(target_id, set()) - ids):
                report.checked(kind)
                report.mismatch(kind, extra, "presence", False, True)
    return report


def _holds_something(exp, path: str, sets: dict) -> bool:
    return bool(exp.tags or sets or _folders(os.path.join(path, "traces")) or _folders(os.path.join(path, "models"))
                or any(f not in RESERVED for f in _folders(path)))


def _compare_group(report, target_id: str, read: list, row: dict, target_tags: dict, target_datasets: dict) -> None:
    if not read:
        return
    head = read[0]
    if head[3].name == DEFAULT:
        head = next((r for r in read if _holds_something(r[3], r[4], r[5])), head)
    for _claims, _folder, name, exp, _path, _sets in read:
        if exp.name != row["name"]:
            report.mismatch("experiments", name, "name (merged)", exp.name, row["name"])
    expected = {field: getattr(head[3], field) for field in EXPERIMENT_FIELDS}
    expected["lifecycle_stage"] = listed_stage(head[3].lifecycle_stage, head[4])
    for field in EXPERIMENT_FIELDS:
        if expected[field] != row[field]:
            report.mismatch("experiments", head[2], field, expected[field], row[field])
    expected_tags: dict[str, str] = {}
    expected_sets: dict[tuple, tuple] = {}
    for r in [head] + [r for r in read if r is not head]:
        for key, value in r[3].tags.items():
            expected_tags.setdefault(key, value)
        for ds in r[5].values():
            # One dataset per (name, digest): the first holder's (the merged runs use it).
            expected_sets.setdefault((ds.name, ds.digest), tuple(getattr(ds, f) for f in DATASET_FIELDS))
            report.checked("datasets")
    _compare_dict(report, "experiments", f"{target_id} (merged)", expected_tags, target_tags)
    for key in sorted(expected_sets.keys() | target_datasets.keys(), key=repr):
        if expected_sets.get(key) != target_datasets.get(key):
            report.mismatch("datasets", f"{target_id} (merged)/{key[0]}@{key[1]}", "fields",
                            expected_sets.get(key), target_datasets.get(key))


def _folders(folder: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError:
        return []


def verify_copies(sources: list[Claims]) -> VerificationReport:
    """Each claimed copy: a folder of this source named by the id, and a folder of an earlier
    source named by the same id, with the same files byte for byte (``artifacts/`` aside)."""
    report = VerificationReport()
    roots = [os.path.join(c.root, "") for c in sources]
    for index, claims in enumerate(sources):
        for kind, copies in claims.copies.items():
            for entity_id, (own, origin) in sorted(copies.items()):
                report.checked(kind)
                if not (own.startswith(roots[index]) and os.path.basename(own) == entity_id
                        and os.path.basename(origin) == entity_id
                        and any(origin.startswith(r) for r in roots[:index])):
                    report.mismatch(kind, entity_id, "copy of", own, origin)
                elif not _same_files(own, origin):
                    report.mismatch(kind, entity_id, f"copy of {origin}", own, "other files")
    return report


def _same_files(a: str, b: str) -> bool:
    files_a, files_b = _files(a), _files(b)
    if files_a is None or files_a != files_b:
        return False
    for rel in (f for f in files_a if not f.endswith("/")):
        data = read_bytes(os.path.join(a, rel))
        if data is None or data != read_bytes(os.path.join(b, rel)):
            return False
    return True


def _files(root: str) -> list[str] | None:
    """Every entry under root but its artifacts/ folder, relative, folders ending in '/'; None
    if it cannot be listed."""
    out = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:
            return None
        for entry in entries:
            name = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if name != "artifacts":
                    out.append(name + "/")
                    stack.append(name + "/")
            else:
                out.append(name)
    return sorted(out)


def views(sources: list[Claims], staging: str) -> tuple[list[tuple[dict, frozenset]], dict, list, list[str]]:
    """How the checks of each source see the target (etl.verify.claims.view), from the folders
    of every source and the claimed ids: per source, its id map and the folder ids whose
    experiment-level checks are not its own (shared with another source's); the target
    experiments several sources' experiments share (target id -> [(source, folder id)]); the
    empty Defaults kept once ([(source, folder id, target id)]: only their name is left to
    check); and the target experiments no source's folder maps to."""
    from etl.verify.claims import view
    from etl.verify.survey import EXPERIMENT_ID, _experiment_folders

    conn = _connect(staging)
    try:
        target_ids = {str(r[0]) for r in conn.execute("SELECT experiment_id FROM experiments")}
    finally:
        conn.close()
    members: dict[str, list[tuple[Claims, str]]] = defaultdict(list)
    maps, paths = [], {}
    for claims in sources:
        own = {}
        for folder, path in _experiment_folders(claims.root) or []:
            if folder in own or not EXPERIMENT_ID.match(folder) or not os.path.lexists(os.path.join(path, "meta.yaml")):
                continue  # (an id in mlruns/ and .trash/ both: MLflow reads the active one)
            own[folder] = claims.experiment_ids.get(folder, folder)
            paths[(id(claims), folder)] = path
            if folder not in claims.skipped.get("experiments", set()):
                members[own[folder]].append((claims, folder))
        maps.append(own)
    shared, folded = {}, []
    for target, held in members.items():
        if len({id(c) for c, _ in held}) < 2:
            continue
        # An empty Default that joins another adds nothing to it: that one is compared as any
        # experiment of its source; of the empty one, only the name.
        empty = [m for m in held if _empty_default(paths[(id(m[0]), m[1])])]
        rest = [m for m in held if m not in empty] or empty[:1]
        if len(rest) > 1:
            shared[target] = held
        else:
            folded += [(c, f, target) for c, f in empty if (c, f) not in rest]
    others = {(id(c), f) for held in shared.values() for c, f in held} | {(id(c), f) for c, f, _ in folded}
    out = [(view(own, target_ids), frozenset(f for f in own if (id(c), f) in others))
           for c, own in zip(sources, maps)]
    claimed = {t for own in maps for t in own.values()}
    return out, shared, folded, sorted(target_ids - claimed, key=int)


def _empty_default(path: str) -> bool:
    """An experiment folder named Default in its meta.yaml that holds nothing: no run, trace,
    logged model, dataset or tag."""
    meta = read_meta(path)
    if meta is None or meta.get("name") != DEFAULT:
        return False
    return not any(f not in RESERVED or _folders(os.path.join(path, f)) or os.listdir(os.path.join(path, f))
                   for f in _folders(path))


def verify_folded(folded: list, staging: str) -> VerificationReport:
    """Each empty Default kept once: the experiment it joined is a Default too."""
    report = VerificationReport()
    conn = _connect(staging)
    try:
        names = {str(i): n for i, n in conn.execute("SELECT experiment_id, name FROM experiments")}
    finally:
        conn.close()
    for claims, folder, target in folded:
        report.checked("experiments")
        if names.get(target) != DEFAULT:
            report.mismatch("experiments", f"{folder} ({claims.label or claims.root})", "name (kept once)",
                            DEFAULT, names.get(target))
    return report
