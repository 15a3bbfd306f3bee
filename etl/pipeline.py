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
import functools
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import anyio
import anyio.to_process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from etl.config import MigrationConfig
from etl.errors import InvalidSourceError, TargetError, TargetHoldsData, VerificationFailed
from etl.keys import KeyCheck
from etl.observe import Progress, log, record
from etl.rows import Census, Problem, RowBatch, RowCounter, Stray
from etl.sink.target import open_target
from etl.source import derived
from etl.source.census import census_tree, survey_root
from etl.source.extract import extract, input_file
from etl.source.layout import (
    META,
    RUN_ID,
    TRASH,
    LayoutError,
    WorkUnit,
    experiment_dirs,
    folders_of_experiment,
    more_entities_than,
    registered_model_dirs,
    resolve_mlruns,
    run_dirs,
    tree_units,
)
from etl.source.merge import TREE_WIDE, MergePlan, SourcePlan, artifact_problem, plan
from etl.sql_limits import Limits
from etl.verify.claims import Claims
from etl.verify.compare import verify_experiments, verify_logged_models, verify_traces
from etl.verify.merged import verify_copies, verify_folded, verify_merged
from etl.verify.merged import views as merged_views
from etl.verify.models import prove_logged_models
from etl.verify.registry import has_registry, verify_registries
from etl.verify.report import VerificationReport
from etl.verify.runs import check_runs, prove_runs
from etl.verify.survey import survey
from etl.verify.traces import prove_traces

# Runs per verification task: one read-only query set per chunk on the target side.
VERIFY_CHUNK = 64


@dataclass
class SourceStats:
    """What one source (one --source tree) gave the load."""

    mlruns: Path
    rows: RowCounter = field(default_factory=RowCounter)
    files: int = 0
    census: Census = field(default_factory=Census)


@dataclass
class LoadStats:
    sources: list[SourceStats]
    # Every source's problems, each naming its source (Problem.source).
    problems: list[Problem] = field(default_factory=list)
    # With --skip-invalid: rows removed after the load because their parent was left out.
    orphans: dict[str, int] = field(default_factory=dict)
    # Ids found twice in a tree (target experiment ids): neither copy can be trusted to be "the" entity.
    clashes: dict[str, set] = field(
        default_factory=lambda: {"experiments": set(), "runs": set(), "traces": set(), "logged_models": set()}
    )
    # Metric values the database holds otherwise than the files (etl.rows.LossyKey -> points).
    lossy: Counter = field(default_factory=Counter)
    # Metric points the database holds once (etl.rows.DuplicateKey -> points).
    duplicates: Counter = field(default_factory=Counter)
    # Where the load met each id (etl.pipeline.Seen): for the checks after it.
    seen: Seen | None = field(default=None, repr=False)

    @property
    def rows(self) -> RowCounter:
        total = RowCounter()
        for source in self.sources:
            total.update(source.rows)
        return total

    @property
    def files(self) -> int:
        return sum(source.files for source in self.sources)

    @property
    def census(self) -> Census:
        """The census of every source (each path names its source)."""
        if len(self.sources) == 1:
            return self.sources[0].census
        total = Census()
        for source in self.sources:
            total.merge(source.census)
        return total

    def skipped_ids(self, source: int = 0) -> dict[str, set[str]]:
        """Entity kind -> ids left out of one source, in the verifier's terms."""
        out: dict[str, set[str]] = {}
        for p in self.problems:
            if p.entity is not None and p.source == source:
                out.setdefault(p.entity, set()).add(str(p.entity_id))
        return out


@dataclass
class MigrationResult:
    sources: list[Path]
    target: str  # as it may be printed: a path, or a URI without its password
    load: LoadStats
    phases: dict[str, float]
    report: VerificationReport | None
    # What each source became: ids and names that changed (etl.source.merge).
    plan: MergePlan
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


def source_trees(sources) -> list[Path]:
    """The mlruns folders the --source options name, in their order; one named twice (under
    any spelling) is a usage error."""
    trees: list[Path] = []
    for source in sources:
        try:
            mlruns = resolve_mlruns(source)
        except LayoutError as e:
            raise TargetError(str(e)) from None
        if any(os.path.samefile(mlruns, t) for t in trees):
            raise TargetError(f"{mlruns}: given twice as --source")
        trees.append(mlruns)
    return trees


