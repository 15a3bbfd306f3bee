"""The model registry: registered models, their tags and aliases, model versions and their tags.

Two ways to prove a registered model (its folder ``models/<name>/`` with every version in it),
tried in this order, as for runs (``etl.verify.runs``):

1. Bytes (no MLflow). Each ``meta.yaml`` is parsed with the loader MLflow's ``read_yaml`` uses and
   its fields compared with the target's row; a tag file holds its value's UTF-8 bytes and an
   alias file the version number as text, so those are compared with the target's rows rendered
   into those bytes. Only what MLflow's registry FileStore writes is accepted: a key it does not
   write, an unexpected type, a name its reader would refuse, a symlink, anything that differs.
2. MLflow's registry FileStore reader (``etl.verify.oracle.registry_store``), for a registered
   model the first way could not prove. This way reports.

What MLflow's reader drops, defaults or derives, and how each is kept here:

- a registered model's ``meta.yaml`` repeats its aliases as a mapping: the reader takes them from
  the ``aliases/`` folder instead (tags likewise from ``tags/``, for a version too), and so does
  the database; the mapping is not compared.
- a model version's ``status`` missing from the file is ``READY``; every other missing field is
  None (``current_stage`` too), as ``ModelVersion``/``FileModelVersion`` default them. A target's
  NULL ``current_stage`` never matches: MLflow's SQL store reads versions ``WHERE current_stage !=
  'Deleted_Internal'``, which NULL never passes, so it shows no such version at all.
- ``storage_location`` exists only on the store's ``FileModelVersion``: compared as the file holds it.
- ``model_id``: the reader looks the logged model up (its metrics and params); MLflow's SQL schema
  has no such column, so it is not compared; nor are ``deployment_job_*`` and ``workspace``.
- a deleted version keeps its folder with ``current_stage: Deleted_Internal``: compared as any
  other version (the database keeps it so as well).
- a folder without ``meta.yaml`` is no registered model to MLflow's reader; a registered model's
  name is its ``meta.yaml``'s, the version's key its ``meta.yaml``'s (name, version).

The first way only ever says "equal" or "not sure", so what it passes MLflow's reader passes too.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections import defaultdict

from etl.ids import LINKED_EXPERIMENTS_TAG, linked_ids, relinked
from etl.verify.claims import Claims, renamed_from
from etl.verify.compare import _compare_dict, _compare_fields, _connect, _read_each
from etl.verify.files import key_files, parse_meta, read_bytes, same_values, subfolders
from etl.verify.report import VerificationReport

MODEL_FIELDS = ("creation_timestamp", "last_updated_timestamp", "description")
VERSION_FIELDS = (
    "creation_timestamp", "last_updated_timestamp", "description", "user_id", "current_stage",
    "source", "run_id", "status", "status_message", "run_link", "storage_location",
)
# The keys MLflow's registry FileStore writes into meta.yaml (_save_registered_model_as_meta_file,
# _save_model_version_as_meta_file, in the releases that write each: 3.2 writes a version's
# "metrics" and "params", which its reader only carries), and "tags" and "aliases", which its
# reader replaces with the tags/ and aliases/ folders whatever they hold. Another key sends the
# registered model to MLflow's reader.
MODEL_META_KEYS = frozenset({
    "name", *MODEL_FIELDS, "tags", "aliases", "deployment_job_id", "deployment_job_state", "workspace",
})
VERSION_META_KEYS = frozenset({
    "name", "version", *VERSION_FIELDS, "tags", "aliases", "model_id", "metrics", "params",
    "deployment_job_state", "workspace",
})
VERSION_PREFIX = "version-"
PROMPT_TAG = "mlflow.prompt.is_prompt"
# What a target's NULL current_stage shows through MLflow (see above): a mismatch, whatever the file.
HIDDEN_STAGE = "NULL (MLflow's database then shows no such version)"

# mlflow.utils.validation's tag key rule (validate_param_and_metric_name) without the ':' that it
# allows on POSIX only: a key outside it goes to MLflow's reader, which decides.
_TAG_KEY = re.compile(r"[/\w.\- ]*")


def _path_not_unique(name: str) -> bool:
    """mlflow.utils.validation.path_not_unique."""
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def valid_tag_key(key: str) -> bool:
    """A tag key MLflow's reader accepts (``_validate_tag_name``) on every platform."""
    return _TAG_KEY.fullmatch(key) is not None and not _path_not_unique(key)


