"""Where things live in a FileStore tree, and the work units a migration is cut into.

Path conventions follow MLflow's ``mlflow/store/tracking/file_store.py`` and
``mlflow/store/model_registry/file_store.py``:

    mlruns/<experiment_id>/meta.yaml, tags/            an experiment
    mlruns/<experiment_id>/<run_id>/                   a run (any other folder)
    mlruns/<experiment_id>/{datasets,traces,models}/   experiment-level entities
    mlruns/.trash/<experiment_id>/                     a deleted experiment
    mlruns/models/<name>/                              a registered model (registry store)
"""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

META = "meta.yaml"
TRASH = ".trash"
REGISTRY = "models"
# Folders inside an experiment that are not runs (FileStore.RESERVED_EXPERIMENT_FOLDERS).
EXPERIMENT_RESERVED = frozenset({"tags", "datasets", "traces", "models"})


class LayoutError(Exception):
    """The source is not an MLflow FileStore tree at all."""


@dataclass(frozen=True)
class ExperimentTarget:
    """What an experiment folder becomes in the target, where that is not simply itself: another
    id (the target's INTEGER cannot hold the folder's, or several trees hold it; etl.source.merge).

    The experiment's work units carry it, so the worker that parses a unit writes the target's
    values into the rows: the main process, which feeds the single writer, never rewrites a row.
    Several trees into one database (etl.source.merge) add the rest.
    """

    id: int
    # The target's name, where the folder's is another tree's too (--on-name-clash rename).
    name: str | None = None
    # Merged into another tree's experiment of the same name (or an empty Default kept once): no
    # row of its own; its runs, traces and models go there, with its tags and datasets that
    # experiment lacks.
    joins: bool = False
    # Refused (--on-name-clash fail): no row, tag or dataset; what hangs from it goes with it.
    left_out: bool = False
    skip_tags: frozenset[str] = frozenset()  # tag keys the experiment it joins holds already
    # Stable ids of the tree's datasets: a later tree may have an earlier one's folder names.
    namespace: str = ""
    # Dataset folder -> id of the dataset of that name and digest in the experiment it joins
    # (the target holds one, that experiment's; this one is not written).
    same_datasets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelTarget:
    """What a registered model (or prompt) folder becomes in a database several trees go into."""

    name: str  # the target's name (another when the folder's is an earlier tree's too)
    # Merged into an earlier tree's model of the same name: no row of its own; its versions are
    # numbered after that model's, with its tags and aliases that model lacks.
    joins: bool = False
    left_out: bool = False  # refused (--on-name-clash fail): nothing of it is written
    version_offset: int = 0
    skip_tags: frozenset[str] = frozenset()
    skip_aliases: frozenset[str] = frozenset()
    # Target ids of the experiments the prompts merged into this one are linked to, where
    # this one's linked-experiments tag is the one written (etl.ids.LINKED_EXPERIMENTS_TAG).
    linked_experiments: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExperimentUnit:
    path: str
    deleted: bool
    target: ExperimentTarget | None = None

    @property
    def kind(self) -> str:
        return "experiment"


@dataclass(frozen=True)
class RunFolder:
    """A run's folder, the experiment folder it is in, and what that experiment becomes."""

    experiment_path: str
    experiment_id: str
    name: str
    target: ExperimentTarget | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.experiment_path, self.name)


@dataclass(frozen=True)
class RunsUnit:
    """Several runs, next to each other in the order of run ids across the whole tree (so of one
    experiment or several): batching them keeps per-unit overhead small, and the load, which
    writes the units in order, then adds every run's rows at the end of MLflow's run-keyed
    indexes (see ``tree_units``)."""

    runs: tuple[RunFolder, ...]

    @property
    def kind(self) -> str:
        return "runs"


@dataclass(frozen=True)
class TracesUnit:
    experiment_path: str
    experiment_id: str
    trace_dirs: tuple[str, ...]
    target: ExperimentTarget | None = None

    @property
    def kind(self) -> str:
        return "traces"


@dataclass(frozen=True)
class LoggedModelsUnit:
    experiment_path: str
    experiment_id: str
    model_dirs: tuple[str, ...]
    target: ExperimentTarget | None = None

    @property
    def kind(self) -> str:
        return "logged_models"


@dataclass(frozen=True)
class RegisteredModelUnit:
    path: str
    target: ModelTarget | None = None
    # Folder id -> target id of the tree's renumbered experiments (etl.ids.LINKED_EXPERIMENTS_TAG).
    renumbered: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return "registered_model"


WorkUnit = ExperimentUnit | RunsUnit | TracesUnit | LoggedModelsUnit | RegisteredModelUnit