async def migrate(config: MigrationConfig, progress: Progress | None = None) -> MigrationResult:
    progress = progress or Progress()
    trees = source_trees(config.sources)
    target = open_target(config.target)
    check_target(target, trees)
    merge = plan_for(trees, target, config.on_name_clash)
    phases: dict[str, float] = {}
    with target.staging(keep_failed=config.keep_failed) as area:
        record("migration started", source=", ".join(map(str, trees)), target=target.display,
               staging=str(area.kept))

        started = time.monotonic()
        await anyio.to_thread.run_sync(area.create_schema)
        phases["schema"] = time.monotonic() - started

        started = time.monotonic()
        limits = await anyio.to_thread.run_sync(area.column_limits)
        folding = await anyio.to_thread.run_sync(area.key_folding)
        writer = area.writer(config.batch_size)
        try:
            stats = await load(merge, writer, config, progress, limits, folding)
            if stats.problems and not config.skip_invalid:
                # Strict: the whole tree was read so every problem is listed; nothing is kept.
                raise InvalidSourceError(stats.problems, len(trees))
            if stats.problems:
                # Both copies of a clashing id go: which one arrived first is an accident of timing.
                await anyio.to_thread.run_sync(writer.delete_entities, stats.clashes)
                await _drop_dependents(writer, stats)
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
            report = await verify_while_syncing(area, claims_of(merge, stats), processes, progress)
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
    return MigrationResult(trees, target.display, stats, phases, report, merge, target.server_uri,
                           target.server_packages, counts)


async def verify_while_syncing(area, sources: list[Claims], processes: int, progress: Progress) -> VerificationReport:
    """Verify the staged database while its file goes to disk: the promotion must sync it
    anyway (SQLite: 4 s for a 2.6 GB file), and verification only reads it, on the CPU, so the
    write-back costs nothing beside it. promote() syncs again, which then finds nothing left."""
    sync = getattr(area, "sync", None)
    if sync is None:  # a server's staging is durable once committed
        return await verify(sources, area.locator, processes, progress)
    try:
        async with anyio.create_task_group() as tg:
            # Not abandoned on a stop: the file may be removed only once the sync has let go of it.
            tg.start_soon(anyio.to_thread.run_sync, sync)
            return await verify(sources, area.locator, processes, progress)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def release_freed_memory() -> None:
    """Hand the memory the load freed (the writer's page cache, the batches) back to the system
    before verification: glibc keeps freed blocks in its arenas, where the whole process tree's
    peak, reached during verification, counted them (15 MB on a 400 k-file tree). Other C
    libraries have no malloc_trim; there the memory stays until it is reused."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def plan_for(trees: list[Path], target, rule: str) -> MergePlan:
    """What each source's experiments and registered models become in the target (its ids and,
    for several sources, names: etl.source.merge)."""
    try:
        merge = plan(trees, target.max_experiment_id, rule)
    except LayoutError as e:
        raise TargetError(str(e)) from None
    for source in merge.sources:
        for old, new in source.id_map.items():
            joins = source.experiments[old].joins
            log.info("experiment merged into another" if joins else "experiment renumbered",
                     source=str(source.mlruns), old_id=old, new_id=new)
    return merge


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
    trees = source_trees(config.sources)
    target = open_target(config.target)
    try:
        check_target(target, trees)
        refused = None
    except TargetError as e:
        refused = e
    merge = plan_for(trees, target, config.on_name_clash)
    started = time.monotonic()
    limits = await anyio.to_thread.run_sync(target.expected_limits)
    folding = await anyio.to_thread.run_sync(target.expected_folding)
    stats = await load(merge, None, config, progress, limits, folding)
    log_census(stats.census)
    return MigrationResult(trees, target.display, stats, {"load": time.monotonic() - started}, None,
                           merge, target.server_uri, target.server_packages, refused=refused)


def check_target(target, trees: list[Path]) -> None:
    """The target's own refusal (it holds data, the server is unreachable...); for a target that
    holds what looks like an earlier migration of these trees, with the command that checks it."""
    try:
        target.check_free()
    except TargetHoldsData as e:
        if not looks_migrated_from(trees, e):
            raise
        sources = " ".join(f"--source {mlruns}" for mlruns in trees)
        which = f"{trees[0]}" if len(trees) == 1 else ", ".join(map(str, trees))
        raise TargetHoldsData(
            e.target, e.shown, hint=f"It looks like an earlier migration of {which}: `etl-migrate verify "
            f"{sources} --target {target.server_uri}` checks it against the tree{'s' if len(trees) > 1 else ''}; "
            "else move it away or choose another --target."
        ) from None


def looks_migrated_from(trees: list[Path], held: TargetHoldsData) -> bool:
    """Whether a filled target looks made from these trees: its runs (a sample) are all run
    folders of theirs, or, holding no runs, its experiments' names are all theirs."""
    if held.run_ids:
        found: set[str] = set()
        for mlruns in trees:
            for path, _ in experiment_dirs(mlruns):
                found.update(run_dirs(path))
        return held.run_ids <= found
    if held.experiment_names:
        from etl.source.read import SourceError, read_yaml

        names = set()
        for mlruns in trees:
            for path, _ in experiment_dirs(mlruns):
                with contextlib.suppress(SourceError, OSError):
                    names.add(str((read_yaml(os.path.join(path, META)) or {}).get("name")))
        return held.experiment_names <= names
    return False