def valid_model_name(name: str) -> bool:
    """A folder name MLflow's registry reader accepts as a registered model's
    (``file_store._validate_model_name``: no '/', ':', '%', path separator, nor a path that
    resolves elsewhere)."""
    return bool(name.strip()) and not any(c in name for c in "/:%\\") and not _path_not_unique(name)


def has_registry(roots: list[str], staging: str) -> bool:
    """Whether there is a model registry to verify, in a source or in the target."""
    conn = _connect(staging)
    try:
        if any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
               for table in ("registered_models", "model_versions")):
            return True
    finally:
        conn.close()
    return any(subfolders(os.path.join(root, "models")) != [] for root in roots)


def verify_registry(mlruns: str, staging: str, skipped: dict[str, set[str]] | None = None) -> VerificationReport:
    """The registry of one source against the target's."""
    return verify_registries([Claims(mlruns, skipped=skipped or {})], staging)


def verify_registries(sources: list[Claims], staging: str) -> VerificationReport:
    """The registries of one or more sources against the target's (etl.verify.claims: renamed
    models by their target names; a model several sources merged into one, by
    ``_verify_merged_models``); then whatever of the target no source holds."""
    report = VerificationReport()
    target = _target(staging)
    # Names left out as invalid count as seen: their absence from the target is expected.
    seen_models, seen_versions = set(), set()
    members: dict[str, list[tuple[Claims, str]]] = defaultdict(list)  # target name -> (source, folder)
    for claims in sources:
        for name, _ in _model_folders(os.path.join(claims.root, "models")) or ():
            if name not in claims.skipped.get("registered_models", set()):
                members[claims.model_names.get(name, name)].append((claims, name))
    shared = {name for name, held in members.items() if len(held) > 1}
    for claims in sources:
        skipped = claims.skipped.get("registered_models", set())
        seen_models |= {claims.model_names.get(n, n) for n in skipped}
        _verify_source(report, claims, target, shared, seen_models, seen_versions)
    if shared:
        _verify_merged_models(report, {name: members[name] for name in sorted(shared)}, target,
                              seen_models, seen_versions)
    for name in sorted(target["models"].keys() - seen_models):
        report.checked("registered_models")
        report.mismatch("registered_models", name, "presence", False, True)
    left_out = {c.model_names.get(n, n) for c in sources for n in c.skipped.get("registered_models", set())}
    for name, version in sorted(k for k in target["versions"].keys() - seen_versions if k[0] not in left_out):
        report.checked("model_versions")
        report.mismatch("model_versions", f"{name}/{version}", "presence", False, True)
    return report


def _verify_source(report, claims: Claims, target: dict, shared: set[str], seen_models: set, seen_versions: set) -> None:
    """One source's registered models, but those merged with another source's, by bytes, then
    with MLflow's reader for what the bytes could not prove."""
    skipped = claims.skipped.get("registered_models", set())
    folders = _model_folders(os.path.join(claims.root, "models"))
    unsure = None if folders is None else []
    for name, path in folders or ():
        as_name = claims.model_names.get(name, name)
        if name in skipped:
            report.skip("registered_models")
            continue
        if as_name in shared:
            continue
        versions = None if path is None else _matches_files(path, name, target, as_name)
        if versions is None:
            unsure.append(name)
        elif versions is not NOT_A_MODEL:
            report.checked("registered_models")
            report.checked("model_versions", len(versions))
            seen_models.add(as_name)
            seen_versions |= versions
    if unsure is None or unsure:
        from etl.verify.oracle import registry_store

        store = registry_store(claims.root)
        paths = (store._get_all_registered_model_paths() if unsure is None
                 else [os.path.join(claims.root, "models", name) for name in unsure])
        for path in paths:
            folder = os.path.basename(path)
            as_name = claims.model_names.get(folder, folder)
            if as_name not in shared:
                _verify_model_with_mlflow(report, store, path, target, skipped, seen_models, seen_versions, as_name,
                                          claims.experiment_ids)


