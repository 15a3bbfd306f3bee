"""MigrationConfig: everything a run needs, decided before it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOURCE = "./mlruns"
DEFAULT_TARGET = "sqlite:///mlflow.db"
DEFAULT_WORKERS = 8
DEFAULT_BATCH_SIZE = 50_000
DEFAULT_QUEUE_SIZE = 8
# Runs per work unit: enough that per-unit overhead (a round trip to a worker process) is small
# beside the work, few enough that one unit's rows stay a few MB.
RUNS_PER_UNIT = 16
# --on-name-clash: what a name several sources hold becomes (etl.source.merge); the first is the default.
RULES = ("rename", "merge", "fail")


@dataclass(frozen=True)
class MigrationConfig:
    # One or more FileStore trees, in the order given: where they clash, the first wins.
    sources: tuple[Path, ...] = (Path(DEFAULT_SOURCE),)
    target: str = DEFAULT_TARGET
    workers: int = DEFAULT_WORKERS
    batch_size: int = DEFAULT_BATCH_SIZE
    queue_size: int = DEFAULT_QUEUE_SIZE
    verify: bool = True
    keep_failed: bool = False
    skip_invalid: bool = False
    report_path: Path | None = None
    runs_per_unit: int = RUNS_PER_UNIT
    # An experiment, registered model or prompt name in several sources (etl.source.merge).
    on_name_clash: str = RULES[0]
