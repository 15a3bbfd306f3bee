"""The async orchestration: discover -> N producers -> one writer -> verify -> promote.

    discover ──units──▶ producers (x --workers, parsing in worker processes;
                              │     a small tree: one, parsing on a thread)
                              │ RowBatch, bounded stream (back-pressure)
                              ▼
                      writer (the staging file's only connection)

Both streams are bounded, so memory follows --queue-size, not the size of the tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import anyio.to_process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from etl.config import MigrationConfig
from etl.errors import InvalidSourceError, TargetError, TargetHoldsData, VerificationFailed
from etl.observe import Progress, log, record
from etl.rows import Census, Problem, RowBatch, RowCounter
from etl.sink.target import open_target
from etl.source import derived
from etl.source.census import census_tree, survey_root
from etl.source.extract import extract, input_file
from etl.source.layout import (
    META,
    TRASH,
    ExperimentTarget,
    LayoutError,
    WorkUnit,
    experiment_id_map,
    experiment_dirs,
    folders_of_experiment,
    more_entities_than,
    resolve_mlruns,
    registered_model_dirs,
    run_dirs,
    tree_units,
)
from etl.sql_limits import Limits
from etl.verify.compare import verify_experiments, verify_logged_models, verify_traces
from etl.verify.models import prove_logged_models
from etl.verify.registry import verify_registry
from etl.verify.report import VerificationReport
from etl.verify.runs import check_runs, prove_runs
from etl.verify.survey import survey
from etl.verify.traces import prove_traces

# Runs per verification task: one read-only query set per chunk on the target side.
VERIFY_CHUNK = 64


@dataclass
class LoadStats:
    rows: RowCounter = field(default_factory=RowCounter)
    files: int = 0
    problems: list[Problem] = field(default_factory=list)
    # With --skip-invalid: rows removed after the load because their parent was left out.
    orphans: dict[str, int] = field(default_factory=dict)
    # Ids found twice in the tree: neither copy can be trusted to be "the" entity.
    clashes: dict[str, set] = field(
        default_factory=lambda: {"experiments": set(), "runs": set(), "traces": set(), "logged_models": set()}
    )
    census: Census = field(default_factory=Census)
    # Metric values the database holds otherwise than the files (etl.rows.LossyKey -> points).
    lossy: Counter = field(default_factory=Counter)
    # Metric points the database holds once (etl.rows.DuplicateKey -> points).
    duplicates: Counter = field(default_factory=Counter)

    def skipped_ids(self) -> dict[str, set[str]]:
        """Entity kind -> ids left out, in the verifier's terms."""
        out: dict[str, set[str]] = {}
        for p in self.problems:
            if p.entity is not None:
                out.setdefault(p.entity, set()).add(str(p.entity_id))
        return out


@dataclass
class MigrationResult:
    source: Path
    target: str  # as it may be printed: a path, or a URI without its password
    load: LoadStats
    phases: dict[str, float]
    report: VerificationReport | None
    # Experiments renumbered because the target cannot hold their ids: old id -> new id.
    id_map: dict[int, int] = field(default_factory=dict)
    server_uri: str = ""
    # What `mlflow server` needs beside MLflow to open server_uri (a database driver).
    server_packages: tuple[str, ...] = ()
    # Rows per table in the promoted database, read back; None when nothing was written.
    counts: dict[str, int] | None = None
    # A dry run's target that a real run would refuse, and why.
    refused: Exception | None = None


def process_count(workers: int) -> int:
    """Parsing is CPU-bound Python: more processes than cores only adds memory."""
    return max(1, min(workers, os.cpu_count() or 1))


# Below both, a tree is verified in one process: each verification process imports MLflow
# (1-2 s of CPU), more than a second process would save on a small tree.
SMALL_TREE_FILES = 2_000
SMALL_TREE_ROWS = 20_000


# Up to this many run, trace, logged model and registered model folders, a tree is parsed on a
# thread of this process: parsing takes 1-2 ms of CPU per folder, starting a worker process
# ~0.2 s (an interpreter, anyio, our modules), so on a small tree the processes only cost.
SMALL_TREE_FOLDERS = 100


