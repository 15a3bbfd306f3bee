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

from etl.rows import Census, Stray
from etl.source.layout import (
    META,
    REGISTRY,
    TRASH,
    ExperimentUnit,
    LoggedModelsUnit,
    RegisteredModelUnit,
    RunsUnit,
    TracesUnit,
    WorkUnit,
    experiment_dirs,
    experiment_units,
    is_number,
    is_run_dir,
    registered_model_dirs,
)
from etl.source.read import list_files

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


def stray(census: Census, entry: os.DirEntry) -> None:
    is_dir = entry.is_dir()
    census.strays.append(Stray(entry.path, is_dir, YAML_WARNING if _holds_yaml(entry, is_dir) else None))


def _holds_yaml(entry: os.DirEntry, is_dir: bool) -> bool:
    if not is_dir:
        return entry.name.endswith(YAML_SUFFIXES)
    # Stops at the first YAML file; a stray folder is walked only as far as that.
    for _root, _dirs, files in os.walk(entry.path):
        if any(name.endswith(YAML_SUFFIXES) for name in files):
            return True
    return False


def survey(folder: str, layout: Layout, census: Census, count: bool) -> list[os.DirEntry]:
    """Classify the entries of folder by layout; return those it does not know, for the caller
    (runs in an experiment folder, versions in a registered model folder) or as strays."""
    rest = []
    for entry in _scan(folder):
        name = entry.name
        if name in layout.files and not entry.is_dir():
            if count:
                census.migrated[layout.files[name]] += 1
        elif name in layout.keys and entry.is_dir():
            if count:
                census.migrated[layout.keys[name]] += len(list_files(entry.path))
        elif name == ARTIFACTS and layout.kept and entry.is_dir():
            census.kept[layout.kept] += 1
        elif name in layout.entities and entry.is_dir():
            for sub in _scan(entry.path):
                if sub.is_dir():
                    _strays(census, survey(sub.path, layout.entities[name], census, count))
                else:
                    stray(census, sub)
        elif name in layout.units and entry.is_dir():
            _strays(census, [sub for sub in _scan(entry.path) if not sub.is_dir()])
        else:
            rest.append(entry)
    return rest


def _strays(census: Census, entries: list[os.DirEntry]) -> None:
    for entry in entries:
        stray(census, entry)


def survey_unit(unit: WorkUnit, census: Census, count: bool) -> None:
    """The census of a work unit's folders (not of the units inside an experiment folder)."""
    if isinstance(unit, RunsUnit):
        for name in unit.run_dirs:
            _strays(census, survey(os.path.join(unit.experiment_path, name), RUN, census, count))
    elif isinstance(unit, ExperimentUnit):
        rest = survey(unit.path, EXPERIMENT, census, count)
        _strays(census, [e for e in rest if not is_run_dir(e)])
    elif isinstance(unit, TracesUnit):
        for name in unit.trace_dirs:
            _strays(census, survey(os.path.join(unit.experiment_path, "traces", name), TRACE, census, count))
    elif isinstance(unit, LoggedModelsUnit):
        for name in unit.model_dirs:
            _strays(census, survey(os.path.join(unit.experiment_path, "models", name), LOGGED_MODEL, census, count))
    elif isinstance(unit, RegisteredModelUnit):
        for entry in survey(unit.path, REGISTERED_MODEL, census, count):
            if entry.is_dir() and entry.name.startswith("version-"):
                _strays(census, survey(entry.path, MODEL_VERSION, census, count))
            else:
                stray(census, entry)
    else:  # pragma: no cover - a new unit kind without a layout is a programming error
        raise TypeError(f"unknown work unit {unit!r}")


def survey_root(mlruns: Path, census: Census) -> None:
    """Strays of the mlruns folder, .trash/ and the registry's models/ folder; the experiments
    and registered models inside them are work units."""
    for entry in _scan(str(mlruns)):
        if entry.is_dir() and is_number(entry.name):
            continue
        if entry.is_dir() and entry.name == TRASH:
            _strays(census, [e for e in _scan(entry.path) if not (e.is_dir() and is_number(e.name))])
        elif entry.is_dir() and entry.name == REGISTRY:
            _strays(census, [e for e in _scan(entry.path) if not e.is_dir()])
        else:
            stray(census, entry)


def census_tree(mlruns: Path) -> Census:
    """The load's census, taken by listing folders only: no file is opened."""
    census = Census()
    survey_root(mlruns, census)
    for path, deleted in experiment_dirs(mlruns):
        for unit in experiment_units(path, deleted, per_unit=1 << 30):
            survey_unit(unit, census, count=True)
    for path in registered_model_dirs(mlruns):
        survey_unit(RegisteredModelUnit(path), census, count=True)
    return census