async def verify_existing(sources, target: str, workers: int, progress: Progress | None = None,
                          on_name_clash: str = "rename"):
    """Verify a database made earlier (by us or by `mlflow migrate-filestore`) against one or
    more trees: what each became is worked out from the trees as a migration works it out."""
    trees = source_trees(sources)
    database = open_target(target)
    locator = database.existing()
    merge = plan_for(trees, database, on_name_clash)
    started = time.monotonic()
    stats = LoadStats([SourceStats(mlruns) for mlruns in trees], problems=merge.problems)
    # A small tree is compared on threads of this process: worker processes would cost more.
    big = False
    for mlruns in trees:
        big = big or await anyio.to_thread.run_sync(more_entities_than, mlruns, SMALL_TREE_FOLDERS)
    processes = process_count(workers) if big else 1

    async def take_census(source: SourceStats) -> None:
        source.census.merge(await anyio.to_thread.run_sync(census_tree, source.mlruns, abandon_on_cancel=True))

    try:
        async with anyio.create_task_group() as tg:
            # Listing folders only, in a thread: it overlaps the comparison.
            for source in stats.sources:
                tg.start_soon(take_census, source)
            report = await verify(claims_of(merge, stats), locator, processes, progress or Progress())
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    log_census(stats.census)
    return MigrationResult(trees, database.display, stats, {"verify": time.monotonic() - started}, report,
                           merge, database.server_uri, database.server_packages, database.counts(locator))


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
    merge: MergePlan, writer, config: MigrationConfig, progress: Progress, limits: Limits, folding=None,
) -> LoadStats:
    """Discover, parse, check against the target's limits and (unless writer is None, for a dry
    run) write every source, one after the other; the workers write what each experiment and
    registered model becomes (``merge``: their work units carry it). ``folding`` (the target's,
    etl.keys): how it compares the text of keys, if not byte by byte."""
    stats = LoadStats([SourceStats(source.mlruns) for source in merge.sources], problems=list(merge.problems),
                      seen=Seen())
    keys = KeyCheck(folding) if folding is not None else None
    try:
        found = [await find_folders(source.mlruns, progress) for source in merge.sources]
        everything = sum(found, Counter())
        progress.phase("load", sum(everything.values()), counting(everything))
        for index, source in enumerate(merge.sources):
            tree = Tree.of(index, source, merge)
            await _load(tree, writer, config, progress, limits, stats, sum(found[index].values()), keys)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        if folding is not None:
            folding.close()
    seen = stats.seen
    stats.problems.extend(_metrics_of_absent_runs(seen.model_metric_runs, seen.runs, stats.problems))
    return stats