def resolve_mlruns(source: Path) -> Path:
    """The mlruns folder itself (absolute), given it or a folder that contains one."""
    source = Path(os.path.abspath(source))
    if not source.is_dir():
        raise LayoutError(f"{source}: source folder does not exist")
    nested = source / "mlruns"
    if nested.is_dir():
        return nested
    if looks_like_mlruns(source):
        return source
    raise LayoutError(
        f"{source}: not an MLflow FileStore tree (no mlruns/ folder, and no experiment "
        "folders with a meta.yaml, .trash/ or models/ inside)"
    )


def is_number(name: str) -> bool:
    """ASCII digits only: FileStore's experiment ids and version numbers are ints it wrote.
    str.isdigit() alone also takes '²' (which int() refuses) or '٣' (which int() reads as 3,
    the id of another folder)."""
    return name.isascii() and name.isdigit()


def tree_root(unit: WorkUnit) -> str:
    """The mlruns folder a work unit's folders are in."""
    if isinstance(unit, RegisteredModelUnit):
        return os.path.dirname(os.path.dirname(unit.path))
    if isinstance(unit, ExperimentUnit):
        experiment = unit.path
    elif isinstance(unit, RunsUnit):
        experiment = unit.runs[0].experiment_path
    else:
        experiment = unit.experiment_path
    parent = os.path.dirname(experiment)
    return os.path.dirname(parent) if os.path.basename(parent) == TRASH else parent


def unit_entities(unit: WorkUnit) -> list[tuple[str, str, str]]:
    """(kind, id, folder) of each entity a unit holds, kinds and ids as the verifier names them."""
    if isinstance(unit, RunsUnit):
        return [("runs", run.name, run.path) for run in unit.runs]
    if isinstance(unit, ExperimentUnit):
        return [("experiments", os.path.basename(unit.path), unit.path)]
    if isinstance(unit, TracesUnit):
        return [("traces", name, os.path.join(unit.experiment_path, "traces", name)) for name in unit.trace_dirs]
    if isinstance(unit, LoggedModelsUnit):
        return [("logged_models", name, os.path.join(unit.experiment_path, "models", name))
                for name in unit.model_dirs]
    if isinstance(unit, RegisteredModelUnit):
        return [("registered_models", os.path.basename(unit.path), unit.path)]
    raise TypeError(f"unknown work unit {unit!r}")  # a new unit kind without its entities


def is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder or links to one; a symlink loop is neither (DirEntry raises
    ELOOP; the census names the loop)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _listing(folder: str) -> list[os.DirEntry]:
    """The entries of a folder the layout expects; none when it is absent, a file in the
    folder's place, a symlink loop or a folder this user may not read (the census names those)."""
    try:
        return list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    except OSError as e:
        if e.errno == errno.ELOOP:
            return []
        raise


def is_experiment_id(name: str) -> bool:
    """An experiment folder's name as FileStore writes it: an integer, no leading zero. The
    database keeps the id as an integer, so '00' would come back as '0'."""
    return is_number(name) and name == str(int(name))


# mlflow/utils/validation.py: _EXPERIMENT_ID_REGEX, applied with re.match, whose '$' also takes
# a final newline: the folders MLflow's reader lists as experiments when they hold a meta.yaml.
_READER_EXPERIMENT_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,63}\n?")


def reader_experiment(entry: os.DirEntry) -> bool:
    """A folder MLflow's reader would read as an experiment that is no experiment id the
    database can hold ('abc', '00', '1\n' with a meta.yaml): invalid input, not a stray."""
    return (is_dir(entry) and not is_experiment_id(entry.name) and bool(_READER_EXPERIMENT_ID.fullmatch(entry.name))
            and os.path.isfile(os.path.join(entry.path, META)))


def looks_like_mlruns(folder: Path) -> bool:
    for entry in os.scandir(folder):
        if not is_dir(entry):
            continue
        if entry.name in (TRASH, REGISTRY):
            return True
        if is_number(entry.name) and os.path.isfile(os.path.join(entry.path, META)):
            return True
    return False


def experiment_dirs(mlruns: Path) -> list[tuple[str, bool]]:
    """(path, deleted) of every experiment folder, active first, each group sorted by id."""
    found = [(p, False) for p in _digit_dirs(str(mlruns))]
    found += [(p, True) for p in _digit_dirs(str(mlruns / TRASH))]
    return found


def _digit_dirs(folder: str) -> list[str]:
    entries = [e for e in _listing(folder) if is_dir(e) and is_experiment_id(e.name)]
    return [e.path for e in sorted(entries, key=lambda e: int(e.name))]