def verify_processes(workers: int, stats: LoadStats) -> int:
    if stats.files < SMALL_TREE_FILES and sum(stats.rows.values()) < SMALL_TREE_ROWS:
        return 1
    return process_count(workers)


def source_tree(config: MigrationConfig) -> Path:
    try:
        return resolve_mlruns(config.source)
    except LayoutError as e:
        raise TargetError(str(e)) from None


async def migrate(config: MigrationConfig, progress: Progress | None = None) -> MigrationResult:
    progress = progress or Progress()
    mlruns = source_tree(config)
    target = open_target(config.target)
    check_target(target, mlruns)
    id_map = id_map_for(mlruns, target)
    phases: dict[str, float] = {}
    with target.staging(keep_failed=config.keep_failed) as area:
        record("migration started", source=str(mlruns), target=target.display, staging=str(area.kept))

        started = time.monotonic()
        await anyio.to_thread.run_sync(area.create_schema)
        phases["schema"] = time.monotonic() - started

        started = time.monotonic()
        limits = await anyio.to_thread.run_sync(area.column_limits)
        writer = area.writer(config.batch_size)
        try:
            stats = await load(mlruns, writer, config, progress, limits, id_map)
            if stats.problems and not config.skip_invalid:
                # Strict: the whole tree was read so every problem is listed; nothing is kept.
                raise InvalidSourceError(stats.problems)
            if stats.problems:
                # Both copies of a clashing id go: which one arrived first is an accident of timing.
                await anyio.to_thread.run_sync(writer.delete_entities, stats.clashes)
                await _drop_dependents(writer, stats, Tree.of(mlruns, id_map))
                stats.orphans = await anyio.to_thread.run_sync(writer.prune_orphans)
            await anyio.to_thread.run_sync(writer.finish)
        except BaseException:
            writer.abort()
            raise
        phases["load"] = time.monotonic() - started
        record("load finished", rows=sum(stats.rows.values()), files=stats.files, seconds=round(phases["load"], 2))
        log_census(stats.census)
        for problem in stats.problems:
            log.warning("skipped invalid item", path=problem.path, line=problem.line,
                        entity=problem.entity, id=problem.entity_id, reason=problem.reason)
        for table, count in stats.orphans.items():
            log.warning("skipped rows of skipped entities", table=table, rows=count)
        if stats.lossy:
            log.info("metric values stored as MLflow's SQL store stores them, not as written "
                        "(NaN model metrics as 0, +-Inf as +-max; listed in the summary and report)",
                        points=sum(stats.lossy.values()), series=len(stats.lossy))

        report = None
        if config.verify:
            release_freed_memory()
            started = time.monotonic()
            processes = verify_processes(config.workers, stats)
            report = await verify(mlruns, area.locator, processes, progress, stats.skipped_ids(), id_map)
            phases["verify"] = time.monotonic() - started
            if not report.ok:
                raise VerificationFailed(report, area.kept if config.keep_failed else None)
        else:
            log.warning("verification skipped (--no-verify): the database was NOT compared with the source")

        await hold_for_test()
        started = time.monotonic()
        progress.phase("promote", total=1)
        # In this thread, not a worker: Ctrl-C or SIGTERM then lands in the copy's progress
        # callback, which rolls the copy back, instead of leaving a copy running unwatched.
        area.promote(config.verify)
        progress.advance()
        phases["promote"] = time.monotonic() - started
    counts = target.counts(target.existing())
    return MigrationResult(mlruns, target.display, stats, phases, report, id_map, target.server_uri,
                           target.server_packages, counts)


