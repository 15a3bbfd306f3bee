"""The async orchestration: discover -> N producers -> one writer -> verify -> promote.

    discover ──units──▶ producers (x --workers, parsing in worker processes)
                              │ RowBatch, bounded stream (back-pressure)
                              ▼
                      writer (the staging file's only connection)

Both streams are bounded, so memory follows --queue-size, not the size of the tree.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from etl.config import MigrationConfig
from etl.errors import InvalidSourceError, TargetError, VerificationFailed
from etl.observe import Progress, log
from etl.rows import Problem, RowBatch, RowCounter
from etl.sink.schema import create_schema
from etl.sink.staging import StagingArea, check_target_is_free, target_path
from etl.sink.writer import StagingWriter
from etl.source.extract import extract
from etl.source.layout import (
    LayoutError,
    RegisteredModelUnit,
    WorkUnit,
    experiment_dirs,
    experiment_units,
    registered_model_dirs,
    resolve_mlruns,
)
from etl.verify.compare import (
    verify_experiments,
    verify_logged_models,
    verify_registry,
    verify_runs,
    verify_traces,
)
from etl.verify.report import VerificationReport

# Runs per verification task: one read-only query set per chunk on the target side.
VERIFY_CHUNK = 32


@dataclass
class LoadStats:
    rows: RowCounter = field(default_factory=RowCounter)
    files: int = 0
    units: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass
class MigrationResult:
    source: Path
    target: Path
    load: LoadStats
    phases: dict[str, float]
    report: VerificationReport | None


def process_count(workers: int) -> int:
    """Parsing is CPU-bound Python: more processes than cores only adds memory."""
    return max(1, min(workers, os.cpu_count() or 1))


def source_tree(config: MigrationConfig) -> Path:
    try:
        return resolve_mlruns(config.source)
    except LayoutError as e:
        raise TargetError(str(e)) from None


async def migrate(config: MigrationConfig, progress: Progress | None = None) -> MigrationResult:
    progress = progress or Progress()
    mlruns = source_tree(config)
    target = target_path(config.target)
    check_target_is_free(target)
    phases: dict[str, float] = {}
    with StagingArea(target, keep_failed=config.keep_failed) as area:
        check_target_is_free(target)  # again, now that we hold the lock
        log.info("migration started", source=str(mlruns), target=str(target), staging=str(area.staging))

        started = time.monotonic()
        await anyio.to_thread.run_sync(create_schema, area.staging)
        phases["schema"] = time.monotonic() - started

        started = time.monotonic()
        writer = StagingWriter(area.staging, config.batch_size)
        progress.phase("load")
        try:
            stats = await load(mlruns, writer, config, progress)
            await anyio.to_thread.run_sync(writer.finish)
        except BaseException:
            writer.abort()
            raise
        phases["load"] = time.monotonic() - started
        log.info("load finished", rows=sum(stats.rows.values()), files=stats.files, seconds=round(phases["load"], 2))
        if stats.problems:
            raise InvalidSourceError(stats.problems)

        report = None
        if config.verify:
            started = time.monotonic()
            report = await verify(mlruns, area.staging, config.workers, progress)
            phases["verify"] = time.monotonic() - started
            if not report.ok:
                raise VerificationFailed(report)
        else:
            log.warning("verification skipped (--no-verify): the database was NOT compared with the source")

        started = time.monotonic()
        progress.phase("promote", total=1)
        area.promote()
        progress.advance()
        phases["promote"] = time.monotonic() - started
    return MigrationResult(mlruns, target, stats, phases, report)


async def dry_run(config: MigrationConfig, progress: Progress | None = None) -> MigrationResult:
    """Read and parse the whole tree, count what would be written, write nothing anywhere."""
    progress = progress or Progress()
    mlruns = source_tree(config)
    target = target_path(config.target)
    check_target_is_free(target)
    started = time.monotonic()
    progress.phase("load")
    stats = await load(mlruns, None, config, progress)
    return MigrationResult(mlruns, target, stats, {"load": time.monotonic() - started}, None)


async def verify_existing(source: Path, target: str, workers: int, progress: Progress | None = None):
    """Verify a database made earlier (by us or by `mlflow migrate-filestore`) against a tree."""
    mlruns = source_tree(MigrationConfig(source=source))
    path = target_path(target)
    if not path.is_file():
        raise TargetError(f"target database {path} does not exist")
    started = time.monotonic()
    report = await verify(mlruns, path, workers, progress or Progress())
    return mlruns, path, report, {"verify": time.monotonic() - started}


async def load(
    mlruns: Path, writer: StagingWriter | None, config: MigrationConfig, progress: Progress
) -> LoadStats:
    """Discover, parse and (unless writer is None, for a dry run) write the whole tree."""
    stats = LoadStats()
    limiter = anyio.CapacityLimiter(process_count(config.workers))
    units_send, units_recv = anyio.create_memory_object_stream[WorkUnit](config.queue_size)
    rows_send, rows_recv = anyio.create_memory_object_stream[RowBatch](config.queue_size)
    async with anyio.create_task_group() as tg:
        tg.start_soon(discover, mlruns, config.runs_per_unit, units_send, progress)
        async with units_recv, rows_send:
            for _ in range(config.workers):
                tg.start_soon(produce, units_recv.clone(), rows_send.clone(), limiter)
        tg.start_soon(consume, rows_recv, writer, stats, progress)
    return stats


async def discover(
    mlruns: Path, runs_per_unit: int, send: MemoryObjectSendStream[WorkUnit], progress: Progress
) -> None:
    async with send:
        for path, deleted in await anyio.to_thread.run_sync(experiment_dirs, mlruns):
            units = await anyio.to_thread.run_sync(experiment_units, path, deleted, runs_per_unit)
            progress.add_total(len(units))
            log.debug("experiment discovered", path=path, deleted=deleted, units=len(units),
                      kinds=sorted({u.kind for u in units}))
            for unit in units:
                await send.send(unit)
        models = await anyio.to_thread.run_sync(registered_model_dirs, mlruns)
        progress.add_total(len(models))
        for path in models:
            await send.send(RegisteredModelUnit(path))


async def produce(
    units: MemoryObjectReceiveStream[WorkUnit],
    rows: MemoryObjectSendStream[RowBatch],
    limiter: anyio.CapacityLimiter,
) -> None:
    async with units, rows:
        async for unit in units:
            batch = await anyio.to_process.run_sync(extract, unit, cancellable=True, limiter=limiter)
            await rows.send(batch)


async def consume(
    rows: MemoryObjectReceiveStream[RowBatch], writer: StagingWriter | None, stats: LoadStats,
    progress: Progress,
) -> None:
    seen_runs: dict[str, int] = {}
    seen_experiments: set[int] = set()
    async with rows:
        async for batch in rows:
            stats.units += 1
            stats.files += batch.files
            stats.problems.extend(batch.problems)
            clashes = _clashes(batch, seen_runs, seen_experiments)
            if clashes:
                # The run will fail as invalid input; writing would only trip the primary key.
                stats.problems.extend(clashes)
                progress.advance(1, 0, batch.files)
                continue
            stats.rows.add_batch(batch)
            if writer is not None:
                await anyio.to_thread.run_sync(writer.write, batch)
            progress.advance(1, batch.count(), batch.files)


def _clashes(batch: RowBatch, seen_runs: dict[str, int], seen_experiments: set[int]) -> list[Problem]:
    """Ids that the tree holds twice: the FileStore's folders cannot stop that, a primary key does."""
    problems = []
    for row in batch.rows.get("experiments", ()):
        if row[0] in seen_experiments:
            problems.append(Problem(f"experiment {row[0]}", "the experiment id appears twice (in mlruns/ and in .trash/)"))
        seen_experiments.add(row[0])
    for row in batch.rows.get("runs", ()):
        run_id, exp_id = row[0], row[-1]
        if run_id in seen_runs:
            problems.append(
                Problem(f"run {run_id}", f"the run id appears in two experiments: {seen_runs[run_id]} and {exp_id}")
            )
        seen_runs.setdefault(run_id, exp_id)
    return problems


async def verify(mlruns: Path, staging: Path, workers: int, progress: Progress) -> VerificationReport:
    limiter = anyio.CapacityLimiter(process_count(workers))
    root, db = str(mlruns), str(staging)
    progress.phase("verify", total=2)
    report = VerificationReport()

    async def one(func, *args) -> None:
        report.merge(await anyio.to_process.run_sync(func, *args, cancellable=True, limiter=limiter))
        progress.advance()

    async with anyio.create_task_group() as tg:
        # The registry goes first, beside the experiments: both workers import MLflow at once.
        tg.start_soon(one, verify_registry, root, db)
        experiments, plan = await anyio.to_process.run_sync(
            verify_experiments, root, db, cancellable=True, limiter=limiter
        )
        report.merge(experiments)
        progress.advance()
        for exp_id, ids in plan.items():
            for func, key in ((verify_runs, "runs"), (verify_traces, "traces"), (verify_logged_models, "models")):
                for start in range(0, len(ids[key]), VERIFY_CHUNK):
                    progress.add_total(1)
                    tg.start_soon(one, func, root, db, exp_id, ids[key][start : start + VERIFY_CHUNK])
    return report
