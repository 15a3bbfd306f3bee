"""The census of a source tree: every entry is migrated, kept in place, or named as a stray.

A tool that says "verified" must also say what it did not migrate. Each folder MLflow's FileStore
writes has a fixed set of entries (``Layout``); anything else in it is a stray, not FileStore
data: listed (a folder as one entry), never read, and a warning when it holds YAML files, which
is what data of a newer MLflow would look like.

The load takes the census on its own walk: ``survey_root`` in discovery, ``survey_unit`` in each
worker beside extraction, with ``count=False`` because extraction counts the files it reads per
table. ``census_tree`` takes the same census by listing folders only (``count=True``), for
``etl-migrate verify``. Artifact folders are counted as one entry each and never listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from etl.rows import Census, Problem, Stray
from etl.source.layout import (
    META,
    REGISTRY,
    TRASH,
    WorkUnit,
    is_dir,
    is_experiment_id,
    is_file,
    is_run_dir,
    reader_experiment,
    tree_root,
    tree_units,
    unit_entities,
)
from etl.source.read import (
    BAD_NAME,
    SourceError,
    SourceErrors,
    bad_name,
    link_problem,
    list_files,
    outside,
    outside_warning,
)

YAML_SUFFIXES = (".yaml", ".yml")
YAML_WARNING = "holds YAML files where MLflow writes none: data of a newer MLflow? It was NOT migrated"
ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class Layout:
    """What MLflow's FileStore writes into one kind of folder."""

    files: dict[str, str] = field(default_factory=dict)  # file -> table it migrates into
    keys: dict[str, str] = field(default_factory=dict)  # folder of key files -> their table
    kept: str | None = None  # what the artifacts/ folder holds, when there is one
    entities: dict[str, Layout] = field(default_factory=dict)  # folder of entity folders
    # Folders of entity folders that are work units of their own: only loose files are strays.
    units: frozenset[str] = frozenset()


ENTRY = Layout(files={META: "inputs"})  # run inputs/<id>/ and outputs/<model_id>/
RUN = Layout(
    files={META: "runs"},
    keys={"params": "params", "tags": "tags", "metrics": "metrics"},
    kept="run_artifacts",
    entities={"inputs": ENTRY, "outputs": ENTRY},
)
EXPERIMENT = Layout(
    files={META: "experiments"},
    keys={"tags": "experiment_tags"},
    entities={"datasets": Layout(files={META: "datasets"})},
    units=frozenset({"traces", "models"}),
)
TRACE = Layout(
    files={"trace_info.yaml": "trace_info"},
    keys={"tags": "trace_tags", "request_metadata": "trace_request_metadata", "assessments": "assessments"},
    kept="trace_artifacts",
)
LOGGED_MODEL = Layout(
    files={META: "logged_models"},
    keys={"params": "logged_model_params", "tags": "logged_model_tags", "metrics": "logged_model_metrics"},
    kept="logged_model_artifacts",
)
REGISTERED_MODEL = Layout(
    files={META: "registered_models"},
    keys={"tags": "registered_model_tags", "aliases": "registered_model_aliases"},
)
MODEL_VERSION = Layout(files={META: "model_versions"}, keys={"tags": "model_version_tags"})