def release_freed_memory() -> None:
    """Hand the memory the load freed (the writer's page cache, the batches) back to the system
    before verification: glibc keeps freed blocks in its arenas, where the whole process tree's
    peak, reached during verification, counted them (15 MB on a 400 k-file tree). Other C
    libraries have no malloc_trim; there the memory stays until it is reused."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def id_map_for(mlruns: Path, target) -> dict[int, int]:
    try:
        id_map = experiment_id_map(mlruns, target.max_experiment_id)
    except LayoutError as e:
        raise TargetError(str(e)) from None
    for old, new in id_map.items():
        log.info("experiment renumbered: its id does not fit the target", old_id=old, new_id=new)
    return id_map


# Tests only: a run waits before promotion until this file exists, so a test can change the target
# at a known point (a writer, a server starting) and then let the promotion meet it.
HOLD_BEFORE_PROMOTION = "ETL_MIGRATE_TEST_HOLD_BEFORE_PROMOTION"


async def hold_for_test() -> None:
    flag = os.environ.get(HOLD_BEFORE_PROMOTION)
    while flag and not os.path.exists(flag):
        await anyio.sleep(0.05)


async def dry_run(config: MigrationConfig, progress: Progress | None = None) -> MigrationResult:
    """Read and parse the whole tree, count what would be written, write nothing anywhere. A
    target a real run would refuse (it holds data, say) does not stop a dry run: the result
    names the refusal."""
    progress = progress or Progress()
    mlruns = source_tree(config)
    target = open_target(config.target)
    try:
        check_target(target, mlruns)
        refused = None
    except TargetError as e:
        refused = e
    id_map = id_map_for(mlruns, target)
    started = time.monotonic()
    limits = await anyio.to_thread.run_sync(target.expected_limits)
    stats = await load(mlruns, None, config, progress, limits, id_map)
    log_census(stats.census)
    return MigrationResult(mlruns, target.display, stats, {"load": time.monotonic() - started}, None,
                           id_map, target.server_uri, target.server_packages, refused=refused)


def check_target(target, mlruns: Path) -> None:
    """The target's own refusal (it holds data, the server is unreachable...); for a target that
    holds what looks like an earlier migration of this tree, with the command that checks it."""
    try:
        target.check_free()
    except TargetHoldsData as e:
        if not looks_migrated_from(mlruns, e):
            raise
        raise TargetHoldsData(
            e.target, e.shown, hint=f"It looks like an earlier migration of {mlruns}: `etl-migrate verify "
            f"--source {mlruns} --target {target.server_uri}` checks it against the tree; else move it "
            "away or choose another --target."
        ) from None


def looks_migrated_from(mlruns: Path, held: TargetHoldsData) -> bool:
    """Whether a filled target looks made from this tree: its runs (a sample) are all run folders
    of the tree, or, holding no runs, its experiments' names are all the tree's."""
    if held.run_ids:
        found: set[str] = set()
        for path, _ in experiment_dirs(mlruns):
            found.update(run_dirs(path))
        return held.run_ids <= found
    if held.experiment_names:
        from etl.source.read import SourceError, read_yaml

        names = set()
        for path, _ in experiment_dirs(mlruns):
            with contextlib.suppress(SourceError, OSError):
                names.add(str((read_yaml(os.path.join(path, META)) or {}).get("name")))
        return held.experiment_names <= names
    return False


async def verify_existing(source: Path, target: str, workers: int, progress: Progress | None = None):
    """Verify a database made earlier (by us or by `mlflow migrate-filestore`) against a tree."""
    mlruns = source_tree(MigrationConfig(source=source))
    database = open_target(target)
    locator = database.existing()
    id_map = id_map_for(mlruns, database)
    started = time.monotonic()
    census = Census()
    # A small tree is compared on threads of this process: worker processes would cost more.
    big = await anyio.to_thread.run_sync(more_entities_than, mlruns, SMALL_TREE_FOLDERS)
    processes = process_count(workers) if big else 1

    async def take_census() -> None:
        census.merge(await anyio.to_thread.run_sync(census_tree, mlruns, abandon_on_cancel=True))

    try:
        async with anyio.create_task_group() as tg:
            # Listing folders only, in a thread: it overlaps the comparison.
            tg.start_soon(take_census)
            report = await verify(mlruns, locator, processes, progress or Progress(), None, id_map)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    log_census(census)
    return MigrationResult(mlruns, database.display, LoadStats(census=census),
                           {"verify": time.monotonic() - started}, report, id_map,
                           database.server_uri, database.server_packages, database.counts(locator))


def log_census(census: Census) -> None:
    """Strays are no error (people keep notes in mlruns/): named under --verbose; a stray that
    looks like a newer MLflow's data is a warning."""
    for problem in census.problems:  # etl-migrate verify: the load would refuse these
        log.warning("cannot be migrated", path=problem.path, reason=problem.reason)
    for item in sorted(census.flagged, key=lambda s: s.path):
        log.warning("migrated, but worth a look", path=item.path, reason=item.warning)
    for item in sorted(census.strays, key=lambda s: s.path):
        if item.warning:
            log.warning("not FileStore data, not migrated", path=item.path, reason=item.warning)
        else:
            log.debug("not FileStore data, not migrated", path=item.path)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that stopped a task group (the others are its consequences: cancellations)."""
    for exc in group.exceptions:
        return first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group


async def load(
    mlruns: Path, writer, config: MigrationConfig, progress: Progress, limits: Limits,
    id_map: dict[int, int],
) -> LoadStats:
    """Discover, parse, check against the target's limits and (unless writer is None, for a dry
    run) write the whole tree; experiments in ``id_map`` are renumbered by the workers that parse
    them (their work units carry the new id)."""
    try:
        return await _load(mlruns, writer, config, progress, limits, id_map)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


async def _load(mlruns, writer, config, progress, limits, id_map) -> LoadStats:
    stats = LoadStats()
    # A writer that takes rows in scratch files the producers write (etl.sink.sqlite.scratch)
    # says so with its ``spill``; the others take every row from the batch.
    spill = getattr(writer, "spill", None)
    found = await find_folders(mlruns, progress)
    big = sum(found.values()) > SMALL_TREE_FOLDERS
    parse = parser(process_count(config.workers) if big else 0, spill)
    progress.phase("load", sum(found.values()), counting(found))
    units_send, units_recv = anyio.create_memory_object_stream[tuple[int, WorkUnit]](config.queue_size)
    rows_send, rows_recv = anyio.create_memory_object_stream[tuple[int, RowBatch]](config.queue_size)
    producers = config.workers if big else 1
    # Units discovered and not yet written: the writer takes them in order (in_order), and this
    # bounds the batches that wait for an earlier one.
    window = anyio.Semaphore(config.queue_size + producers)
    async with anyio.create_task_group() as tg:
        targets = {old: ExperimentTarget(new) for old, new in id_map.items()}
        tg.start_soon(discover, mlruns, config.runs_per_unit, units_send, progress, stats.census, targets, window)
        async with units_recv, rows_send:
            for _ in range(producers):
                tg.start_soon(produce, units_recv.clone(), rows_send.clone(), parse, limits)
        tg.start_soon(consume, rows_recv, writer, stats, progress, Tree.of(mlruns, id_map), limits, window)
    # What the census of the tree's own folders could not classify (a name that is no UTF-8, a
    # loop) is invalid input like a bad file; the units' census problems are theirs already.
    stats.problems.extend(stats.census.problems)
    stats.census.problems = []
    return stats


def parser(processes: int, spill=None):
    """extract() in up to ``processes`` worker processes, or with 0 on a thread of this one;
    through ``spill`` (the staging area's, if its writer takes rows in scratch files)."""
    limiter = anyio.CapacityLimiter(max(processes, 1))
    func = spill.extract if spill is not None else extract

    async def parse(unit: WorkUnit, limits: Limits) -> RowBatch:
        if processes:
            return await anyio.to_process.run_sync(func, unit, limits, cancellable=True, limiter=limiter)
        return await anyio.to_thread.run_sync(func, unit, limits, limiter=limiter)

    return parse


async def find_folders(mlruns: Path, progress: Progress) -> Counter:
    """The run, trace and model folders of the tree, per kind, listed (not read) before the load
    starts: the progress display's total, which a discovery paced by the load made grow under
    the bar (and its ETA jump). Listing is a small part of a load: each folder is listed again,
    for the work units, when the load reaches it."""
    progress.phase("discover", counting="found")
    found: Counter = Counter()
    for path, _ in await anyio.to_thread.run_sync(experiment_dirs, mlruns):
        here = await anyio.to_thread.run_sync(folders_of_experiment, path)
        found.update(here)
        progress.advance(sum(here.values()))
    models = len(await anyio.to_thread.run_sync(registered_model_dirs, mlruns))
    found["models"] += models
    progress.advance(models)
    return found


def counting(found: Counter) -> str:
    """What the progress display counts, in the words of the kinds the tree holds."""
    return ", ".join(kind for kind in ("runs", "traces", "models") if found.get(kind)) or "folders"


async def discover(
    mlruns: Path, runs_per_unit: int, send: MemoryObjectSendStream[tuple[int, WorkUnit]], progress: Progress,
    census: Census, targets: dict[int, ExperimentTarget], window: anyio.Semaphore,
) -> None:
    """Every work unit of the tree, numbered in the order the writer is to take them (see
    etl.source.layout.tree_units: runs in the order of their ids)."""
    async with send:
        await anyio.to_thread.run_sync(survey_root, mlruns, census)
        units = await anyio.to_thread.run_sync(tree_units, mlruns, runs_per_unit, targets)
        log.debug("tree discovered", units=len(units), kinds=dict(Counter(u.kind for u in units)))
        for number, unit in enumerate(units):
            await window.acquire()
            await send.send((number, unit))


async def produce(
    units: MemoryObjectReceiveStream[tuple[int, WorkUnit]],
    rows: MemoryObjectSendStream[tuple[int, RowBatch]],
    parse,
    limits: Limits,
) -> None:
    async with units, rows:
        async for number, unit in units:
            await rows.send((number, await parse(unit, limits)))


async def in_order(rows: MemoryObjectReceiveStream[tuple[int, RowBatch]], window: anyio.Semaphore):
    """The batches in the order their units were discovered (the producers finish them in any
    order); each frees its place in ``window`` once the caller has handled it."""
    pending: dict[int, RowBatch] = {}
    following = 0
    async for number, batch in rows:
        pending[number] = batch
        while following in pending:
            yield pending.pop(following)
            following += 1
            window.release()


async def consume(
    rows: MemoryObjectReceiveStream[tuple[int, RowBatch]], writer, stats: LoadStats,
    progress: Progress, tree: Tree, limits: Limits, window: anyio.Semaphore,
) -> None:
    seen_runs: dict[str, int] = {}
    seen_experiments: set[int] = set()
    seen_names: dict[str, int] = {}
    seen_ids: dict[str, dict[str, int]] = {kind: {} for kind in _TREE_WIDE_IDS}
    # Assessment id -> its trace's id only (one entry per assessment: the largest of these maps
    # on a trace-heavy tree); the trace's experiment is in seen_ids["traces"].
    seen_assessments: dict[str, str] = {}
    # (model id, experiment id, metric key, run id) of every logged-model metric file's runs.
    model_metric_runs: set[tuple[str, int, str, str]] = set()
    async with rows:
        async for batch in in_order(rows, window):
            if derived.needed(batch):
                await anyio.to_thread.run_sync(derived.apply, batch, limits)
            stats.files += batch.files
            stats.census.merge(batch.census)
            stats.problems.extend(batch.problems)
            stats.lossy.update(batch.lossy)
            stats.duplicates.update(batch.duplicates)
            # Ids the tree holds twice: folders cannot stop that, a primary key does. The second
            # copy is left out (and reported), so the writer never trips over the key.
            stats.problems.extend(_drop_clashes(batch, seen_runs, seen_experiments, stats.clashes, tree))
            stats.problems.extend(_drop_name_clashes(batch, seen_names, stats.clashes, tree))
            stats.problems.extend(_drop_id_clashes(batch, seen_ids, stats.clashes, tree))
            stats.problems.extend(_drop_assessment_clashes(
                batch, seen_assessments, seen_ids["traces"], stats.clashes, tree))
            model_metric_runs.update((r[0], r[5], r[1], r[6]) for r in batch.rows.get("logged_model_metrics", ()))
            stats.rows.add_batch(batch)
            if writer is not None:
                await anyio.to_thread.run_sync(writer.write, batch)
            progress.advance(batch.folders, batch.count(), batch.files)
    stats.problems.extend(_metrics_of_absent_runs(model_metric_runs, seen_runs, stats.problems, tree))


@dataclass(frozen=True)
class Tree:
    """A source tree as the load's checks see it. Rows hold the experiment ids of the target
    (the workers renumber them), problems name the folders: ``folder_ids`` leads back."""

    mlruns: Path
    folder_ids: dict[int, int]  # target experiment id -> its folder's id, where they differ

    @classmethod
    def of(cls, mlruns: Path, id_map: dict[int, int]) -> Tree:
        return cls(mlruns, {new: old for old, new in id_map.items()})

    def folder_id(self, exp_id: int) -> int:
        return self.folder_ids.get(exp_id, exp_id)

    def folder(self, exp_id: int) -> Path:
        """The folder of the experiment the target keys as ``exp_id``."""
        folder = self.mlruns / str(self.folder_id(exp_id))
        return folder if folder.is_dir() else self.mlruns / TRASH / folder.name

    def meta(self, exp_id: int) -> str:
        return str(self.folder(exp_id) / META)


def _metrics_of_absent_runs(refs, seen_runs: dict[str, int], problems: list[Problem], tree: Tree) -> list[Problem]:
    """A logged model whose metric names a run the tree does not hold (the target keys the
    metric to the run): known only once every run is in. A run left out as invalid is no such
    run: with --skip-invalid, its models go with it (_drop_dependents)."""
    left_out = {p.entity_id for p in problems if p.entity == "runs"}
    return [
        Problem(str(tree.folder(exp_id) / "models" / model_id / "metrics" / key),
                f"the metric names run {run_id}, which is not in the tree", None, "logged_models", model_id)
        for model_id, exp_id, key, run_id in sorted(refs)
        if run_id not in seen_runs and run_id not in left_out
    ]


# Where a run's id sits in the rows of each table keyed by run.
_RUN_KEYED = {"runs": 0, "params": 0, "tags": 0, "metrics": 0, "latest_metrics": 0}


def _drop_clashes(
    batch: RowBatch, seen_runs: dict[str, int], seen_experiments: set[int], clashes: dict[str, set], tree: Tree,
) -> list[Problem]:
    problems = []
    for row in batch.rows.get("experiments", ()):
        exp_id = row[0]
        if exp_id in seen_experiments:
            folder_id = tree.folder_id(exp_id)
            problems.append(Problem(str(tree.mlruns / TRASH / str(folder_id)), "the experiment id appears "
                                    f"twice: {tree.mlruns / str(folder_id)} is the same id", None, "experiments",
                                    str(folder_id)))
            clashes["experiments"].add(exp_id)
            for table in ("experiments", "experiment_tags", "datasets"):
                column = 1 if table == "datasets" else 0
                batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[column] != exp_id]
        seen_experiments.add(exp_id)
    clashing = set()
    for row in batch.rows.get("runs", ()):
        run_id, exp_id = row[0], row[-1]
        if run_id in seen_runs:
            clashing.add(run_id)
            clashes["runs"].add(run_id)
            problems.append(Problem(str(tree.folder(exp_id) / run_id), f"the run id appears in two "
                                    f"experiments: {tree.folder_id(seen_runs[run_id])} and "
                                    f"{tree.folder_id(exp_id)} (also {tree.folder(seen_runs[run_id]) / run_id})",
                                    None, "runs", run_id))
        seen_runs.setdefault(run_id, exp_id)
    if clashing:
        for table, column in _RUN_KEYED.items():
            batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[column] not in clashing]
        if batch.scratch:
            batch.scratch.skip(clashing)
        dropped_inputs = {r[0] for r in batch.rows.get("inputs", ()) if r[2] in clashing or r[4] in clashing}
        batch.rows["inputs"] = [r for r in batch.rows.get("inputs", ()) if r[0] not in dropped_inputs]
        batch.rows["input_tags"] = [r for r in batch.rows.get("input_tags", ()) if r[0] not in dropped_inputs]
    return problems


