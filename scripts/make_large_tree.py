#!/usr/bin/env python3
"""Write a synthetic MLflow FileStore tree (``mlruns/``) directly, fast.

Standard library only: no MLflow, no PyYAML.  Every file is laid out and
formatted exactly as MLflow 3.x's ``FileStore`` (tracking and model registry)
writes it, including PyYAML's key sorting, quoting and 80-column folding of
``meta.yaml`` files, so MLflow's own readers and ``mlflow migrate-filestore``
accept the tree.  Output is fully deterministic for a given ``--seed`` and
``--artifact-root`` (ids come from ``random.Random``, timestamps from a fixed
base), which makes the trees usable as benchmark and test fixtures.

What is written (``DIR`` is the mlruns folder itself)::

    DIR/0/meta.yaml                                   Default experiment
    DIR/<exp>/meta.yaml, tags/<key>                   18-digit experiment ids
    DIR/.trash/<exp>/...                              deleted experiments
    DIR/<exp>/<run>/meta.yaml                         int status/source_type
    DIR/<exp>/<run>/params/<key>, tags/<key>          no trailing newline
    DIR/<exp>/<run>/metrics/<key>                     "timestamp value step" lines
    DIR/<exp>/<run>/artifacts/                        empty
    DIR/<exp>/<run>/inputs/<md5>/meta.yaml            dataset inputs
    DIR/<exp>/<run>/outputs/<model_id>/meta.yaml      logged-model outputs
    DIR/<exp>/datasets/<md5>/meta.yaml
    DIR/<exp>/traces/<trace_id>/trace_info.yaml, tags/, request_metadata/,
        artifacts/traces.json                         3.x layout, or 2.x (--v2-trace-fraction)
    DIR/<exp>/traces/<trace_id>/assessments/<id>.yaml feedback and expectations (3.x layout)
    DIR/<exp>/models/<model_id>/meta.yaml, params/, tags/, metrics/   metric histories
    DIR/models/<name>/meta.yaml, tags/, aliases/, version-<n>/meta.yaml, version-<n>/tags/

Importable: ``parse_args`` / ``build_config`` give a :class:`Config`,
:class:`TreePlan` holds the planned entities and ``TreePlan.run(i)`` returns the
intended content of run ``i`` (pure, cheap), so tests can compare what MLflow
reads back with what the generator meant to write.  ``generate(config)`` writes
the tree and returns the summary dict that the CLI prints as JSON.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# --------------------------------------------------------------------------------------
# Constants mirroring MLflow enums / conventions
# --------------------------------------------------------------------------------------

BASE_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z; every timestamp derives from it
RUN_STATUS = {"RUNNING": 1, "SCHEDULED": 2, "FINISHED": 3, "FAILED": 4, "KILLED": 5}
SOURCE_TYPE_LOCAL = 4  # SourceType.LOCAL, what FileStore writes for every run
LOGGED_MODEL_READY = 2  # LoggedModelStatus.READY
USER = "etl-bench"
SOURCE_NAME = "train.py"
SYSTEM_RUN_TAGS = ("mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type")

_ADJECTIVES = (
    "able", "bold", "calm", "dapper", "eager", "fair", "gentle", "honest", "idle", "jolly",
    "keen", "lively", "merry", "nimble", "orderly", "polite", "quick", "rare", "sleek", "tidy",
)  # fmt: skip
_NOUNS = (
    "ant", "bat", "cod", "deer", "eel", "fox", "gnu", "hare", "ibis", "jay",
    "kiwi", "lynx", "mole", "newt", "owl", "puma", "quail", "rook", "seal", "toad",
)  # fmt: skip

SHAPES = {
    "metric-heavy": dict(
        experiments=4, runs=2000, params=10, tags=5, metric_keys=10, min_steps=50, max_steps=100
    ),
    "wide": dict(
        experiments=10, runs=10000, params=10, tags=10, metric_keys=5, min_steps=1, max_steps=1
    ),
    # Comparable to MLflow's own fs2db test generator at size "full": 1,206 runs, 600 traces,
    # 12,000 assessments, 200 logged models (here each with a 50-step metric history).
    "trace-heavy": dict(
        experiments=20, runs=1200, params=3, tags=6, metric_keys=5, min_steps=1, max_steps=5,
        datasets=3, inputs=3, traces=30, assessments=20, v2_trace_fraction=0.5,
        logged_models=10, model_metric_steps=50, registered_models=20, versions_per_model=2,
    ),  # fmt: skip
    "tiny": dict(
        experiments=1, runs=3, params=3, tags=5, metric_keys=2, min_steps=3, max_steps=5,
        datasets=1, inputs=1, traces=1, logged_models=1, registered_models=1, versions_per_model=2,
    ),  # fmt: skip
}

DEFAULTS = dict(
    experiments=1,
    runs=3,
    params=3,
    tags=5,
    metric_keys=2,
    min_steps=1,
    max_steps=1,
    datasets=0,
    inputs=0,
    traces=0,
    assessments=0,
    v2_trace_fraction=0.0,
    logged_models=0,
    model_metric_steps=1,
    registered_models=0,
    versions_per_model=1,
    deleted_experiment_fraction=0.0,
    deleted_run_fraction=0.0,
    nan_fraction=0.0,
    inf_fraction=0.0,
)


@dataclass(frozen=True)
class Config:
    output: Path
    experiments: int
    runs: int
    params: int
    tags: int
    metric_keys: int
    min_steps: int
    max_steps: int
    datasets: int
    inputs: int
    traces: int
    assessments: int
    v2_trace_fraction: float
    logged_models: int
    model_metric_steps: int
    registered_models: int
    versions_per_model: int
    deleted_experiment_fraction: float
    deleted_run_fraction: float
    nan_fraction: float
    inf_fraction: float
    seed: int = 0
    artifact_root: str | None = None  # defaults to the file URI of `output`
    overwrite: bool = False
    workers: int = 1  # processes writing runs; never changes the output

    @property
    def root_uri(self) -> str:
        if self.artifact_root:
            return self.artifact_root.rstrip("/")
        # Same as mlflow.utils.file_utils.path_to_local_file_uri
        return Path(os.path.abspath(self.output)).as_uri()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, type=Path, help="the mlruns folder to create")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="preset (default tiny)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the runs, traces and logged models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifact-root", default=None, help="artifact URI base (default: DIR)")
    p.add_argument("--overwrite", action="store_true", help="delete DIR first if it exists")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes writing runs (default: CPUs, at most 4); output is the same for any value",
    )
    ints = {
        "--experiments": "experiments besides Default '0'",
        "--runs": "total runs, spread round-robin over the experiments",
        "--params": "params per run",
        "--tags": "tag files per run, the fluent API's system tags included",
        "--metric-keys": "metric keys per run",
        "--min-steps": "min steps per metric key",
        "--max-steps": "max steps per metric key",
        "--datasets": "datasets per experiment",
        "--inputs": "dataset inputs per run",
        "--traces": "traces per experiment",
        "--assessments": "assessments per trace (feedback and expectations, some overriding)",
        "--logged-models": "logged models per experiment",
        "--model-metric-steps": "steps in each logged model's metric history",
        "--registered-models": "registered models",
        "--versions-per-model": "versions per registered model",
    }
    for flag, help_ in ints.items():
        p.add_argument(flag, type=int, default=None, help=help_)
    floats = {
        "--deleted-experiment-fraction": "fraction of experiments moved to .trash",
        "--deleted-run-fraction": "fraction of runs deleted",
        "--nan-fraction": "fraction of metric values that are NaN",
        "--inf-fraction": "fraction of metric values that are +/-Inf",
        "--v2-trace-fraction": "fraction of traces in MLflow 2.x's layout (request_id, ...)",
    }
    for flag, help_ in floats.items():
        p.add_argument(flag, type=float, default=None, help=help_)
    return p.parse_args(argv)


def build_config(ns: argparse.Namespace) -> Config:
    values = dict(DEFAULTS)
    values.update(SHAPES[ns.shape])
    for name in DEFAULTS:
        if getattr(ns, name) is not None:
            values[name] = getattr(ns, name)
    # What grows with a tree: its runs, traces and logged models (per experiment).
    for name in ("runs", "traces", "logged_models"):
        values[name] = int(values[name] * ns.scale + 0.5)
    cfg = Config(
        output=ns.output,
        seed=ns.seed,
        artifact_root=ns.artifact_root,
        overwrite=ns.overwrite,
        workers=max(1, ns.workers),
        **values,
    )
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    for name in DEFAULTS:
        if getattr(cfg, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 0")
    if cfg.runs and not cfg.experiments:
        raise SystemExit("--runs needs at least one experiment")
    if cfg.min_steps < 1 or cfg.max_steps < cfg.min_steps:
        raise SystemExit("need 1 <= --min-steps <= --max-steps")
    if cfg.versions_per_model < 1 and cfg.registered_models:
        raise SystemExit("--versions-per-model must be >= 1")
    if cfg.model_metric_steps < 1:
        raise SystemExit("--model-metric-steps must be >= 1")
    for name in ("deleted_experiment_fraction", "deleted_run_fraction", "v2_trace_fraction"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be in [0, 1]")
    if cfg.nan_fraction < 0 or cfg.inf_fraction < 0 or cfg.nan_fraction + cfg.inf_fraction > 1:
        raise SystemExit("--nan-fraction and --inf-fraction must be >= 0 and sum to <= 1")


# --------------------------------------------------------------------------------------
# YAML emission, byte-compatible with yaml.dump(..., default_flow_style=False,
# allow_unicode=True, sort_keys=True, Dumper=CSafeDumper) for the values used here:
# dicts with str keys, str / int / float / bool / None scalars, empty lists.
# --------------------------------------------------------------------------------------

_BEST_WIDTH = 80
# PyYAML's implicit resolvers (yaml/resolver.py): a string matching one is quoted.
_IMPLICIT = re.compile(
    r"""^(?:
        (?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)
      | (?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
          |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
          |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
          |[-+]?\.(?:inf|Inf|INF)
          |\.(?:nan|NaN|NAN))
      | (?:[-+]?0b[0-1_]+
          |[-+]?0[0-7_]+
          |[-+]?(?:0|[1-9][0-9_]*)
          |[-+]?0x[0-9a-fA-F_]+
          |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)
      | <<
      | (?:~|null|Null|NULL)
      | (?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
          |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
           (?:[Tt]|[\ \t]+)[0-9][0-9]?
           :[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
           (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)
      | =
      | [!&*]
    )$""",
    re.X,
)
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def _plain_allowed(text: str) -> bool:
    """PyYAML Emitter.analyze_scalar + choose_scalar_style, block context, one line."""
    if not text or _IMPLICIT.match(text):
        return False
    if not _PRINTABLE.match(text):
        raise ValueError(f"generator only emits printable ASCII YAML scalars: {text!r}")
    if text[0] == " " or text[-1] == " " or text.startswith(("---", "...")):
        return False
    n = len(text)
    for i, ch in enumerate(text):
        followed_by_space = i + 1 >= n or text[i + 1] == " "
        if i == 0:
            if ch in "#,[]{}&*!|>'\"%@`":
                return False
            if ch in "?:-" and followed_by_space:
                return False
        else:
            if ch == ":" and followed_by_space:
                return False
            if ch == "#" and text[i - 1] == " ":
                return False
    return True


def _emit_plain(text: str, column: int, indent: int, out: list[str]) -> None:
    # Port of yaml.emitter.Emitter.write_plain (split=True), single-line text.
    spaces = False
    start = end = 0
    n = len(text)
    while end <= n:
        ch = text[end] if end < n else None
        if spaces:
            if ch != " ":
                if start + 1 == end and column > _BEST_WIDTH:
                    out.append("\n" + " " * indent)
                    column = indent
                else:
                    out.append(text[start:end])
                    column += end - start
                start = end
        elif ch is None or ch == " ":
            out.append(text[start:end])
            column += end - start
            start = end
        if ch is not None:
            spaces = ch == " "
        end += 1


def _emit_single_quoted(text: str, column: int, indent: int, out: list[str]) -> None:
    # Port of yaml.emitter.Emitter.write_single_quoted (split=True), single-line text.
    out.append("'")
    column += 1
    spaces = False
    start = end = 0
    n = len(text)
    while end <= n:
        ch = text[end] if end < n else None
        if spaces:
            if ch is None or ch != " ":
                if start + 1 == end and column > _BEST_WIDTH and start != 0 and end != n:
                    out.append("\n" + " " * indent)
                    column = indent
                else:
                    out.append(text[start:end])
                    column += end - start
                start = end
        elif ch is None or ch == " " or ch == "'":
            if start < end:
                out.append(text[start:end])
                column += end - start
                start = end
        if ch == "'":
            out.append("''")
            column += 2
            start = end + 1
        if ch is not None:
            spaces = ch == " "
        end += 1
    out.append("'")


def _emit_mapping(data: dict, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for key in sorted(data):
        value = data[key]
        if not _plain_allowed(key):
            raise ValueError(f"generator only emits plain YAML keys: {key!r}")
        out.append(f"{pad}{key}:")
        column = indent + len(key) + 1
        if isinstance(value, dict):
            if value:
                out.append("\n")
                _emit_mapping(value, indent + 2, out)
                continue
            out.append(" {}")
        elif isinstance(value, list):
            if value:
                raise ValueError("non-empty lists are not needed by the generator")
            out.append(" []")
        elif value is None:
            out.append(" null")
        elif isinstance(value, bool):
            out.append(" true" if value else " false")
        elif isinstance(value, int):
            out.append(f" {value}")
        elif isinstance(value, float):
            out.append(f" {_yaml_float(value)}")
        elif isinstance(value, str):
            out.append(" ")
            if _plain_allowed(value):
                _emit_plain(value, column + 1, indent + 2, out)
            else:
                _emit_single_quoted(value, column + 1, indent + 2, out)
        else:
            raise TypeError(f"unsupported YAML value {value!r}")
        out.append("\n")


def _yaml_float(value: float) -> str:
    # yaml.representer.SafeRepresenter.represent_float, finite values
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("generator only emits finite YAML floats")
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def dump_yaml(data: dict) -> str:
    out: list[str] = []
    _emit_mapping(data, 0, out)
    return "".join(out)


# --------------------------------------------------------------------------------------
# Planning: every id and value is derived from the seed, nothing from the clock
# --------------------------------------------------------------------------------------


@dataclass
class ExperimentSpec:
    index: int  # -1 for Default
    experiment_id: str
    name: str
    creation_time: int
    deleted: bool = False
    deletion_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_count: int = 0
    datasets: list[DatasetSpec] = field(default_factory=list)


@dataclass
class DatasetSpec:
    dataset_id: str
    name: str
    digest: str
    meta: dict


@dataclass
class LoggedModelSpec:
    model_id: str
    name: str
    experiment: ExperimentSpec
    source_run_index: int | None
    source_run_id: str | None
    creation_timestamp: int
    model_type: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metric_key: str
    # (timestamp, value, step): one log_metric(..., model_id=...) call per step
    metric_points: list[tuple[int, float, int]]


@dataclass
class AssessmentSpec:
    assessment_id: str
    name: str
    kind: str  # "feedback" or "expectation"
    value: object  # a JSON value; dict/list expectations are written as serialized_value
    create_ms: int
    source_type: str
    source_id: str
    rationale: str | None = None
    metadata: dict[str, str] | None = None
    span_id: str | None = None
    error: dict[str, str] | None = None  # a feedback whose judge failed: value is null
    overrides: str | None = None
    valid: bool = True


@dataclass
class TraceSpec:
    trace_id: str
    experiment: ExperimentSpec
    request_time_ms: int
    duration_ms: int
    state: str
    request_preview: str
    response_preview: str
    tags: dict[str, str]
    request_metadata: dict[str, str]
    span_id: bytes  # 8 bytes, for the root span in artifacts/traces.json
    v2: bool = False  # MLflow 2.x layout: request_id, timestamp_ms, status; no previews
    assessments: list[AssessmentSpec] = field(default_factory=list)


@dataclass
class ModelVersionSpec:
    version: int
    creation_timestamp: int
    source: str
    storage_location: str
    run_id: str | None
    model_id: str | None
    description: str | None
    tags: dict[str, str]


@dataclass
class RegisteredModelSpec:
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None
    tags: dict[str, str]
    aliases: dict[str, str]
    versions: list[ModelVersionSpec]


@dataclass
class RunSpec:
    index: int
    run_id: str
    experiment: ExperimentSpec
    run_name: str
    status: int
    start_time: int
    end_time: int | None
    deleted: bool
    deleted_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    # key -> (first timestamp, values); point s is (t0 + 100*s, values[s], step s)
    metrics: dict[str, tuple[int, list[float]]]
    # extra points (key, timestamp, value, step) logged with a model_id (see `outputs`)
    model_metrics: list[tuple[str, int, float, int]]
    # (dataset, context) for each dataset input
    inputs: list[tuple[DatasetSpec, str]]
    outputs: list[LoggedModelSpec]  # logged models this run produced

    @property
    def lifecycle_stage(self) -> str:
        return "deleted" if self.deleted else "active"

    def metric_points(self) -> dict[str, list[tuple[int, float, int]]]:
        """key -> [(timestamp, value, step), ...] in file order."""
        points = {
            key: [(t0 + 100 * s, v, s) for s, v in enumerate(values)]
            for key, (t0, values) in self.metrics.items()
        }
        for key, ts, value, step in self.model_metrics:
            points.setdefault(key, []).append((ts, value, step))
        return points


def _hex32(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


def _experiment_id(rng: random.Random) -> str:
    # Same shape as mlflow.utils.name_utils._generate_unique_integer_id: 18 digits, no
    # leading zero.
    return str(rng.randrange(10**17, 10**18))


def _iso_ms(ms: int) -> str:
    # protobuf Timestamp JSON: 0 or 3 fractional digits for millisecond precision
    dt = datetime.fromtimestamp(ms // 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = ms % 1000
    return f"{dt}.{frac:03d}Z" if frac else f"{dt}Z"


def _md5(a: str, b: str) -> str:
    h = hashlib.md5(a.encode("utf-8"), usedforsecurity=False)
    h.update(b.encode("utf-8"))
    return h.hexdigest()


def _keys(prefix: str, count: int) -> list[str]:
    """`count` keys; the last one (if count >= 2) nested in a sub-folder like `a/b`."""
    width = max(2, len(str(count - 1)))
    keys = [f"{prefix}_{i:0{width}d}" for i in range(count)]
    if count >= 2:
        keys[-1] = f"nested/{keys[-1]}"
    return keys


class TreePlan:
    """Everything the tree will contain; runs are derived on demand by index."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root_uri = cfg.root_uri
        rng = random.Random(f"make_large_tree/{cfg.seed}/plan")
        self.param_keys = _keys("param", cfg.params)
        self.metric_keys = _keys("metric", cfg.metric_keys)
        n_system = min(cfg.tags, len(SYSTEM_RUN_TAGS))
        self.system_tag_keys = SYSTEM_RUN_TAGS[:n_system]
        self.user_tag_keys = _keys("tag", cfg.tags - n_system)
        self.run_end_base = BASE_MS + 3_600_000 + cfg.runs * 60_000 + cfg.max_steps * 100

        self.default_experiment = ExperimentSpec(-1, "0", "Default", BASE_MS)
        ids: set[str] = {"0"}
        self.experiments: list[ExperimentSpec] = []
        for e in range(cfg.experiments):
            exp_id = _experiment_id(rng)
            while exp_id in ids:
                exp_id = _experiment_id(rng)
            ids.add(exp_id)
            exp = ExperimentSpec(
                e, exp_id, f"synthetic-exp-{e:04d}", BASE_MS + 1000 * (e + 1),
                tags={"generator": "make_large_tree", "mlflow.note.content": f"experiment {e}"},
                run_count=(cfg.runs - e + cfg.experiments - 1) // cfg.experiments,
            )  # fmt: skip
            self.experiments.append(exp)
        n_del = int(cfg.deleted_experiment_fraction * cfg.experiments + 0.5)
        for e in sorted(rng.sample(range(cfg.experiments), n_del)):
            exp = self.experiments[e]
            exp.deleted = True
            exp.deletion_time = self.run_end_base + 86_400_000 + e

        # Runs of deleted experiments are deleted anyway (delete_experiment marks them);
        # --deleted-run-fraction picks runs deleted one by one among the others.
        live = [i for i in range(cfg.runs) if not self.experiments[i % cfg.experiments].deleted]
        n_del_runs = int(cfg.deleted_run_fraction * len(live) + 0.5)
        self.deleted_run_indices = frozenset(rng.sample(live, n_del_runs))

        for exp in self.experiments:
            for d in range(cfg.datasets):
                name = f"dataset-{d:03d}"
                digest = f"{rng.getrandbits(32):08x}"
                n_cols = 3 + d % 4
                cols = ", ".join(
                    f'{{"type": "double", "name": "feature_{c}", "required": true}}'
                    for c in range(n_cols)
                )
                meta = {
                    "digest": digest,
                    "name": name,
                    "profile": json.dumps({"num_rows": 1000 + d, "num_elements": 1000 * n_cols}),
                    "schema": f'{{"mlflow_colspec": [{cols}]}}',
                    "source": json.dumps({"uri": f"s3://synthetic-bucket/data/{name}.parquet"}),
                    "source_type": "s3",
                }
                exp.datasets.append(DatasetSpec(_md5(name, digest), name, digest, meta))

        # Logged models: model j of experiment e comes from the (j mod n_e)-th run of e.
        self.logged_models: list[LoggedModelSpec] = []
        self.outputs_by_run: dict[int, list[LoggedModelSpec]] = {}
        for exp in self.experiments:
            for j in range(cfg.logged_models):
                model_id = f"m-{_hex32(rng)}"
                run_index = None
                if exp.run_count:
                    run_index = exp.index + cfg.experiments * (j % exp.run_count)
                run_id = self.run_id(run_index) if run_index is not None else None
                created = (
                    self.run_start(run_index) + 500 + j if run_index is not None
                    else exp.creation_time + 500 + j
                )  # fmt: skip
                spec = LoggedModelSpec(
                    model_id=model_id,
                    name=f"model-{exp.index}-{j}",
                    experiment=exp,
                    source_run_index=run_index,
                    source_run_id=run_id,
                    creation_timestamp=created,
                    model_type="agent" if j % 2 else None,
                    params={"alpha": f"{rng.random():.4f}", "max_depth": str(rng.randrange(2, 12))},
                    tags={
                        "mlflow.user": USER,
                        "mlflow.source.name": SOURCE_NAME,
                        "mlflow.source.type": "LOCAL",
                        "flavor": "sklearn",
                    },
                    metric_key="eval_accuracy",
                    metric_points=[
                        (created + 50 + 10 * s, rng.random(), s)
                        for s in range(cfg.model_metric_steps)
                    ],
                )
                self.logged_models.append(spec)
                if run_index is not None:
                    self.outputs_by_run.setdefault(run_index, []).append(spec)

        self.traces: list[TraceSpec] = []
        n_v2 = int(cfg.v2_trace_fraction * cfg.traces + 0.5)
        for exp in self.experiments:
            for t in range(cfg.traces):
                v2 = t < n_v2
                # 2.x ids are bare hex request ids; 3.x ones carry the "tr-" prefix.
                trace_id = _hex32(rng) if v2 else f"tr-{_hex32(rng)}"
                request_ms = exp.creation_time + 7_200_000 + 1000 * t + 1 + rng.randrange(999)
                artifact = f"{self._exp_artifact_location(exp)}/traces/{trace_id}/artifacts"
                inputs, outputs = json.dumps({"question": f"q{t}"}), json.dumps(f"answer {t}")
                tags = {"mlflow.artifactLocation": artifact, "mlflow.traceName": "predict"}
                if v2:  # 2.x kept the source as tags and wrote no previews
                    tags.update({"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "LOCAL"})
                    metadata = {"mlflow.trace_schema.version": "2"}
                else:
                    metadata = {
                        "mlflow.source.name": SOURCE_NAME,
                        "mlflow.source.type": "LOCAL",
                        "mlflow.trace_schema.version": "3",
                        "mlflow.user": USER,
                    }
                metadata.update({"mlflow.traceInputs": inputs, "mlflow.traceOutputs": outputs})
                trace = TraceSpec(
                    trace_id=trace_id,
                    experiment=exp,
                    request_time_ms=request_ms,
                    duration_ms=rng.randrange(1, 5000),
                    state="ERROR" if t % 5 == 4 else "OK",
                    request_preview=None if v2 else inputs,
                    response_preview=None if v2 else outputs,
                    tags=tags,
                    request_metadata=metadata,
                    span_id=rng.getrandbits(64).to_bytes(8, "big"),
                    v2=v2,
                )
                trace.assessments = self._assessments(trace)
                self.traces.append(trace)

        self.registered_models: list[RegisteredModelSpec] = []
        rm_base = self.run_end_base + 2 * 86_400_000
        for i in range(cfg.registered_models):
            created = rm_base + 10_000 * i
            versions = []
            for v in range(1, cfg.versions_per_model + 1):
                lm = None
                if self.logged_models:
                    lm = self.logged_models[(i + v - 1) % len(self.logged_models)]
                if lm is not None:
                    source, storage = f"models:/{lm.model_id}", self._model_artifact_location(lm)
                    run_id, model_id = lm.source_run_id, lm.model_id
                elif cfg.runs:
                    run_id = self.run_id((i + v - 1) % cfg.runs)
                    source = storage = f"runs:/{run_id}/model"
                    model_id = None
                else:
                    run_id = model_id = None
                    source = storage = f"s3://synthetic-bucket/models/{i}/{v}"
                versions.append(
                    ModelVersionSpec(
                        version=v,
                        creation_timestamp=created + 100 * v,
                        source=source,
                        storage_location=storage,
                        run_id=run_id,
                        model_id=model_id,
                        description=f"version {v} of registered model {i}" if v % 2 else None,
                        tags={"validation_status": "approved" if v % 2 else "pending"},
                    )
                )
            aliases = {"champion": str(cfg.versions_per_model)}
            if cfg.versions_per_model > 1:
                aliases["challenger"] = "1"
            self.registered_models.append(
                RegisteredModelSpec(
                    name=f"registered-model-{i:03d}",
                    creation_timestamp=created,
                    last_updated_timestamp=created + 100 * cfg.versions_per_model + 50,
                    description=f"Synthetic registered model {i}" if i % 2 == 0 else None,
                    tags={"task": "classification", "team": f"team-{i % 3}"},
                    aliases=aliases,
                    versions=versions,
                )
            )

    def _assessments(self, tr: TraceSpec) -> list[AssessmentSpec]:
        """cfg.assessments per trace, cycling through the kinds MLflow 3.x writes; every tenth
        overrides the first of its cycle, which MLflow then marks valid: false."""
        rng = random.Random(f"make_large_tree/{self.cfg.seed}/assessments/{tr.trace_id}")
        span = tr.span_id.hex()
        out: list[AssessmentSpec] = []
        for k in range(self.cfg.assessments):
            created = tr.request_time_ms + tr.duration_ms + 1000 * (k + 1)
            a = AssessmentSpec(f"a-{_hex32(rng)}", "", "feedback", None, created, "HUMAN", "labeler")
            kind = k % 10
            if kind == 0:
                a.name, a.value, a.rationale = "correctness", k % 20 == 0, "looks right"
            elif kind == 1:
                a.name, a.value = "relevance", round(rng.random(), 3)
                a.source_type, a.source_id = "LLM_JUDGE", "judge-model"
                a.metadata, a.span_id = {"judge": "v1", "prompt_version": "3"}, span
            elif kind == 2:
                a.name, a.value = "category", rng.choice(("good", "needs_improvement"))
            elif kind == 3:
                a.name, a.kind, a.value = "expected_answer", "expectation", f"answer {k}"
            elif kind == 4:
                a.name, a.kind, a.value = "expected_score", "expectation", float(k)
            elif kind == 5:
                a.name, a.kind = "expected_facts", "expectation"
                a.value = {"fact": f"f{k}", "weight": k, "required": True}
            elif kind == 6:
                a.name, a.kind, a.value = "expected_docs", "expectation", [f"doc-{k}", k, False]
            elif kind == 7:
                a.name, a.value, a.span_id = "scores", {"fluency": 0.5, "ok": True}, span
                a.source_type, a.source_id = "LLM_JUDGE", "judge-model"
            elif kind == 8:
                a.name, a.source_type, a.source_id = "safety", "LLM_JUDGE", "judge-model"
                a.error = {"error_code": "RATE_LIMIT_EXCEEDED", "error_message": "judge was rate limited"}
            else:
                original = out[k - 9]
                a.name, a.value, a.rationale = original.name, not original.value, "overridden"
                a.overrides, original.valid = original.assessment_id, False
            out.append(a)
        return out

    # -- derived values ---------------------------------------------------------------

    def _exp_artifact_location(self, exp: ExperimentSpec) -> str:
        # Deleted experiments keep the URI outside .trash, as MLflow does.
        return f"{self.root_uri}/{exp.experiment_id}"

    def _model_artifact_location(self, lm: LoggedModelSpec) -> str:
        return f"{self._exp_artifact_location(lm.experiment)}/models/{lm.model_id}/artifacts"

    def _run_rng(self, i: int) -> random.Random:
        return random.Random(f"make_large_tree/{self.cfg.seed}/run/{i}")

    def run_id(self, i: int) -> str:
        return _hex32(self._run_rng(i))

    @staticmethod
    def run_start(i: int) -> int:
        return BASE_MS + 3_600_000 + 60_000 * i

    def run(self, i: int) -> RunSpec:
        """The intended content of run `i` (0 <= i < cfg.runs). Pure and cheap."""
        cfg = self.cfg
        rng = self._run_rng(i)
        run_id = _hex32(rng)  # first draw: must match run_id(i)
        exp = self.experiments[i % cfg.experiments]
        run_name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000)}"
        start = self.run_start(i)
        roll = rng.random()
        status = (
            RUN_STATUS["FINISHED"] if roll < 0.90 else RUN_STATUS["FAILED"] if roll < 0.95
            else RUN_STATUS["KILLED"] if roll < 0.98 else RUN_STATUS["RUNNING"]
        )  # fmt: skip
        end = None if status == RUN_STATUS["RUNNING"] else start + 100 * cfg.max_steps + 1000

        params = {}
        for k, key in enumerate(self.param_keys):
            kind = k % 4
            if kind == 0:
                value = str(rng.randrange(1, 1000))
            elif kind == 1:
                value = repr(round(rng.random(), 6))
            elif kind == 2:
                value = rng.choice(("adam", "sgd", "rmsprop"))
                if i % 10 == 0:
                    value += "\nmulti-line param value"  # values may span lines
            else:
                value = rng.choice(("True", "False"))
            params[key] = value

        tags = {}
        system_values = {
            "mlflow.runName": run_name,
            "mlflow.user": USER,
            "mlflow.source.name": SOURCE_NAME,
            "mlflow.source.type": "LOCAL",
        }
        for key in self.system_tag_keys:
            tags[key] = system_values[key]
        for j, key in enumerate(self.user_tag_keys):
            tags[key] = f"value-{i}-{j}-{rng.randrange(100000)}"

        metrics: dict[str, tuple[int, list[float]]] = {}
        nan_f, inf_f = cfg.nan_fraction, cfg.inf_fraction
        special = nan_f + inf_f
        rnd = rng.random
        for k, key in enumerate(self.metric_keys):
            n = rng.randint(cfg.min_steps, cfg.max_steps)
            values = [rnd() for _ in range(n)]
            if special:
                for s in range(n):
                    r = rnd()
                    if r < nan_f:
                        values[s] = float("nan")
                    elif r < special:
                        values[s] = float("inf") if r < nan_f + inf_f / 2 else float("-inf")
            metrics[key] = (start + k, values)

        outputs = self.outputs_by_run.get(i, [])
        # log_metric(..., model_id=...) writes the point to the run's metrics too
        model_metrics = [(lm.metric_key, *point) for lm in outputs for point in lm.metric_points]

        inputs = []
        if exp.datasets and cfg.inputs:
            q = i // cfg.experiments
            for t in range(min(cfg.inputs, len(exp.datasets))):
                ds = exp.datasets[(q + t) % len(exp.datasets)]
                inputs.append((ds, "training" if t == 0 else "evaluation"))

        deleted = i in self.deleted_run_indices
        deleted_time = None
        if deleted:
            deleted_time = (end or start + 100 * cfg.max_steps) + 5_000
        elif exp.deleted:  # delete_experiment marks its active runs deleted
            deleted, deleted_time = True, exp.deletion_time

        return RunSpec(
            index=i,
            run_id=run_id,
            experiment=exp,
            run_name=run_name,
            status=status,
            start_time=start,
            end_time=end,
            deleted=deleted,
            deleted_time=deleted_time,
            params=params,
            tags=tags,
            metrics=metrics,
            model_metrics=model_metrics,
            inputs=inputs,
            outputs=outputs,
        )

    def runs(self):
        for i in range(self.cfg.runs):
            yield self.run(i)

    # -- meta.yaml dicts, shaped exactly like the FileStore's --------------------------

    def experiment_meta(self, exp: ExperimentSpec) -> dict:
        meta = {
            "artifact_location": self._exp_artifact_location(exp),
            "creation_time": exp.creation_time,
            "effective_trace_archival_retention": None,
            "experiment_id": exp.experiment_id,
            "last_update_time": exp.deletion_time if exp.deleted else exp.creation_time,
            "lifecycle_stage": "deleted" if exp.deleted else "active",
            "name": exp.name,
            "trace_location": None,
            "workspace": "default",
        }
        if exp.deleted:  # delete_experiment dumps dict(experiment), tags included
            meta["tags"] = dict(exp.tags)
        return meta

    def run_meta(self, run: RunSpec) -> dict:
        meta = {
            "artifact_uri": f"{self._exp_artifact_location(run.experiment)}/{run.run_id}/artifacts",
            "end_time": run.end_time,
            "entry_point_name": "",
            "experiment_id": run.experiment.experiment_id,
            "lifecycle_stage": run.lifecycle_stage,
            "run_id": run.run_id,
            "run_name": run.run_name,
            "source_name": "",
            "source_type": SOURCE_TYPE_LOCAL,
            "source_version": "",
            "start_time": run.start_time,
            "status": run.status,
            "tags": [],
            "user_id": USER,
        }
        if run.deleted:
            meta["deleted_time"] = run.deleted_time
        return meta

    @staticmethod
    def input_meta(ds: DatasetSpec, context: str) -> dict:
        # FileStore._FileStoreInput.write_yaml: destination_id repeats the source id.
        return {
            "destination_id": ds.dataset_id,
            "destination_type": "RUN",
            "source_id": ds.dataset_id,
            "source_type": "DATASET",
            "tags": {"mlflow.data.context": context},
        }

    @staticmethod
    def output_meta(lm: LoggedModelSpec) -> dict:
        # FileStore._FileStoreOutput.write_yaml: destination_id repeats the source id.
        return {
            "destination_id": lm.model_id,
            "destination_type": "MODEL_OUTPUT",
            "source_id": lm.model_id,
            "source_type": "RUN_OUTPUT",
            "step": 0,
            "tags": {},
        }

    def logged_model_meta(self, lm: LoggedModelSpec) -> dict:
        # As left by create_logged_model + finalize_logged_model(READY): finalize rewrites
        # the file without lifecycle_stage.
        return {
            "artifact_location": self._model_artifact_location(lm),
            "creation_timestamp": lm.creation_timestamp,
            "experiment_id": lm.experiment.experiment_id,
            "last_updated_timestamp": lm.creation_timestamp + 100,
            "model_id": lm.model_id,
            "model_type": lm.model_type,
            "name": lm.name,
            "source_run_id": lm.source_run_id,
            "status": LOGGED_MODEL_READY,
            "status_message": None,
        }

    @staticmethod
    def trace_info(tr: TraceSpec) -> dict:
        if tr.v2:  # TraceInfoV2.to_dict() minus request_metadata and tags, as 2.x's FileStore
            return {
                "assessments": [],
                "execution_time_ms": tr.duration_ms,
                "experiment_id": tr.experiment.experiment_id,
                "request_id": tr.trace_id,
                "status": tr.state,
                "timestamp_ms": tr.request_time_ms,
            }
        return {
            "execution_duration_ms": tr.duration_ms,
            "request_preview": tr.request_preview,
            "request_time": _iso_ms(tr.request_time_ms),
            "response_preview": tr.response_preview,
            "state": tr.state,
            "trace_id": tr.trace_id,
            "trace_location": {
                "mlflow_experiment": {"experiment_id": tr.experiment.experiment_id},
                "type": "MLFLOW_EXPERIMENT",
            },
        }

    @staticmethod
    def assessment(tr: TraceSpec, a: AssessmentSpec) -> dict:
        """Assessment.to_dictionary() (protobuf MessageToDict): None fields left out, ISO
        timestamps, numbers as floats, dict/list expectations as a JSON serialized_value."""
        if a.kind == "expectation" and isinstance(a.value, (dict, list)):
            body = {"serialized_value": {"serialization_format": "JSON_FORMAT",
                                         "value": json.dumps(a.value)}}  # fmt: skip
        else:
            body = {"value": a.value}
            if a.error is not None:
                body["error"] = dict(a.error)
        when = _iso_ms(a.create_ms)
        d = {
            "assessment_id": a.assessment_id,
            "assessment_name": a.name,
            "create_time": when,
            a.kind: body,
            "last_update_time": when,
            "source": {"source_id": a.source_id, "source_type": a.source_type},
            "trace_id": tr.trace_id,
            "valid": a.valid,
        }
        optional = {"metadata": a.metadata, "overrides": a.overrides, "rationale": a.rationale,
                    "span_id": a.span_id}  # fmt: skip
        d.update({k: v for k, v in optional.items() if v is not None})
        return d

    @staticmethod
    def trace_spans(tr: TraceSpec) -> str:
        """artifacts/traces.json as the tracing exporter writes it: one root span."""
        if tr.v2:  # MLflow 2.x's span layout: hex ids, nanosecond times, status_code
            otel_trace = hashlib.md5(tr.trace_id.encode(), usedforsecurity=False).hexdigest()
            inputs = tr.request_metadata["mlflow.traceInputs"]
            outputs = tr.request_metadata["mlflow.traceOutputs"]
            span = {
                "name": "predict",
                "context": {"span_id": tr.span_id.hex(), "trace_id": otel_trace},
                "parent_id": None,
                "start_time": tr.request_time_ms * 1_000_000,
                "end_time": (tr.request_time_ms + tr.duration_ms) * 1_000_000,
                "status_code": tr.state,
                "status_message": "",
                "attributes": {
                    "mlflow.traceRequestId": json.dumps(tr.trace_id),
                    "mlflow.spanType": json.dumps("CHAIN"),
                    "mlflow.spanInputs": inputs,
                    "mlflow.spanOutputs": outputs,
                },
                "events": [],
            }
            return json.dumps({"spans": [span], "request": inputs, "response": outputs})
        b64 = base64.b64encode
        span = {
            "trace_id": b64(bytes.fromhex(tr.trace_id[3:])).decode(),
            "span_id": b64(tr.span_id).decode(),
            "parent_span_id": None,
            "name": "predict",
            "start_time_unix_nano": tr.request_time_ms * 1_000_000,
            "end_time_unix_nano": (tr.request_time_ms + tr.duration_ms) * 1_000_000,
            "events": [],
            "status": {"code": f"STATUS_CODE_{tr.state}", "message": ""},
            "attributes": {
                "mlflow.traceRequestId": json.dumps(tr.trace_id),
                "mlflow.spanType": json.dumps("CHAIN"),
                "mlflow.spanFunctionName": json.dumps("predict"),
                "mlflow.spanInputs": tr.request_metadata["mlflow.traceInputs"],
                "mlflow.spanOutputs": tr.request_metadata["mlflow.traceOutputs"],
            },
            "links": [],
        }
        return json.dumps({"spans": [span]})

    @staticmethod
    def registered_model_meta(rm: RegisteredModelSpec) -> dict:
        return {
            "aliases": dict(rm.aliases),
            "creation_timestamp": rm.creation_timestamp,
            "deployment_job_id": None,
            "deployment_job_state": None,
            "description": rm.description,
            "last_updated_timestamp": rm.last_updated_timestamp,
            "name": rm.name,
            "workspace": "default",
        }

    @staticmethod
    def model_version_meta(rm: RegisteredModelSpec, mv: ModelVersionSpec) -> dict:
        return {
            "creation_timestamp": mv.creation_timestamp,
            "current_stage": "None",
            "deployment_job_state": None,
            "description": mv.description,
            "last_updated_timestamp": mv.creation_timestamp,
            "model_id": mv.model_id,
            "name": rm.name,
            "run_id": mv.run_id,
            "run_link": None,
            "source": mv.source,
            "status": "READY",
            "status_message": None,
            "storage_location": mv.storage_location,
            "user_id": None,
            "version": mv.version,
            "workspace": "default",
        }


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class _Writer:
    def __init__(self):
        self.files = 0
        self.dirs = 0
        self.bytes = 0

    def mkdir(self, path: str) -> str:
        os.mkdir(path)
        self.dirs += 1
        return path

    def write(self, path: str, text: str) -> None:
        data = text.encode("utf-8")
        fd = os.open(path, _OPEN_FLAGS, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self.files += 1
        self.bytes += len(data)

    def write_files(self, folder: str, files: dict[str, str]) -> None:
        """mkdir `folder`, then one file per key (keys with '/' get sub-folders)."""
        self.mkdir(folder)
        made: set[str] = set()
        for key, text in files.items():
            if "/" in key:
                sub = key.rsplit("/", 1)[0]
                if sub not in made:
                    os.makedirs(f"{folder}/{sub}", exist_ok=True)
                    self.dirs += sub.count("/") + 1
                    made.add(sub)
            self.write(f"{folder}/{key}", text)


_INFS = (float("inf"), float("-inf"))
_RUN_COUNTS = (
    "runs", "deleted_runs", "params", "tags", "metric_files", "metric_rows", "nan_values",
    "inf_values", "inputs", "input_tags", "outputs",
)  # fmt: skip


def _metric_text(t0: int, values: list[float]) -> str:
    # FileStore._log_run_metric: f"{timestamp} {value} {step}\n" (value via str(float)).
    return "".join([f"{t0 + 100 * s} {v} {s}\n" for s, v in enumerate(values)])


def _write_runs(
    cfg: Config, exp_dirs: dict[str, str], worker: int, workers: int, plan: TreePlan | None = None
) -> tuple[dict[str, int], int, int, int]:
    """Write runs worker, worker + workers, ...; returns (counts, files, dirs, bytes)."""
    plan = plan or TreePlan(cfg)
    w = _Writer()
    counts: dict[str, int] = dict.fromkeys(_RUN_COUNTS, 0)
    special_values = cfg.nan_fraction > 0 or cfg.inf_fraction > 0
    for i in range(worker, cfg.runs, workers):
        run = plan.run(i)
        run_dir = w.mkdir(f"{exp_dirs[run.experiment.experiment_id]}/{run.run_id}")
        w.write(f"{run_dir}/meta.yaml", dump_yaml(plan.run_meta(run)))
        w.write_files(f"{run_dir}/params", run.params)
        w.write_files(f"{run_dir}/tags", run.tags)
        w.mkdir(f"{run_dir}/artifacts")
        metric_files = {}
        for key, (t0, values) in run.metrics.items():
            metric_files[key] = _metric_text(t0, values)
            counts["metric_rows"] += len(values)
            if special_values:
                for v in values:
                    if v != v:
                        counts["nan_values"] += 1
                    elif v in _INFS:
                        counts["inf_values"] += 1
        for key, ts, value, step in run.model_metrics:
            metric_files[key] = metric_files.get(key, "") + f"{ts} {value} {step}\n"
            counts["metric_rows"] += 1
        w.write_files(f"{run_dir}/metrics", metric_files)
        counts["metric_files"] += len(metric_files)
        if run.inputs:
            w.mkdir(f"{run_dir}/inputs")
            for ds, context in run.inputs:
                in_dir = w.mkdir(f"{run_dir}/inputs/{_md5(ds.dataset_id, run.run_id)}")
                w.write(f"{in_dir}/meta.yaml", dump_yaml(plan.input_meta(ds, context)))
            counts["inputs"] += len(run.inputs)
            counts["input_tags"] += len(run.inputs)
        if run.outputs:
            w.mkdir(f"{run_dir}/outputs")
            for lm in run.outputs:
                o_dir = w.mkdir(f"{run_dir}/outputs/{lm.model_id}")
                w.write(f"{o_dir}/meta.yaml", dump_yaml(plan.output_meta(lm)))
            counts["outputs"] += len(run.outputs)
        counts["runs"] += 1
        counts["deleted_runs"] += run.deleted
        counts["params"] += len(run.params)
        counts["tags"] += len(run.tags)
    return counts, w.files, w.dirs, w.bytes


def _run_in_workers(
    cfg: Config, plan: TreePlan, exp_dirs: dict[str, str], w: _Writer, counts: dict[str, int]
) -> None:
    workers = max(1, min(cfg.workers, cfg.runs // 100))
    if workers == 1:
        results = [_write_runs(cfg, exp_dirs, 0, 1, plan)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [
                pool.submit(_write_runs, cfg, exp_dirs, k, workers) for k in range(workers)
            ]
            results = [f.result() for f in futures]
    for run_counts, files, dirs, nbytes in results:
        for key, value in run_counts.items():
            counts[key] += value
        w.files += files
        w.dirs += dirs
        w.bytes += nbytes


def generate(cfg: Config) -> dict:
    t_start = time.perf_counter()
    out = str(cfg.output)
    if os.path.lexists(out):
        if cfg.overwrite:
            mlruns_like = os.path.isdir(f"{out}/.trash") or os.path.isfile(f"{out}/0/meta.yaml")
            if os.listdir(out) and not mlruns_like:
                raise SystemExit(f"refusing to delete {out}: it does not look like an mlruns tree")
            shutil.rmtree(out)
        elif os.listdir(out):
            raise SystemExit(f"{out} exists and is not empty (use --overwrite)")
        else:
            os.rmdir(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    plan = TreePlan(cfg)
    w = _Writer()
    counts = dict.fromkeys(
        (
            "experiments", "deleted_experiments", "experiment_tags", "runs", "deleted_runs",
            "params", "tags", "metric_files", "metric_rows", "nan_values", "inf_values",
            "datasets", "inputs", "input_tags", "outputs", "traces", "v2_traces", "trace_tags",
            "trace_metadata", "assessments", "assessments_feedback", "assessments_expectation",
            "logged_models", "logged_model_params", "logged_model_tags",
            "logged_model_metrics", "registered_models", "registered_model_tags",
            "registered_model_aliases", "model_versions", "model_version_tags",
        ),
        0,
    )  # fmt: skip

    w.mkdir(out)
    w.mkdir(f"{out}/.trash")
    exp_dirs: dict[str, str] = {}
    for exp in [plan.default_experiment, *plan.experiments]:
        parent = f"{out}/.trash" if exp.deleted else out
        exp_dir = w.mkdir(f"{parent}/{exp.experiment_id}")
        exp_dirs[exp.experiment_id] = exp_dir
        w.write(f"{exp_dir}/meta.yaml", dump_yaml(plan.experiment_meta(exp)))
        if exp.tags:
            w.write_files(f"{exp_dir}/tags", exp.tags)
        counts["experiments"] += 1
        counts["deleted_experiments"] += exp.deleted
        counts["experiment_tags"] += len(exp.tags)
        if exp.datasets:
            w.mkdir(f"{exp_dir}/datasets")
            for ds in exp.datasets:
                ds_dir = w.mkdir(f"{exp_dir}/datasets/{ds.dataset_id}")
                w.write(f"{ds_dir}/meta.yaml", dump_yaml(ds.meta))
            counts["datasets"] += len(exp.datasets)

    _run_in_workers(cfg, plan, exp_dirs, w, counts)

    made_models_dir: set[str] = set()
    for lm in plan.logged_models:
        exp_dir = exp_dirs[lm.experiment.experiment_id]
        if exp_dir not in made_models_dir:
            w.mkdir(f"{exp_dir}/models")
            made_models_dir.add(exp_dir)
        m_dir = w.mkdir(f"{exp_dir}/models/{lm.model_id}")
        w.write(f"{m_dir}/meta.yaml", dump_yaml(plan.logged_model_meta(lm)))
        w.write_files(f"{m_dir}/params", lm.params)
        w.write_files(f"{m_dir}/tags", lm.tags)
        # FileStore._log_model_metric: f"{timestamp} {value} {step} {run_id}\n"
        metric_run = lm.source_run_id or ("0" * 32)
        lines = "".join(f"{ts} {v} {step} {metric_run}\n" for ts, v, step in lm.metric_points)
        w.write_files(f"{m_dir}/metrics", {lm.metric_key: lines})
        counts["logged_models"] += 1
        counts["logged_model_params"] += len(lm.params)
        counts["logged_model_tags"] += len(lm.tags)
        counts["logged_model_metrics"] += len(lm.metric_points)

    made_traces_dir: set[str] = set()
    for tr in plan.traces:
        exp_dir = exp_dirs[tr.experiment.experiment_id]
        if exp_dir not in made_traces_dir:
            w.mkdir(f"{exp_dir}/traces")
            made_traces_dir.add(exp_dir)
        t_dir = w.mkdir(f"{exp_dir}/traces/{tr.trace_id}")
        w.write(f"{t_dir}/trace_info.yaml", dump_yaml(plan.trace_info(tr)))
        w.write_files(f"{t_dir}/request_metadata", tr.request_metadata)
        w.write_files(f"{t_dir}/tags", tr.tags)
        w.mkdir(f"{t_dir}/artifacts")
        w.write(f"{t_dir}/artifacts/traces.json", plan.trace_spans(tr))
        if tr.assessments:
            a_dir = w.mkdir(f"{t_dir}/assessments")
            for a in tr.assessments:
                w.write(f"{a_dir}/{a.assessment_id}.yaml", dump_yaml(plan.assessment(tr, a)))
                counts[f"assessments_{a.kind}"] += 1
            counts["assessments"] += len(tr.assessments)
        counts["traces"] += 1
        counts["v2_traces"] += tr.v2
        counts["trace_tags"] += len(tr.tags)
        counts["trace_metadata"] += len(tr.request_metadata)

    # The registry FileStore creates models/ whenever it is opened; always present here.
    w.mkdir(f"{out}/models")
    for rm in plan.registered_models:
        rm_dir = w.mkdir(f"{out}/models/{rm.name}")
        w.write(f"{rm_dir}/meta.yaml", dump_yaml(plan.registered_model_meta(rm)))
        w.write_files(f"{rm_dir}/tags", rm.tags)
        w.write_files(f"{rm_dir}/aliases", rm.aliases)
        for mv in rm.versions:
            v_dir = w.mkdir(f"{rm_dir}/version-{mv.version}")
            w.write(f"{v_dir}/meta.yaml", dump_yaml(plan.model_version_meta(rm, mv)))
            w.write_files(f"{v_dir}/tags", mv.tags)
            counts["model_version_tags"] += len(mv.tags)
        counts["registered_models"] += 1
        counts["registered_model_tags"] += len(rm.tags)
        counts["registered_model_aliases"] += len(rm.aliases)
        counts["model_versions"] += len(rm.versions)

    seconds = time.perf_counter() - t_start
    return {
        "output": os.path.abspath(out),
        "seed": cfg.seed,
        "config": {
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("output", "overwrite", "workers")
        },
        "counts": counts,
        "files": w.files,
        "dirs": w.dirs,
        "bytes": w.bytes,
        "seconds": round(seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    cfg = build_config(parse_args(argv))
    summary = generate(cfg)
    json.dump(summary, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