async def _load(tree: Tree, writer, config, progress, limits, stats: LoadStats, folders: int, keys=None) -> None:
    """One source's part of the load (``folders``: its run, trace and model folders)."""
    here = stats.sources[tree.index]
    # A writer that takes rows in scratch files the producers write (etl.sink.sqlite.scratch)
    # says so with its ``spill``; the others take every row from the batch.
    spill = getattr(writer, "spill", None)
    big = folders > SMALL_TREE_FOLDERS
    parse = parser(process_count(config.workers) if big else 0, spill)
    units_send, units_recv = anyio.create_memory_object_stream[tuple[int, WorkUnit]](config.queue_size)
    rows_send, rows_recv = anyio.create_memory_object_stream[tuple[int, RowBatch]](config.queue_size)
    producers = config.workers if big else 1
    # Units discovered and not yet written: the writer takes them in order (in_order), and this
    # bounds the batches that wait for an earlier one.
    window = anyio.Semaphore(config.queue_size + producers)
    async with anyio.create_task_group() as tg:
        tg.start_soon(discover, tree.plan, config.runs_per_unit, units_send, here.census, window)
        async with units_recv, rows_send:
            for _ in range(producers):
                tg.start_soon(produce, units_recv.clone(), rows_send.clone(), parse, limits)
        tg.start_soon(consume, rows_recv, writer, stats, progress, tree, limits, window, keys)
    # What the census of the tree's own folders could not classify (a name that is no UTF-8, a
    # loop) is invalid input like a bad file; the units' census problems are theirs already.
    stats.problems.extend(replace(p, source=tree.index) for p in here.census.problems)
    here.census.problems = []


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
    source: SourcePlan, runs_per_unit: int, send: MemoryObjectSendStream[tuple[int, WorkUnit]],
    census: Census, window: anyio.Semaphore,
) -> None:
    """Every work unit of a source, numbered in the order the writer is to take them (see
    etl.source.layout.tree_units: runs in the order of their ids), each carrying what its
    experiment or registered model becomes."""
    async with send:
        await anyio.to_thread.run_sync(survey_root, source.mlruns, census)
        units = await anyio.to_thread.run_sync(tree_units, source.mlruns, runs_per_unit, source.experiments,
                                               source.models)
        log.debug("tree discovered", source=str(source.mlruns), units=len(units),
                  kinds=dict(Counter(u.kind for u in units)))
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


@dataclass
class Seen:
    """Where the load met each id, across every source: (tree, target experiment id)."""

    runs: dict[str, tuple[Tree, int]] = field(default_factory=dict)
    experiments: set[int] = field(default_factory=set)
    names: dict[str, tuple[Tree, int]] = field(default_factory=dict)
    ids: dict[str, dict[str, tuple[Tree, int]]] = field(default_factory=lambda: {kind: {} for kind in _TREE_WIDE_IDS})
    # Assessment id -> its trace's id only (one entry per assessment: the largest of these maps
    # on a trace-heavy tree); the trace's experiment is in ids["traces"].
    assessments: dict[str, str] = field(default_factory=dict)
    # (model id, (tree, experiment id), metric key, run id) of every logged-model metric file's runs.
    model_metric_runs: set[tuple[str, tuple[Tree, int], str, str]] = field(default_factory=set)
    # (tree, experiment id) whose artifact locations were flagged already (several sources).
    artifacts: set[tuple[Tree, int]] = field(default_factory=set)


async def consume(
    rows: MemoryObjectReceiveStream[tuple[int, RowBatch]], writer, stats: LoadStats,
    progress: Progress, tree: Tree, limits: Limits, window: anyio.Semaphore,
    keys: KeyCheck | None = None,
) -> None:
    here, seen = stats.sources[tree.index], stats.seen
    # Ids another source holds too: its copy is migrated (a byte-identical folder), or none is.
    gone = {kind: tree.plan.copies[kind].keys() | tree.conflicts[kind] for kind in TREE_WIDE}
    gone = {kind: ids for kind, ids in gone.items() if ids}
    async with rows:
        async for batch in in_order(rows, window):
            if derived.needed(batch):
                await anyio.to_thread.run_sync(derived.apply, batch, limits)
            here.files += batch.files
            here.census.merge(batch.census)
            stats.problems.extend(replace(p, source=tree.index) for p in batch.problems)
            for kind, ids in gone.items():
                _remove(batch, kind, ids, counted=True)
            stats.lossy.update(batch.lossy)
            stats.duplicates.update(batch.duplicates)
            # Ids the tree holds twice: folders cannot stop that, a primary key does. The second
            # copy is left out (and reported), so the writer never trips over the key.
            stats.problems.extend(_drop_clashes(batch, seen, stats.clashes, tree))
            stats.problems.extend(_drop_name_clashes(batch, seen.names, stats.clashes, tree))
            stats.problems.extend(_drop_id_clashes(batch, seen.ids, stats.clashes, tree))
            stats.problems.extend(_drop_assessment_clashes(
                batch, seen.assessments, seen.ids["traces"], stats.clashes))
            if keys is not None:
                # Keys the target's collation holds as one (MySQL); may ask the server.
                stats.problems.extend(await anyio.to_thread.run_sync(keys.check, batch, tree))
            seen.model_metric_runs.update(
                (r[0], (tree, r[5]), r[1], r[6]) for r in batch.rows.get("logged_model_metrics", ()))
            if tree.several:
                _flag_artifact_locations(batch, tree, seen.artifacts, here.census)
            here.rows.add_batch(batch)
            if writer is not None:
                await anyio.to_thread.run_sync(writer.write, batch)
            progress.advance(batch.folders, batch.count(), batch.files)