def _scan(folder: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except OSError:
        # Absent, or not listable: reading it fails too, and the load reports that as a problem.
        return []


SPECIAL_WARNING = "is not a regular file or folder (a named pipe, socket or device): never read, NOT migrated"
FILE_FOR_FOLDER = "a file where MLflow keeps a folder"


def stray(census: Census, entry: os.DirEntry, root: str | None = None) -> None:
    if not _classifiable(census, entry, root):
        return
    folder = is_dir(entry)
    if not folder and not is_file(entry):
        warning = SPECIAL_WARNING
    else:
        warning = YAML_WARNING if _holds_yaml(entry, folder) else None
    census.strays.append(Stray(entry.path, folder, warning))


def _classifiable(census: Census, entry: os.DirEntry, root: str | None) -> bool:
    """An entry whose name no database can hold, or a symlink loop, is invalid input (a problem,
    not a stray); a link out of the tree is flagged, and classified as what it leads to."""
    if bad_name(entry.name):
        census.problems.append(Problem(entry.path, BAD_NAME))
        return False
    if entry.is_symlink():
        problem = link_problem(entry.path)
        if problem is not None:
            census.problems.append(Problem(entry.path, problem))
            return False
        _flag_outside(census, entry, root)
    return True


def _flag_outside(census: Census, entry: os.DirEntry, root: str | None) -> None:
    real = outside(entry.path, root) if entry.is_symlink() else None
    if real is not None:
        census.flagged.append(Stray(entry.path, is_dir(entry), outside_warning(real)))


def _holds_yaml(entry: os.DirEntry, is_dir: bool) -> bool:
    if not is_dir:
        return entry.name.endswith(YAML_SUFFIXES)
    # Stops at the first YAML file; a stray folder is walked only as far as that, iteratively
    # (no depth of nesting exhausts the stack) and without following links (no loop).
    stack = [entry.path]
    while stack:
        for sub in _scan(stack.pop()):
            if sub.is_dir(follow_symlinks=False):
                stack.append(sub.path)
            elif sub.name.endswith(YAML_SUFFIXES):
                return True
    return False


def survey(folder: str, layout: Layout, census: Census, count: bool, root: str | None = None) -> list[os.DirEntry]:
    """Classify the entries of folder by layout; return those it does not know, for the caller
    (runs in an experiment folder, versions in a registered model folder) or as strays.
    ``root``: the tree, to tell links that leave it."""
    rest = []
    for entry in _scan(folder):
        name = entry.name
        if name in layout.files or name in layout.keys or name in layout.entities or name in layout.units:
            # Names MLflow writes: a loop or a name in its place is reported by the load, which
            # reads it; a link out of the tree is flagged here.
            _flag_outside(census, entry, root)
        if name in layout.files:
            # A folder in a file's place: the load reports it, reading the file.
            if count:
                census.migrated[layout.files[name]] += 1
        elif name in layout.keys:
            # A file in a key folder's place: the load reports it, listing the folder.
            if count and is_dir(entry):
                census.migrated[layout.keys[name]] += len(_key_names(entry.path))
        elif name == ARTIFACTS and layout.kept and is_dir(entry):
            census.kept[layout.kept] += 1
        elif name in layout.entities or name in layout.units:
            trouble = link_problem(entry.path) if entry.is_symlink() else None
            if trouble or not is_dir(entry):
                census.problems.append(Problem(entry.path, trouble or FILE_FOR_FOLDER))
            elif name in layout.entities:
                for sub in _scan(entry.path):
                    if is_dir(sub):
                        if _classifiable(census, sub, root):
                            _strays(census, survey(sub.path, layout.entities[name], census, count, root), root)
                    else:
                        stray(census, sub, root)
            else:
                _strays(census, [sub for sub in _scan(entry.path) if not is_dir(sub)], root)
        else:
            rest.append(entry)
    return rest


def _key_names(folder: str) -> list[str]:
    try:
        return list_files(folder)
    except (SourceError, SourceErrors):
        return []  # the load reports the folder's problems, reading it


def _strays(census: Census, entries: list[os.DirEntry], root: str | None = None) -> None:
    for entry in entries:
        stray(census, entry, root)


def survey_entity(kind: str, folder: str, census: Census, count: bool, root: str | None = None) -> None:
    """The census of one entity's folder: strays, flagged links, and problems (a name that is
    no UTF-8, a loop) in ``census.problems``."""
    if kind == "experiments":
        rest = survey(folder, EXPERIMENT, census, count, root)
        _strays(census, [e for e in rest if not is_run_dir(e)], root)
    elif kind == "registered_models":
        for entry in survey(folder, REGISTERED_MODEL, census, count, root):
            if entry.name.startswith("version-") and not is_dir(entry) and _classifiable(census, entry, root):
                census.problems.append(Problem(entry.path, FILE_FOR_FOLDER))
            elif is_dir(entry) and entry.name.startswith("version-"):
                _strays(census, survey(entry.path, MODEL_VERSION, census, count, root), root)
            else:
                stray(census, entry, root)
    else:
        _strays(census, survey(folder, ENTITY_LAYOUTS[kind], census, count, root), root)


ENTITY_LAYOUTS = {"runs": RUN, "traces": TRACE, "logged_models": LOGGED_MODEL}


def survey_unit(unit: WorkUnit, census: Census, count: bool) -> None:
    """The census of a work unit's folders (not of the units inside an experiment folder)."""
    root = tree_root(unit)
    for kind, _entity_id, folder in unit_entities(unit):
        survey_entity(kind, folder, census, count, root)


def survey_root(mlruns: Path, census: Census) -> None:
    """Strays of the mlruns folder, .trash/ and the registry's models/ folder; the experiments
    and registered models inside them are work units."""
    root = str(mlruns)
    for entry in _scan(root):
        if not _classifiable(census, entry, root):
            continue
        if is_dir(entry) and is_experiment_id(entry.name):
            continue
        if entry.name in (TRASH, REGISTRY) and not is_dir(entry):
            census.problems.append(Problem(entry.path, FILE_FOR_FOLDER))
        elif entry.name == TRASH:
            rest = [e for e in _scan(entry.path) if not (is_dir(e) and is_experiment_id(e.name))]
            _strays(census, [e for e in rest if not _odd_experiment(census, e)], root)
        elif entry.name == REGISTRY:
            _strays(census, [e for e in _scan(entry.path) if not is_dir(e)], root)
        elif not _odd_experiment(census, entry):
            stray(census, entry, root)


def _odd_experiment(census: Census, entry: os.DirEntry) -> bool:
    """An experiment MLflow's reader shows whose id no database holds: a problem, the experiment
    (by its folder's name, as the verifier names it) left out."""
    if not reader_experiment(entry):
        return False
    census.problems.append(Problem(entry.path, "an experiment folder (it holds a meta.yaml) whose name is no "
                                   "experiment id the database can hold: MLflow writes integers, no leading zero",
                                   None, "experiments", entry.name))
    return True


def census_tree(mlruns: Path) -> Census:
    """The load's census, taken by listing folders only: no file is opened."""
    census = Census()
    survey_root(mlruns, census)
    for unit in tree_units(mlruns, per_unit=1 << 30):
        survey_unit(unit, census, count=True)
    return census