async def _drop_dependents(writer, stats: LoadStats, tree: Tree) -> None:
    """Entities that name one left out cannot be migrated as they are (the reference would point
    nowhere, and MLflow would show them changed): a run using a dataset left out, then a logged
    model with metrics of a run left out. They are left out too, the referring file named."""
    runs = set()
    for input_uuid, run_id, exp_id in await anyio.to_thread.run_sync(writer.inputs_of_missing_datasets):
        run_path = str(tree.folder(exp_id) / run_id)
        stats.problems.append(Problem(input_file(run_path, input_uuid), "the run uses a dataset that "
                                      "was left out (listed above)", None, "runs", run_id))
        runs.add(run_id)
    await anyio.to_thread.run_sync(writer.delete_entities, {"runs": runs})
    models = set()
    named = {p.entity_id for p in stats.problems if p.entity == "logged_models"}  # a run not in the tree
    for model_id, exp_id, key, run_id in await anyio.to_thread.run_sync(writer.model_metrics_of_missing_runs):
        path = tree.folder(exp_id) / "models" / model_id / "metrics" / key
        if model_id not in named:
            stats.problems.append(Problem(str(path), f"the metric names run {run_id}, which was left out",
                                          None, "logged_models", model_id))
        models.add(model_id)
    await anyio.to_thread.run_sync(writer.delete_entities, {"logged_models": models})