@dataclass(frozen=True, eq=False)
class Tree:
    """A source tree as the load's checks see it. Rows hold the experiment ids of the target
    (the workers renumber them), problems name the folders: ``folder_ids`` leads back."""

    index: int  # its place among the sources
    several: bool  # one of several sources
    plan: SourcePlan
    conflicts: dict[str, set[str]]  # kind -> ids several sources hold with other files: none migrated
    folder_ids: dict[int, int]  # target experiment id -> its folder's id, where they differ

    @classmethod
    def of(cls, index: int, source: SourcePlan, merge: MergePlan) -> Tree:
        # No two folders of one tree get one target id (one that joins another tree's
        # experiment takes that one's id): each id in the tree's rows leads back to one folder.
        back = {t.id: old for old, t in source.experiments.items() if t.id != old}
        return cls(index, len(merge.sources) > 1, source, merge.conflicts, back)

    @property
    def mlruns(self) -> Path:
        return self.plan.mlruns

    def folder_id(self, exp_id: int) -> int:
        return self.folder_ids.get(exp_id, exp_id)

    def folder(self, exp_id: int) -> Path:
        """The folder of the experiment the target keys as ``exp_id``."""
        folder = self.mlruns / str(self.folder_id(exp_id))
        return folder if folder.is_dir() else self.mlruns / TRASH / folder.name

    def meta(self, exp_id: int) -> str:
        return str(self.folder(exp_id) / META)


def _metrics_of_absent_runs(refs, seen_runs: dict, problems: list[Problem]) -> list[Problem]:
    """A logged model whose metric names a run no source holds (the target keys the metric to
    the run): known only once every run is in. A run left out as invalid is no such run: with
    --skip-invalid, its models go with it (_drop_dependents)."""
    left_out = {p.entity_id for p in problems if p.entity == "runs"}
    return [
        Problem(str(tree.folder(exp_id) / "models" / model_id / "metrics" / key),
                f"the metric names run {run_id}, which is not in the tree", None, "logged_models", model_id,
                tree.index)
        for model_id, (tree, exp_id), key, run_id in sorted(refs, key=lambda r: (r[0], r[1][0].index, r[1][1], r[2], r[3]))
        if run_id not in seen_runs and run_id not in left_out
    ]


# Where the artifact location and the experiment id sit in the rows that have one.
_ARTIFACT_LOCATIONS = {"experiments": (2, 0), "runs": (12, 13)}


def _flag_artifact_locations(batch: RowBatch, tree: Tree, flagged: set, census: Census) -> None:
    """Artifact locations that may not find their artifacts once several trees share a database
    (etl.source.merge.artifact_problem): the first of each experiment, named in the census."""
    for table, (at, exp_at) in _ARTIFACT_LOCATIONS.items():
        for row in batch.rows.get(table, ()):
            if (tree, row[exp_at]) in flagged:
                continue
            problem = artifact_problem(row[at], tree.mlruns, _exists)
            if problem is not None:
                flagged.add((tree, row[exp_at]))
                what = "" if table == "experiments" else f"run {row[0]}: "
                census.flagged.append(Stray(str(tree.folder(row[exp_at])), True, what + problem
                                            + "; its runs may not find their artifacts"))


@functools.lru_cache(maxsize=4096)
def _folder_exists(path: str) -> bool:
    return os.path.exists(path)


def _exists(path: str) -> bool:
    """Whether a local artifact folder exists: for a run's own (``<experiment>/<run>/artifacts``,
    MLflow's layout) whether its experiment's folder does, one question per experiment."""
    head, run, last = (path.rstrip("/").rsplit("/", 2) + ["", ""])[:3]
    if last == "artifacts" and RUN_ID.fullmatch(run):
        return _folder_exists(head)
    return _folder_exists(path)


# The metric table of a kind whose values etl.rows.LossyKey and DuplicateKey count.
_METRIC_TABLES = {"runs": "metrics", "logged_models": "logged_model_metrics"}
# Where a run's id sits in the rows of each table keyed by run.
_RUN_KEYED = {"runs": 0, "params": 0, "tags": 0, "metrics": 0, "latest_metrics": 0}