def _target(staging: str) -> dict:
    conn = _connect(staging)
    try:
        models = {
            r[0]: dict(zip(MODEL_FIELDS, r[1:]))
            for r in conn.execute(
                "SELECT name, creation_time, last_updated_time, description FROM registered_models"
            )
        }
        tags, aliases, version_tags = defaultdict(dict), defaultdict(dict), defaultdict(dict)
        for name, key, value in conn.execute('SELECT name, "key", value FROM registered_model_tags'):
            tags[name][key] = value
        for name, alias, version in conn.execute("SELECT name, alias, version FROM registered_model_aliases"):
            aliases[name][alias] = str(version)
        versions = {
            (r[0], str(r[1])): dict(zip(VERSION_FIELDS, r[2:]))
            for r in conn.execute(
                "SELECT name, version, creation_time, last_updated_time, description, user_id, "
                "current_stage, source, run_id, status, status_message, run_link, storage_location "
                "FROM model_versions"
            )
        }
        for name, version, key, value in conn.execute('SELECT name, version, "key", value FROM model_version_tags'):
            version_tags[(name, str(version))][key] = value
    finally:
        conn.close()
    versions_of = defaultdict(set)
    for key in versions:
        versions_of[key[0]].add(key)
    return {"models": models, "tags": tags, "aliases": aliases, "versions": versions,
            "versions_of": versions_of, "version_tags": version_tags}


def _model_folders(folder: str) -> list[tuple[str, str | None]] | None:
    """(name, path) of the folders in models/ as MLflow's reader lists them (every folder,
    following symlinks); path None for a symlink, which only MLflow's reader decides. [] when
    there is no registry; None when models/ cannot be listed."""
    if not os.path.isdir(folder):
        return []  # a tracking-only tree (MLflow's reader would refuse to list it)
    try:
        with os.scandir(folder) as entries:
            return sorted(
                (e.name, None if e.is_symlink() else e.path) for e in entries if e.is_dir()
            )
    except OSError:
        return None


# --- 1. bytes -------------------------------------------------------------------------------------

NOT_A_MODEL = object()  # a folder MLflow's reader skips: no meta.yaml


def _meta(folder: str, keys: frozenset[str]) -> dict | None:
    data = read_bytes(os.path.join(folder, "meta.yaml"))
    meta = None if data is None else parse_meta(data)
    if meta is None or not meta.keys() <= keys:
        return None
    workspace = meta.get("workspace")
    # MLflow's entities strip() a workspace: anything else makes its reader fail.
    return meta if workspace is None or type(workspace) is str else None


def _tags_match(folder: str, values: dict[str, str]) -> bool:
    files = key_files(os.path.join(folder, "tags"))
    return files is not None and all(map(valid_tag_key, files)) and same_values(files, values)


def _matches_files(path: str, name: str, target: dict, as_name: str | None = None):
    """The (name, version) keys of the registered model in ``path`` when the target provably
    holds exactly what its files hold (under ``as_name``, a name claimed for it); NOT_A_MODEL for
    a folder MLflow's reader skips; None when unsure (MLflow's reader takes the model over and
    reports)."""
    if not os.path.lexists(os.path.join(path, "meta.yaml")):
        return NOT_A_MODEL
    as_name = as_name or name
    meta = _meta(path, MODEL_META_KEYS)
    row = target["models"].get(as_name)
    if meta is None or meta.get("name") != name or row is None or not valid_model_name(name):
        return None
    if as_name != name and not renamed_from(name, as_name, _is_prompt(target["tags"].get(as_name, {}))):
        return None
    if any(meta.get(f) != row[f] for f in MODEL_FIELDS):
        return None
    if not _tags_match(path, target["tags"].get(as_name, {})):
        return None
    aliases = key_files(os.path.join(path, "aliases"))
    if aliases is None or not same_values(aliases, target["aliases"].get(as_name, {})):
        return None
    versions = set()
    try:
        with os.scandir(path) as entries:
            folders = [e for e in entries if e.name.startswith(VERSION_PREFIX) and e.is_dir()]
    except OSError:
        return None
    for entry in folders:
        key = None if entry.is_symlink() else _version_matches(entry.path, entry.name, name, target, as_name)
        if key is None:
            return None
        versions.add(key)
    return versions if versions == target["versions_of"].get(as_name, set()) else None