# Ids each experiment folder holds for itself but the target keys across the whole tree:
# kind -> (folder inside the experiment, {table: where the id sits in its rows}, where the
# experiment id sits in the kind's own table's rows). The first table is the kind's own.
_TREE_WIDE_IDS = {
    "traces": ("traces", {"trace_info": "request_id", "trace_tags": 0, "trace_request_metadata": 0,
                          "assessments": "trace_id"}, "experiment_id"),
    "logged_models": ("models", {"logged_models": 0, "logged_model_params": 0, "logged_model_tags": 0,
                                 "logged_model_metrics": 0}, 1),
}


def _drop_id_clashes(
    batch: RowBatch, seen_ids: dict[str, dict[str, int]], clashes: dict[str, set], tree: Tree
) -> list[Problem]:
    """A trace or logged model id found in two experiments (a folder copied by hand): like a run
    id in two experiments, neither copy is kept, and the problem names both folders."""
    problems = []
    for kind, (folder, tables, exp_at) in _TREE_WIDE_IDS.items():
        own_table, id_at = next(iter(tables.items()))
        clashing = set()
        for row in batch.rows.get(own_table, ()):
            entity_id, exp_id = row[id_at], row[exp_at]
            first = seen_ids[kind].setdefault(entity_id, exp_id)
            if first != exp_id:
                clashing.add(entity_id)
                clashes[kind].add(entity_id)
                where = [str(tree.folder(e) / folder / entity_id) for e in (exp_id, first)]
                problems.append(Problem(where[0], f"the same id is also the folder {where[1]}; the target "
                                        "keys it across all experiments", None, kind, entity_id))
        if clashing:
            for table, at in tables.items():
                batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[at] not in clashing]
    return problems