def _remove(batch: RowBatch, kind: str, ids, counted: bool = False) -> None:
    """Every row of the runs, traces or logged models ``ids`` out of the batch; ``counted``: and
    what the batch counted of their metric values (another source's copy counts them)."""
    if counted and kind in _METRIC_TABLES:
        for counter in (batch.lossy, batch.duplicates):
            for key in [k for k in counter if k[0] == _METRIC_TABLES[kind] and k[1] in ids]:
                del counter[key]
    if kind != "runs":
        for table, at in _TREE_WIDE_IDS[kind][1].items():
            if table in batch.rows:
                batch.rows[table] = [r for r in batch.rows[table] if r[at] not in ids]
        return
    for table, column in _RUN_KEYED.items():
        if table in batch.rows:
            batch.rows[table] = [r for r in batch.rows[table] if r[column] not in ids]
    if batch.scratch:
        batch.scratch.skip(ids)
    dropped_inputs = {r[0] for r in batch.rows.get("inputs", ()) if r[2] in ids or r[4] in ids}
    if dropped_inputs:
        batch.rows["inputs"] = [r for r in batch.rows["inputs"] if r[0] not in dropped_inputs]
        batch.rows["input_tags"] = [r for r in batch.rows.get("input_tags", ()) if r[0] not in dropped_inputs]


def _drop_clashes(batch: RowBatch, seen: Seen, clashes: dict[str, set], tree: Tree) -> list[Problem]:
    problems = []
    for row in batch.rows.get("experiments", ()):
        exp_id = row[0]
        if exp_id in seen.experiments:
            folder_id = tree.folder_id(exp_id)
            problems.append(Problem(str(tree.mlruns / TRASH / str(folder_id)), "the experiment id appears "
                                    f"twice: {tree.mlruns / str(folder_id)} is the same id", None, "experiments",
                                    str(folder_id), tree.index))
            clashes["experiments"].add(exp_id)
            for table in ("experiments", "experiment_tags", "datasets"):
                column = 1 if table == "datasets" else 0
                batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[column] != exp_id]
        seen.experiments.add(exp_id)
    clashing = set()
    for row in batch.rows.get("runs", ()):
        run_id, exp_id = row[0], row[-1]
        if run_id in seen.runs:
            clashing.add(run_id)
            clashes["runs"].add(run_id)
            first, first_exp = seen.runs[run_id]
            if (first, first_exp) == (tree, exp_id):  # one experiment id in mlruns/ and .trash/ (as below)
                folder_id = str(tree.folder_id(exp_id))
                problems.append(Problem(str(tree.mlruns / TRASH / folder_id / run_id), "the run id is also "
                                        f"{tree.mlruns / folder_id / run_id}: the experiment id appears twice",
                                        None, "runs", run_id, tree.index))
            else:
                problems.append(Problem(str(tree.folder(exp_id) / run_id), f"the run id appears in two "
                                        f"experiments: {first.folder_id(first_exp)} and "
                                        f"{tree.folder_id(exp_id)} (also {first.folder(first_exp) / run_id})",
                                        None, "runs", run_id, tree.index))
        seen.runs.setdefault(run_id, (tree, exp_id))
    if clashing:
        _remove(batch, "runs", clashing)
    return problems


async def _drop_dependents(writer, stats: LoadStats) -> None:
    """Entities that name one left out cannot be migrated as they are (the reference would point
    nowhere, and MLflow would show them changed): a run using a dataset left out, then a logged
    model with metrics of a run left out. They are left out too, the referring file named."""
    seen = stats.seen
    runs = set()
    for input_uuid, run_id, _exp_id in await anyio.to_thread.run_sync(writer.inputs_of_missing_datasets):
        tree, exp_id = seen.runs[run_id]
        stats.problems.append(Problem(input_file(str(tree.folder(exp_id) / run_id), input_uuid), "the run uses "
                                      "a dataset that was left out (listed above)", None, "runs", run_id, tree.index))
        runs.add(run_id)
    await anyio.to_thread.run_sync(writer.delete_entities, {"runs": runs})
    models = set()
    named = {p.entity_id for p in stats.problems if p.entity == "logged_models"}  # a run not in the tree
    for model_id, _exp_id, key, run_id in await anyio.to_thread.run_sync(writer.model_metrics_of_missing_runs):
        tree, exp_id = seen.ids["logged_models"][model_id]
        path = tree.folder(exp_id) / "models" / model_id / "metrics" / key
        if model_id not in named:
            stats.problems.append(Problem(str(path), f"the metric names run {run_id}, which was left out",
                                          None, "logged_models", model_id, tree.index))
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