RUN_ID = re.compile(r"[0-9a-f]{32}")
RUN_PARTS = ("meta.yaml", "params", "metrics", "tags", "artifacts")


def is_run_dir(entry: os.DirEntry) -> bool:
    """An entry of an experiment folder is a run when it is a folder with a run's name (32 hex
    digits) or a run's parts: such a folder without meta.yaml is a damaged run, reported as a
    problem. Anything else is not FileStore data (etl.source.census names it)."""
    if entry.name in EXPERIMENT_RESERVED or not is_dir(entry):
        return False
    return bool(RUN_ID.fullmatch(entry.name)) or any(
        os.path.exists(os.path.join(entry.path, p)) for p in RUN_PARTS
    )


def run_dirs(experiment_path: str) -> list[str]:
    """Names of the run folders of an experiment folder, sorted."""
    return sorted(e.name for e in _listing(experiment_path) if is_run_dir(e))


def folders_of_experiment(path: str) -> Counter:
    """The run, trace and logged model folders of an experiment folder: {"runs", "traces",
    "models"} -> how many."""
    return Counter(runs=len(run_dirs(path)), traces=len(subdirs(os.path.join(path, "traces"))),
                   models=len(subdirs(os.path.join(path, "models"))))


def more_entities_than(mlruns: Path, limit: int) -> bool:
    """Whether the tree holds more than ``limit`` run, trace, logged model and registered model
    folders together; listing stops as soon as it does."""
    seen = len(registered_model_dirs(mlruns))
    for path, _ in experiment_dirs(mlruns):
        if seen > limit:
            break
        seen += sum(folders_of_experiment(path).values())
    return seen > limit


def registered_model_dirs(mlruns: Path) -> list[str]:
    return sorted(e.path for e in _listing(str(mlruns / REGISTRY)) if is_dir(e))


def subdirs(folder: str) -> list[str]:
    """Names of the folders inside folder, sorted; [] when it does not exist."""
    return sorted(e.name for e in _listing(folder) if is_dir(e))


def _chunks(names: list[str], size: int):
    for start in range(0, len(names), size):
        yield tuple(names[start : start + size])


def tree_units(
    mlruns: Path, per_unit: int, targets: dict[int, ExperimentTarget] | None = None,
    models: dict[str, ModelTarget] | None = None,
) -> list[WorkUnit]:
    """Every work unit of a tree, in the order the load writes them: each experiment with its
    traces and logged models, then the runs of all experiments in the order of their ids, in
    chunks of ``per_unit``, then the registered models. ``targets``: what an experiment becomes,
    by folder id, carried by its units; ``models``: what a registered model becomes, by folder.

    Why runs by id across experiments: MLflow's run-keyed indexes (``index_metrics_run_uuid``,
    ``index_metrics_run_uuid_key_step``, the run_uuid indexes of params, tags and latest_metrics)
    then only ever grow at their end, where SQLite adds an entry without searching the B-tree
    from its root: keeping them up to date costs less than building them after the load
    (bench/README.md, "The load").
    """
    targets = targets or {}
    units: list[WorkUnit] = []
    runs: list[RunFolder] = []
    for path, deleted in experiment_dirs(mlruns):
        exp_id = os.path.basename(path)
        target = targets.get(int(exp_id))
        units += experiment_units(path, deleted, per_unit, target)
        runs += [RunFolder(path, exp_id, name, target) for name in run_dirs(path)]
    runs.sort(key=lambda run: run.name)
    units += [RunsUnit(tuple(runs[start : start + per_unit])) for start in range(0, len(runs), per_unit)]
    models = models or {}
    renumbered = tuple((str(old), str(t.id)) for old, t in sorted(targets.items()) if t.id != old)
    return units + [RegisteredModelUnit(path, models.get(os.path.basename(path)), renumbered)
                    for path in registered_model_dirs(mlruns)]


def experiment_units(
    path: str, deleted: bool, per_unit: int, target: ExperimentTarget | None = None,
) -> list[WorkUnit]:
    """The experiment itself (with its datasets), then its traces and logged models in chunks of
    ``per_unit`` folders; each carries ``target``, what the experiment becomes. (Its runs are
    cut into units across experiments: ``tree_units``.)"""
    exp_id = os.path.basename(path)
    units: list[WorkUnit] = [ExperimentUnit(path, deleted, target)]
    traces = subdirs(os.path.join(path, "traces"))
    units += [TracesUnit(path, exp_id, chunk, target) for chunk in _chunks(traces, per_unit)]
    models = subdirs(os.path.join(path, "models"))
    units += [LoggedModelsUnit(path, exp_id, chunk, target) for chunk in _chunks(models, per_unit)]
    return units