def _drop_assessment_clashes(
    batch: RowBatch, seen: dict[str, str], trace_experiments: dict[str, int], clashes: dict[str, set],
    tree: Tree,
) -> list[Problem]:
    """An assessment id in two traces (a file copied by hand): the target keys assessments by
    id alone. As for an id in two experiments, neither trace is kept, and each problem names
    both files. (A trace of an earlier batch is deleted with the other clashes.) An assessment
    comes in the batch of its trace, whose experiment _drop_id_clashes has recorded."""
    problems = []
    for row in batch.rows.get("assessments", ()):
        assessment_id, trace_id = row["assessment_id"], row["trace_id"]
        first = seen.setdefault(assessment_id, trace_id)
        if first == trace_id:
            continue
        files = {trace: _assessment_file(tree, trace_experiments[trace], trace, assessment_id)
                 for trace in (trace_id, first)}
        for trace, other in ((trace_id, first), (first, trace_id)):
            if trace not in clashes["traces"]:
                clashes["traces"].add(trace)
                problems.append(Problem(files[trace], f"assessment id {assessment_id} is also the id in "
                                        f"{files[other]}; the target keys assessments by id across all "
                                        "traces", None, "traces", trace))
    if problems:
        for table, at in _TREE_WIDE_IDS["traces"][1].items():
            batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[at] not in clashes["traces"]]
    return problems