def _drop_id_clashes(batch: RowBatch, seen_ids: dict, clashes: dict[str, set], tree: Tree) -> list[Problem]:
    """A trace or logged model id found in two experiments of a tree (a folder copied by hand):
    like a run id in two experiments, neither copy is kept, and the problem names both folders.
    (An id in two sources was settled before the load: etl.source.merge.)"""
    problems = []
    for kind, (folder, tables, exp_at) in _TREE_WIDE_IDS.items():
        own_table, id_at = next(iter(tables.items()))
        clashing = set()
        for row in batch.rows.get(own_table, ()):
            entity_id, here = row[id_at], (tree, row[exp_at])
            first = seen_ids[kind].setdefault(entity_id, here)
            if first is not here:  # each folder gives one row: an id seen before is another folder
                clashing.add(entity_id)
                clashes[kind].add(entity_id)
                if first == here:
                    # One experiment id both in mlruns/ and .trash/ (a copy; _drop_clashes names
                    # it): the deleted one comes second (etl.source.layout.experiment_dirs).
                    folder_id = str(tree.folder_id(here[1]))
                    where = [str(tree.mlruns / TRASH / folder_id / folder / entity_id),
                             str(tree.mlruns / folder_id / folder / entity_id)]
                else:
                    where = [str(t.folder(e) / folder / entity_id) for t, e in (here, first)]
                problems.append(Problem(where[0], f"the same id is also the folder {where[1]}; the target "
                                        "keys it across all experiments", None, kind, entity_id, tree.index))
        if clashing:
            _remove(batch, kind, clashing)
    return problems