def _is_prompt(tags: dict[str, str]) -> bool:
    return str(tags.get(PROMPT_TAG, "")).lower() == "true"


def _version_matches(path: str, folder: str, name: str, target: dict, as_name: str) -> tuple[str, str] | None:
    meta = _meta(path, VERSION_META_KEYS)
    if meta is None or meta.get("name") != name:
        return None
    version = meta.get("version")
    if type(version) is not int or folder != f"{VERSION_PREFIX}{version}":
        return None
    key = (as_name, str(version))
    row = target["versions"].get(key)
    if row is None or row["current_stage"] is None:
        return None
    source = {f: meta.get(f) for f in VERSION_FIELDS}
    source["status"] = meta.get("status", "READY")  # ModelVersion's default
    if any(source[f] != row[f] for f in VERSION_FIELDS):
        return None
    return key if _tags_match(path, target["version_tags"].get(key, {})) else None


# --- 2. MLflow's reader ---------------------------------------------------------------------------


def _verify_model_with_mlflow(report, store, path, target, skipped, seen_models, seen_versions,
                              as_name: str | None = None, renumbered: dict[str, str] | None = None) -> None:
    folder = os.path.basename(path)
    model = _read_each(
        report, "registered_models", [(folder, path)], store._get_registered_model_from_path, skipped,
    ).get(folder)
    if model is None:
        return
    name = model.name if as_name is None or as_name == folder else as_name
    seen_models.add(name)
    report.checked("registered_models")
    row = target["models"].get(name)
    if name != model.name and not renamed_from(model.name, name, _is_prompt(model._tags)):
        report.mismatch("registered_models", model.name, "name (renamed)", model.name, name)
    if row is None:
        report.mismatch("registered_models", name, "presence", True, False)
    else:
        src = {f: getattr(model, f) for f in MODEL_FIELDS}
        _compare_fields(report, "registered_models", name, MODEL_FIELDS, src, row)
        # RegisteredModel.tags hides mlflow.prompt.is_prompt from users; the store keeps it, and
        # so must the database (it is what makes a registered model a prompt).
        _compare_dict(report, "registered_models", name, _relinked(dict(model._tags), renumbered or {}),
                      target["tags"].get(name, {}))
        _compare_dict(report, "registered_models", name, _alias_versions(model), target["aliases"].get(name, {}))
    # Its versions too: rows the target keeps under the name are then not reported as extra.
    for mv in store._list_file_model_versions_under_path(path):
        key = (name, str(mv.version))
        seen_versions.add(key)
        id_ = f"{name}/{mv.version}"
        report.checked("model_versions")
        t_row = target["versions"].get(key)
        if t_row is None:
            report.mismatch("model_versions", id_, "presence", True, False)
            continue
        src = {f: getattr(mv, f) for f in VERSION_FIELDS}
        _compare_fields(report, "model_versions", id_, VERSION_FIELDS, src, _as_shown(t_row))
        _compare_dict(report, "model_versions", id_, dict(mv.tags), target["version_tags"].get(key, {}))


def _relinked(tags: dict[str, str], renumbered: dict[str, str], more: list[str] | None = None) -> dict[str, str]:
    """A prompt's tags with its linked experiments by the ids the migration gave them."""
    if LINKED_EXPERIMENTS_TAG in tags:
        tags[LINKED_EXPERIMENTS_TAG] = relinked(tags[LINKED_EXPERIMENTS_TAG], renumbered, more or [])
    return tags