def _assessment_file(tree: Tree, exp_id: int, trace_id: str, assessment_id: str) -> str:
    folder = tree.folder(exp_id) / "traces" / trace_id / "assessments"
    # MLflow names the file by the id; a copy renamed by hand is found in the folder.
    return str(folder / f"{assessment_id}.yaml" if (folder / f"{assessment_id}.yaml").is_file() else folder)


def _drop_name_clashes(
    batch: RowBatch, seen_names: dict[str, int], clashes: dict[str, set], tree: Tree
) -> list[Problem]:
    """Experiment names are unique in the target (a tree merged by hand can hold one twice).
    Neither experiment is "the" one, so both are left out, each problem naming the other folder."""
    problems = []
    for row in batch.rows.get("experiments", ()):
        exp_id, name = row[0], row[1]
        first = seen_names.setdefault(name, exp_id)
        if first == exp_id:
            continue
        pair = (first, exp_id)
        for this, other in (pair, pair[::-1]):
            if this not in clashes["experiments"]:
                clashes["experiments"].add(this)
                problems.append(Problem(
                    tree.meta(this),
                    f"experiment name {name!r} is also the name of {tree.meta(other)}; "
                    "the target holds each name once", None, "experiments", str(tree.folder_id(this))))
    if clashes["experiments"]:
        for table in ("experiments", "experiment_tags", "datasets"):
            column = 1 if table == "datasets" else 0
            batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[column] not in clashes["experiments"]]
    return problems