def _drop_assessment_clashes(
    batch: RowBatch, seen: dict[str, str], trace_experiments: dict, clashes: dict[str, set],
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
        files = {trace: _assessment_file(*trace_experiments[trace], trace, assessment_id)
                 for trace in (trace_id, first)}
        for trace, other in ((trace_id, first), (first, trace_id)):
            if trace not in clashes["traces"]:
                clashes["traces"].add(trace)
                problems.append(Problem(files[trace], f"assessment id {assessment_id} is also the id in "
                                        f"{files[other]}; the target keys assessments by id across all "
                                        "traces", None, "traces", trace, trace_experiments[trace][0].index))
    if problems:
        _remove(batch, "traces", clashes["traces"])
    return problems


def _assessment_file(tree: Tree, exp_id: int, trace_id: str, assessment_id: str) -> str:
    folder = tree.folder(exp_id) / "traces" / trace_id / "assessments"
    # MLflow names the file by the id; a copy renamed by hand is found in the folder.
    return str(folder / f"{assessment_id}.yaml" if (folder / f"{assessment_id}.yaml").is_file() else folder)


def _drop_name_clashes(batch: RowBatch, seen_names: dict, clashes: dict[str, set], tree: Tree) -> list[Problem]:
    """Experiment names are unique in the target (a tree merged by hand can hold one twice).
    Neither experiment is "the" one, so both are left out, each problem naming the other folder.
    (A name in two sources was settled before the load: etl.source.merge.)"""
    problems = []
    for row in batch.rows.get("experiments", ()):
        here, name = (tree, row[0]), row[1]
        first = seen_names.setdefault(name, here)
        if first == here:
            continue
        for (t, this), (o, other) in ((first, here), (here, first)):
            if this not in clashes["experiments"]:
                clashes["experiments"].add(this)
                problems.append(Problem(
                    t.meta(this), f"experiment name {name!r} is also the name of {o.meta(other)}; "
                    "the target holds each name once", None, "experiments", str(t.folder_id(this)), t.index))
    if clashes["experiments"]:
        for table in ("experiments", "experiment_tags", "datasets"):
            column = 1 if table == "datasets" else 0
            batch.rows[table] = [r for r in batch.rows.get(table, ()) if r[column] not in clashes["experiments"]]
    return problems


def claims_of(merge: MergePlan, stats: LoadStats) -> list[Claims]:
    """What the migration says each source became, for the verifier to check (etl.verify.claims)."""
    return [
        Claims(
            str(source.mlruns), source.label,
            experiment_ids={str(old): str(t.id) for old, t in source.experiments.items() if t.id != old},
            experiment_names={str(old): t.name for old, t in source.experiments.items() if t.name is not None},
            model_names={name: t.name for name, t in source.models.items() if t.name != name},
            model_offsets={name: t.version_offset for name, t in source.models.items() if t.version_offset},
            copies={kind: dict(ids) for kind, ids in source.copies.items() if ids},
            skipped=stats.skipped_ids(index),
        )
        for index, source in enumerate(merge.sources)
    ]


async def verify(sources: list[Claims], locator: str, processes: int, progress: Progress) -> VerificationReport:
    """Compare the staged database (``locator``, see etl.verify.connect) with the sources in up
    to ``processes`` worker processes, through what the migration claims each became (renumbered
    and renamed experiments, merged ones, copies: etl.verify.claims); items each source's claims
    list as skipped (left out with --skip-invalid) are counted as skipped instead of compared."""
    try:
        return await _verify(sources, locator, processes, progress)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


async def _verify(sources: list[Claims], locator, processes, progress) -> VerificationReport:
    limiter = anyio.CapacityLimiter(processes)
    # What needs MLflow runs in this process, on one thread at a time: a tree with traces has
    # MLflow imported here already (etl.source.derived), and a worker process that imported it
    # would hold ~200 MB more for the rest of the run.
    mlflow_limiter = anyio.CapacityLimiter(1)
    db = locator
    # The total is known once the surveys have planned the comparison.
    progress.phase("verify")
    report = VerificationReport()
    several = len(sources) > 1

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

    plans: list[tuple[Claims, dict[str, str], dict]] = []

    async def planned(claims: Claims, ids: dict[str, str], shared: frozenset[str]) -> None:
        """One source's experiments, and the plan of its run, trace and logged model folders."""
        root, skipped = claims.root, claims.skipped
        copies = {kind: set(held) for kind, held in claims.copies.items()}
        found = await run(survey, root, db, skipped, ids, claims.experiment_names, shared, copies)
        own, plan = found.report, found.plan
        if found.unproven is None or found.unproven:
            experiments, more = await with_mlflow(verify_experiments, root, db, skipped, ids, found.unproven,
                                                  claims.experiment_names, shared, copies)
            own.merge(experiments)
            plan = {**plan, **more}
        if several:
            own.name_source(claims.label)
        report.merge(own)
        plans.append((claims, ids, plan))

    async with anyio.create_task_group() as tg:
        if several:
            views, shared, folded, unclaimed = await run(merged_views, sources, db)
            for target_id in unclaimed:
                report.checked("experiments")
                report.mismatch("experiments", target_id, "presence", False, True)
            if shared:
                tg.start_soon(one, verify_merged, shared, db)
            report.merge(await run(verify_folded, folded, db))
            report.merge(await run(verify_copies, sources))
        else:
            views = [(sources[0].experiment_ids, frozenset())]
        if await run(has_registry, [c.root for c in sources], db):
            tg.start_soon(one, verify_registries, sources, db)
        async with anyio.create_task_group() as surveys:
            for claims, (ids, shared_folders) in zip(sources, views):
                surveys.start_soon(planned, claims, ids, shared_folders)
        total = Counter({key: sum(len(folders[key]) for _, _, plan in plans for folders in plan.values())
                         for key in ("runs", "traces", "models")})
        progress.set_total(sum(total.values()), counting(total))
        for claims, ids, plan in sorted(plans, key=lambda p: sources.index(p[0])):
            root, skipped_runs = claims.root, frozenset(claims.skipped.get("runs", ()))
            for exp_id, folders in plan.items():
                path = folders["path"]
                checks = (
                    ("runs", prove_runs, (skipped_runs, ids), partial(check_runs, root, db, exp_id, path, id_map=ids)),
                    ("traces", prove_traces, (ids,), partial(verify_traces, root, db, exp_id)),
                    ("models", prove_logged_models, (ids,),
                     partial(verify_logged_models, root, db, exp_id, id_map=ids)),
                )
                for key, prove, extra, check in checks:
                    for start in range(0, len(folders[key]), VERIFY_CHUNK):
                        chunk = folders[key][start : start + VERIFY_CHUNK]
                        tg.start_soon(proven, prove, (db, exp_id, path, chunk, *extra), check)
    return report