def _as_shown(row: dict) -> dict:
    """A target's version row as MLflow shows it, where that differs from the row."""
    return {**row, "current_stage": HIDDEN_STAGE} if row["current_stage"] is None else row


def _alias_versions(model, offset: int = 0) -> dict[str, str]:
    """alias -> version number (as text) of a registered model MLflow's reader read."""
    aliases = model.aliases
    pairs = [(a.alias, a.version) for a in aliases] if isinstance(aliases, list) else aliases.items()
    return {alias: str(int(version) + offset) if offset else str(version) for alias, version in pairs}


def _verify_merged_models(report, groups: dict[str, list[tuple[Claims, str]]], target: dict,
                          seen_models: set, seen_versions: set) -> None:
    """Registered models (or prompts) of several sources merged into one (--on-name-clash
    merge), through MLflow's reader: the first source's fields; every source's tags and aliases,
    the first holder of a key winning; every version, numbered as its source's claim says
    (``Claims.model_offsets``), each equal to its files."""
    from etl.verify.oracle import registry_store

    for name, members in groups.items():
        seen_models.add(name)
        row = target["models"].get(name)
        tags, aliases, kinds = {}, {}, set()
        # The first holder's linked experiments, then those of the others (one prompt, linked
        # to every experiment any of them was), each by its source's renumbering.
        holder, linked = None, []
        for n, (claims, folder) in enumerate(members):
            store = registry_store(claims.root)
            path = os.path.join(claims.root, "models", folder)
            offset = claims.model_offsets.get(folder, 0)
            report.checked("registered_models")
            try:
                model = store._get_registered_model_from_path(path)
                versions = store._list_file_model_versions_under_path(path)
            except Exception as e:  # noqa: BLE001 - any reader failure is reported, with its text
                report.mismatch("registered_models", f"{name} ({claims.root})", "readable by MLflow", str(e)[:200], None)
                continue
            kinds.add(_is_prompt(model._tags))
            if model.name != name:
                report.mismatch("registered_models", f"{name} ({claims.root})", "name (merged)", model.name, name)
            if n == 0:
                if row is None:
                    report.mismatch("registered_models", name, "presence", True, False)
                else:
                    _compare_fields(report, "registered_models", name, MODEL_FIELDS,
                                    {f: getattr(model, f) for f in MODEL_FIELDS}, row)
            for key, value in model._tags.items():
                tags.setdefault(key, value)
            if LINKED_EXPERIMENTS_TAG in model._tags:
                if holder is None:
                    holder = claims.experiment_ids
                else:
                    linked += [claims.experiment_ids.get(i, i) for i in linked_ids(model._tags[LINKED_EXPERIMENTS_TAG])]
            for alias, version in _alias_versions(model, offset).items():
                aliases.setdefault(alias, version)
            for mv in versions:
                key = (name, str(int(mv.version) + offset))
                id_ = f"{name}/{key[1]}"
                report.checked("model_versions")
                if key in seen_versions:
                    report.mismatch("model_versions", id_, "numbered twice", f"{folder} ({claims.root})", None)
                    continue
                seen_versions.add(key)
                t_row = target["versions"].get(key)
                if t_row is None:
                    report.mismatch("model_versions", id_, "presence", True, False)
                    continue
                _compare_fields(report, "model_versions", id_, VERSION_FIELDS,
                                {f: getattr(mv, f) for f in VERSION_FIELDS}, _as_shown(t_row))
                _compare_dict(report, "model_versions", id_, dict(mv.tags), target["version_tags"].get(key, {}))
        if len(kinds) > 1:
            report.mismatch("registered_models", name, "merged a prompt with a registered model", True, None)
        if row is not None:
            _compare_dict(report, "registered_models", name, _relinked(tags, holder or {}, linked),
                          target["tags"].get(name, {}))
            _compare_dict(report, "registered_models", name, aliases, target["aliases"].get(name, {}))