async def verify(
    mlruns: Path, locator: str, processes: int, progress: Progress,
    skipped: dict[str, set[str]] | None = None, id_map: dict[int, int] | None = None,
) -> VerificationReport:
    """Compare the staged database (``locator``, see etl.verify.connect) with the source in up
    to ``processes`` worker processes; items in ``skipped`` (entity -> ids, left out with
    --skip-invalid) are counted as skipped instead of compared; renumbered experiments are
    compared through ``id_map``."""
    try:
        return await _verify(mlruns, locator, processes, progress, skipped, id_map)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


async def _verify(mlruns, locator, processes, progress, skipped, id_map) -> VerificationReport:
    limiter = anyio.CapacityLimiter(processes)
    # What needs MLflow runs in this process, on one thread at a time: a tree with traces has
    # MLflow imported here already (etl.source.derived), and a worker process that imported it
    # would hold ~200 MB more for the rest of the run.
    mlflow_limiter = anyio.CapacityLimiter(1)
    root, db = str(mlruns), locator
    ids = {str(old): str(new) for old, new in (id_map or {}).items()}
    # The total is known once the survey has planned the comparison.
    progress.phase("verify")
    report = VerificationReport()

    async def run(func, *args):
        """A check that imports no MLflow: in the worker processes."""
        if processes == 1:
            # One process: this one, on a thread. A new process costs more than it saves here.
            return await anyio.to_thread.run_sync(func, *args, limiter=limiter)
        return await anyio.to_process.run_sync(func, *args, cancellable=True, limiter=limiter)

    async def with_mlflow(func, *args):
        return await anyio.to_thread.run_sync(func, *args, limiter=mlflow_limiter)

    async def one(func, *args) -> None:
        report.merge(await with_mlflow(func, *args))

    async def proven(prove, args, check) -> None:
        """Bytes first; MLflow's reader for what they could not prove, and it names the differences."""
        proof, unsure = await run(prove, *args)
        report.merge(proof)
        if unsure:
            report.merge(await with_mlflow(check, unsure))
        progress.advance(len(args[3]))  # the chunk's folders

    async with anyio.create_task_group() as tg:
        found = await run(survey, root, db, skipped, ids)
        if found.registry:
            tg.start_soon(one, verify_registry, root, db, skipped)
        report.merge(found.report)
        plan = found.plan
        if found.unproven is None or found.unproven:
            experiments, more = await with_mlflow(verify_experiments, root, db, skipped, ids, found.unproven)
            report.merge(experiments)
            plan = {**plan, **more}
        planned = Counter({key: sum(len(folders[key]) for folders in plan.values())
                           for key in ("runs", "traces", "models")})
        progress.set_total(sum(planned.values()), counting(planned))
        skipped_runs = frozenset((skipped or {}).get("runs", ()))
        for exp_id, folders in plan.items():
            path = folders["path"]
            checks = (
                ("runs", prove_runs, (skipped_runs, ids), partial(check_runs, root, db, exp_id, path, id_map=ids)),
                ("traces", prove_traces, (ids,), partial(verify_traces, root, db, exp_id)),
                ("models", prove_logged_models, (ids,), partial(verify_logged_models, root, db, exp_id, id_map=ids)),
            )
            for key, prove, extra, check in checks:
                for start in range(0, len(folders[key]), VERIFY_CHUNK):
                    chunk = folders[key][start : start + VERIFY_CHUNK]
                    tg.start_soon(proven, prove, (db, exp_id, path, chunk, *extra), check)
    return report
