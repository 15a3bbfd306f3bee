#!/usr/bin/env python
"""Build an MLflow FileStore fixture tree through MLflow's public API.

Standalone: imports only the standard library, mlflow and what mlflow brings
(pandas), and runs on Python 3.7 too. Works with whatever MLflow runs it (tested:
1.0.0, 1.20.2, 1.30.1, 2.1.1, 2.9.2, 2.22.5, 3.2.0, 3.17.2):

    uv run --with mlflow==3.17.2 --no-project \
        python -I scripts/generate_migration_fixtures.py --output DIR --size small

    # MLflow 2.22.5 and 3.2.0 drop traces (only a logged warning) with opentelemetry
    # >= 1.45: pin it. The generator exits 3 if a trace it made is not complete on disk.
    uv run --with mlflow==2.22.5 --with 'opentelemetry-sdk<1.45' \
        --with 'opentelemetry-api<1.45' --no-project \
        python -I scripts/generate_migration_fixtures.py --output DIR --size full
    # 3.2.0: same pins. With opentelemetry 1.41-1.44 it still writes complete traces but
    # logs "Failed to end span ...: no attribute '_metrics'" once per trace; '<1.41'
    # (1.40.0) is quiet.

    # MLflow 1.x: an old Python and era pins (scripts/ci_matrix.sh has them per release).
    # Then --upgrade: a later MLflow adds to the same tree what a user who upgraded adds
    # (the model registry, which no MLflow before 2.1 has on files; a run; a deletion).
    uv run --python 3.8 --with mlflow==1.20.2 --with 'protobuf<4' --with 'sqlalchemy<2' \
        --with 'numpy<1.24' --with 'pandas<2' --no-project \
        python -I scripts/generate_migration_fixtures.py --output DIR --size full
    uv run --python 3.8 --with mlflow==2.9.2 --no-project \
        python -I scripts/generate_migration_fixtures.py --output DIR --upgrade

Writes the FileStore into DIR/mlruns (tracking and model registry) and a JSON
summary into DIR/fixture_summary.json; the same JSON goes to stdout. MLflow's
own output goes to stderr. Features are detected by probing the API, so every
entity type the running MLflow can create is created; what it cannot (MLflow 1.0 has
no experiment tags and refuses +-Inf metric values) is logged and listed per era in
the summary's "eras".
scripts/check_fixture_tree.py reads the tree back and compares with the summary.

Count conventions (used by the checker too): "custom" tags are those whose key
does not start with "mlflow."; trace tags and trace request metadata count only
keys starting with "fx."; metric_points counts every history line, including
exact duplicates. logged_model_metrics counts (model, metric, dataset) series, the
latest point of each being what FileStore's reader shows; logged_model_metric_points
counts every line of the models' metric files (each also a run metric point).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

# Must be set before mlflow is imported.
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow >= 3.x refuses file stores otherwise
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"  # write traces before returning
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
for _var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
             "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
    os.environ.pop(_var, None)

SIZES = {
    # Table of the brief. Per-parent numbers say which parent in PLAN_NOTES.
    "small": dict(experiments=2, experiment_tags=2, runs=2, params=3, metrics=3, run_tags=2,
                  datasets=1, inputs=1, input_tags=1, traces=1, trace_tags=1, trace_metadata=1,
                  assessments=1, logged_models=1, logged_model_params=2, logged_model_tags=1,
                  logged_model_metrics=2, registered_models=1, model_versions=2,
                  registered_model_tags=1, model_version_tags=1, aliases=1, prompts=1,
                  history_steps=3),
    "full": dict(experiments=5, experiment_tags=3, runs=5, params=10, metrics=10, run_tags=5,
                 datasets=3, inputs=2, input_tags=2, traces=3, trace_tags=3, trace_metadata=3,
                 assessments=2, logged_models=2, logged_model_params=5, logged_model_tags=3,
                 logged_model_metrics=5, registered_models=3, model_versions=5,
                 registered_model_tags=3, model_version_tags=3, aliases=2, prompts=3,
                 history_steps=10),
}
PLAN_NOTES = {
    "experiments": "regular experiments; plus Default (id 0), one deleted, one s3:// experiment",
    "experiment_tags": "per regular experiment",
    "runs": "FINISHED runs per regular experiment; edge-case runs are extra (first experiment)",
    "params/metrics/run_tags": "keys per regular run",
    "datasets": "per regular experiment", "inputs": "dataset inputs per regular run",
    "input_tags": "per input, including mlflow.data.context",
    "traces": "per regular experiment (+1 assessment-kinds trace in the first one)",
    "trace_tags/trace_metadata": "fx.* keys per trace", "assessments": "per regular trace",
    "logged_models": "in the first experiment; params/tags/metrics are per model",
    "model_versions/registered_model_tags/aliases": "per registered model",
    "model_version_tags": "per model version", "prompts": "prompts (first has 2 versions in full)",
}

BASE_TS = 1_700_000_000_000  # fixed metric timestamps (ms) for deterministic metric files


def log(msg: str) -> None:
    print(f"[fixtures] {msg}", file=sys.stderr, flush=True)


def accepts(func, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class FixtureError(RuntimeError):
    pass


class Generator:
    def __init__(self, out: Path, size: str):
        import mlflow

        try:
            from mlflow import MlflowClient
        except ImportError:  # MLflow < 1.26 exports it from mlflow.tracking only
            from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.out = out
        self.root = out / "mlruns"
        self.uri = self.root.resolve().as_uri()  # file:///abs/path/mlruns
        mlflow.set_tracking_uri(self.uri)
        kw = {"tracking_uri": self.uri}
        if hasattr(mlflow, "set_registry_uri"):  # MLflow >= 1.2
            mlflow.set_registry_uri(self.uri)
            kw["registry_uri"] = self.uri
        self.client = MlflowClient(**kw)
        self.size = size
        self.n = SIZES[size]
        self.rng = random.Random(42)
        self.counts: Counter = Counter()
        self.edge_cases: list[str] = []
        self.ids: dict = {"experiments": [], "deleted_experiment": None, "s3_experiment": None,
                          "traces": [], "logged_models": [], "registered_models": [],
                          "prompts": []}
        self.skipped: list[str] = []  # what this MLflow cannot write, said once each
        self.features = self._probe()
        self._ts = 0

    # ------------------------------------------------------------------ probing
    def _probe(self) -> dict:
        mlflow, C = self.mlflow, type(self.client)
        f: dict = {}
        # MLflow 1.x: no experiment tags in 1.0 (set_experiment_tag comes later), no
        # create_experiment(tags=) nor set_experiment(experiment_id=) in 1.20 (1.25 has both),
        # search_experiments from 1.28, create_run(run_name=) and a run name in meta.yaml from
        # 1.30 (before, a run is named by its mlflow.runName tag only, and most have none).
        f["experiment_tags"] = hasattr(C, "set_experiment_tag")
        f["create_experiment_tags"] = accepts(C.create_experiment, "tags")
        f["create_run_name"] = accepts(C.create_run, "run_name")
        f["set_experiment_by_id"] = accepts(mlflow.set_experiment, "experiment_id")
        f["search_experiments"] = hasattr(C, "search_experiments")
        # No file-store model registry before MLflow 2.1 (it refuses file: registry URIs).
        try:
            from mlflow.store.model_registry.file_store import FileStore as _RegistryStore  # noqa: F401

            f["registry"] = True
        except ImportError:
            f["registry"] = False
        # MLflow 1.0's reader takes a param file's first line, stripped, and fails on a second:
        # it cannot log a multi-line param value (nor read one back).
        try:
            try:
                from mlflow.store.tracking.file_store import FileStore as _TrackingStore
            except ImportError:  # MLflow 1.0 keeps it one folder up
                from mlflow.store.file_store import FileStore as _TrackingStore
            f["multiline_params"] = "read_file_lines" not in inspect.getsource(
                _TrackingStore._get_param_from_file)
        except (ImportError, OSError, TypeError):
            f["multiline_params"] = True
        f["log_input"] = hasattr(mlflow, "log_input")
        f["input_tags"] = f["log_input"] and accepts(mlflow.log_input, "tags")
        try:
            import mlflow.data  # noqa: F401
            import pandas  # noqa: F401

            f["pandas_datasets"] = hasattr(mlflow.data, "from_pandas")
        except ImportError:
            f["pandas_datasets"] = False
        f["traces"] = hasattr(mlflow, "start_span") and hasattr(mlflow, "trace")
        upd = getattr(mlflow, "update_current_trace", None)
        f["trace_tags_fluent"] = bool(upd) and accepts(upd, "tags")
        f["trace_tags_client"] = hasattr(C, "set_trace_tag")
        f["trace_request_metadata"] = bool(upd) and accepts(upd, "metadata")
        # Assessments: the fluent API must exist AND the file store must implement them
        # (2.22.5 has mlflow.log_feedback, but its FileStore raises NotImplementedError).
        fluent_assess = hasattr(mlflow, "log_feedback") and hasattr(mlflow, "log_expectation")
        store_assess = False
        try:
            from mlflow.store.tracking.abstract_store import AbstractStore
            from mlflow.store.tracking.file_store import FileStore

            impl = getattr(FileStore, "create_assessment", None)
            store_assess = impl is not None and impl is not getattr(
                AbstractStore, "create_assessment", None)
        except ImportError:
            pass
        f["assessments"] = fluent_assess and store_assess
        f["assessments_fluent_api_only"] = fluent_assess and not store_assess
        f["logged_models"] = hasattr(mlflow, "initialize_logged_model") or hasattr(
            C, "create_logged_model")
        f["logged_model_api"] = ("mlflow.initialize_logged_model"
                                 if hasattr(mlflow, "initialize_logged_model")
                                 else "MlflowClient.create_logged_model"
                                 if hasattr(C, "create_logged_model") else None)
        f["logged_model_params_client"] = hasattr(C, "log_model_params")
        f["metric_dataset_link"] = accepts(mlflow.log_metric, "dataset") and accepts(
            mlflow.log_metric, "model_id")
        f["model_outputs"] = hasattr(C, "log_outputs")
        f["model_inputs"] = accepts(getattr(C, "log_inputs", None), "models")
        f["model_version_model_id"] = accepts(getattr(C, "create_model_version", None), "model_id")
        f["stage_transitions"] = hasattr(C, "transition_model_version_stage")
        f["registered_model_aliases"] = hasattr(C, "set_registered_model_alias")
        reg = None
        try:
            import mlflow.genai

            if hasattr(mlflow.genai, "register_prompt"):
                reg = "mlflow.genai.register_prompt"
        except ImportError:
            pass
        if reg is None and hasattr(mlflow, "register_prompt"):
            reg = "mlflow.register_prompt"
        f["prompts"] = reg is not None
        f["prompt_api"] = reg
        regf = self._prompt_fn("register_prompt") if reg else None
        try:  # chat prompts: the template parameter accepts a list of messages
            ann = inspect.signature(regf).parameters["template"].annotation if regf else ""
            f["prompt_chat_template"] = "list" in str(ann)
        except (KeyError, TypeError, ValueError):
            f["prompt_chat_template"] = False
        f["prompt_response_format"] = bool(regf) and accepts(regf, "response_format")
        f["prompt_model_config"] = bool(regf) and accepts(regf, "model_config")
        f["prompt_version_metadata"] = bool(regf) and accepts(regf, "version_metadata")
        f["search_prompts"] = hasattr(C, "search_prompts")
        try:
            from mlflow.utils import validation

            f["max_param_val_length"] = getattr(validation, "MAX_PARAM_VAL_LENGTH", 6000)
            f["max_tag_val_length"] = getattr(validation, "MAX_TAG_VAL_LENGTH", 5000)
        except ImportError:
            f["max_param_val_length"], f["max_tag_val_length"] = 6000, 5000
        return f

    def _prompt_fn(self, name: str):
        """mlflow.genai.<name> where it exists (3.x), else mlflow.<name> (2.x)."""
        try:
            import mlflow.genai

            if hasattr(mlflow.genai, name):
                return getattr(mlflow.genai, name)
        except ImportError:
            pass
        return getattr(self.mlflow, name)

    # ------------------------------------------------------------------ helpers
    def ts(self) -> int:
        self._ts += 1
        return BASE_TS + self._ts * 1000

    def word(self, k: int = 8) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))

    def skip(self, what: str) -> None:
        """Something this MLflow cannot write: logged, and listed in the summary."""
        if what not in self.skipped:
            self.skipped.append(what)
            log(f"MLflow {self.mlflow.__version__} cannot: {what} (skipped)")

    def log_metrics(self, run_id: str, points: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        ms = [Metric(key=k, value=v, timestamp=t, step=s) for k, v, t, s in points]
        for i in range(0, len(ms), 1000):
            # MLflow 1.0's log_batch takes all three lists, positionally required
            self.client.log_batch(run_id, ms[i:i + 1000], [], [])
        self.counts["metric_points"] += len(ms)

    def log_run_data(self, run_id, params=None, tags=None):
        from mlflow.entities import Param, RunTag

        params, tags = params or {}, tags or {}
        self.client.log_batch(run_id, [], [Param(k, v) for k, v in params.items()],
                              [RunTag(k, v) for k, v in tags.items()])
        self.counts["params"] += len(params)
        self.counts["run_tags"] += len(tags)

    def new_run(self, exp_id: str, name: str | None, tags=None):
        """A run made by the client; ``name`` None makes an unnamed one where the era has those
        (MLflow <= 1.28: no run name anywhere; later ones generate a name)."""
        tags = dict(tags or {})
        if self.features["create_run_name"]:
            run = self.client.create_run(exp_id, run_name=name, tags=tags)
        else:  # MLflow <= 1.28 names a run by its mlflow.runName tag only
            if name is not None:
                tags["mlflow.runName"] = name
            run = self.client.create_run(exp_id, tags=tags)
        self.counts["runs"] += 1
        self.counts["run_tags"] += len([k for k in tags if not k.startswith("mlflow.")])
        return run

    def create_experiment(self, name: str, tags: dict, artifact_location=None) -> str:
        """With its tags, through create_experiment(tags=) where the era has it, else
        set_experiment_tag alone (MLflow 1.20), else none (MLflow 1.0 has no experiment tags)."""
        f, client = self.features, self.client
        kw = {"artifact_location": artifact_location} if artifact_location else {}
        items = list(tags.items())
        if not f["experiment_tags"]:
            self.skip("experiment tags")
            items = []
        if f["create_experiment_tags"] and items:
            exp_id = client.create_experiment(name, tags=dict(items[:1]), **kw)
            later = items[1:]
        else:
            exp_id = client.create_experiment(name, **kw)
            later = items
            if items:
                self.skip("create_experiment(tags=...): the tags are set after")
        for k, v in later:
            client.set_experiment_tag(exp_id, k, v)
        self.counts["experiments"] += 1
        self.counts["experiment_tags"] += len(items)
        return exp_id

    def finish(self, run_id: str, status: str = "FINISHED"):
        self.client.set_terminated(run_id, status=status)
        self.counts[f"runs_{status.lower()}"] += 1

    def dataset(self, exp_idx: int, d: int):
        import pandas as pd

        rng = random.Random(1000 * exp_idx + d)
        rows = 4 + d
        df = pd.DataFrame({
            "x": [round(rng.uniform(0, 1), 6) for _ in range(rows)],
            "label": [rng.choice(["猫", "犬", "🐟"]) for _ in range(rows)],
            "y": [rng.randint(0, 1) for _ in range(rows)],
        })
        return self.mlflow.data.from_pandas(df, name=f"fx-ds-{exp_idx}-{d}", targets="y")

    def _run_inputs(self, run_id: str) -> tuple[int, int, int]:
        inputs = self.client.get_run(run_id).inputs
        ds = list(getattr(inputs, "dataset_inputs", None) or [])
        return (len(ds), sum(len(d.tags) for d in ds),
                len(getattr(inputs, "model_inputs", None) or []))

    def list_experiments(self) -> list:
        """Every experiment, deleted ones too (search_experiments from MLflow 1.28 on)."""
        from mlflow.entities import ViewType

        if self.features["search_experiments"]:
            return list(self.client.search_experiments(view_type=ViewType.ALL))
        return list(self.client.list_experiments(view_type=ViewType.ALL))

    def trace_dir(self, exp_id: str, trace_id: str) -> Path:
        return self.root / exp_id / "traces" / trace_id

    # ------------------------------------------------------------------ build
    def build(self) -> dict:
        t0 = time.monotonic()
        mlflow = self.mlflow
        n = self.n
        self.list_experiments()  # makes the FileStore create Default (id 0)
        self.counts["experiments"] += 1

        for e in range(n["experiments"]):
            self.build_experiment(e)
        self.build_edge_experiments()
        if self.features["logged_models"]:
            self.build_logged_models()
        if self.features["registry"]:
            self.build_registry()
        else:
            self.skip("model registry (MLflow < 2.1 has no file-store registry)")
        if self.features["prompts"]:
            self.build_prompts()
        self.verify_traces_on_disk()
        with contextlib.suppress(Exception):
            mlflow.end_run()
        return self.summary(time.monotonic() - t0)

    def build_experiment(self, e: int):
        mlflow, n = self.mlflow, self.n
        name = f"fx-实验-🚀-{e}" if e == 0 else f"fx-exp-{e}"
        tags = {"fx/nested/e0" if i == 0 else f"fx.e{i}":
                (f"团队-🧪-{self.word()}" if i == 1 else self.word()) for i in range(n["experiment_tags"])}
        # created with the first tag, the rest set after (both public write paths)
        exp_id = self.create_experiment(name, tags)
        self.ids["experiments"].append(exp_id)
        if self.features["set_experiment_by_id"]:
            mlflow.set_experiment(experiment_id=exp_id)
        datasets = []
        if self.features["pandas_datasets"] and self.features["log_input"]:
            datasets = [self.dataset(e, d) for d in range(n["datasets"])]
            self.counts["datasets"] += n["datasets"]

        run_ids = []
        for r in range(n["runs"]):
            rname = f"运行-🎯-{e}-{r}" if r == 0 else f"run-{e}-{r}"
            with mlflow.start_run(experiment_id=exp_id, run_name=rname) as active:
                run_id = active.info.run_id
                self.counts["runs"] += 1
                run_ids.append(run_id)
                params = {("nested/p00" if i == 0 else f"p{i:02d}"): str(self.rng.randint(0, 10**6))
                          for i in range(n["params"])}
                tags = {("nested/t00" if i == 0 else f"t{i:02d}"):
                        (f"值-🌈-{self.word(4)}" if i == 1 else self.word()) for i in range(n["run_tags"])}
                self.log_run_data(run_id, params, tags)
                points = []
                for i in range(n["metrics"]):
                    key = "nested/m00" if i == 0 else f"m{i:02d}"
                    steps = n["history_steps"] if i == 1 else 1
                    for s in range(steps):
                        points.append((key, round(self.rng.gauss(0, 1), 6), self.ts(), s))
                self.log_metrics(run_id, points)
                for k in range(n["inputs"] if datasets else 0):
                    ds = datasets[(r + k) % len(datasets)]
                    ctx = "training" if k == 0 else "evaluation"
                    extra = {f"fx.split{j}": f"部分-{j}" for j in range(1, n["input_tags"])}
                    if self.features["input_tags"]:
                        mlflow.log_input(ds, context=ctx, tags=extra or None)
                        self.counts["input_tags"] += 1 + len(extra)
                    else:
                        mlflow.log_input(ds, context=ctx)
                        self.counts["input_tags"] += 1
                    self.counts["inputs"] += 1
                if r == 0 and self.features["traces"]:
                    # first trace of the experiment is made inside a run (sourceRun link)
                    self.make_trace(exp_id, e, 0)
            self.counts["runs_finished"] += 1

        if self.features["traces"]:
            for t in range(1, n["traces"]):
                self.make_trace(exp_id, e, t)
        if e == 0:
            self.exp0 = {"id": exp_id, "runs": run_ids, "datasets": datasets}
            self.ids["exp0_runs"] = run_ids
            self.build_edge_runs(exp_id, datasets)
            if self.features["traces"] and self.features["assessments"]:
                self.make_trace(exp_id, e, n["traces"], all_assessment_kinds=True)

    # ------------------------------------------------------------------ traces
    def make_trace(self, exp_id: str, e: int, t: int, all_assessment_kinds: bool = False):
        mlflow, n = self.mlflow, self.n
        tag_items = [(f"fx.tag{i}", f"标签-✨-{e}-{t}-{i}" if i == 0 else f"v{e}{t}{i}")
                     for i in range(n["trace_tags"])]
        meta = {f"fx.meta{i}": f"m-{e}-{t}-{i}" for i in range(n["trace_metadata"])}
        # all but the last tag inside the trace, the last one with the client afterwards
        fluent_tags = dict(tag_items[:-1]) if self.features["trace_tags_fluent"] else {}
        later_tags = [kv for kv in tag_items if kv[0] not in fluent_tags]
        holder = {}

        def body(question: str) -> str:
            upd = {}
            if fluent_tags:
                upd["tags"] = fluent_tags
            if self.features["trace_request_metadata"]:
                upd["metadata"] = meta
            if upd:
                mlflow.update_current_trace(**upd)
            with mlflow.start_span(name="fx-child", span_type="LLM") as child:
                child.set_inputs({"prompt": question})
                child.set_attribute("fx.tokens", 42)
                child.set_outputs({"answer": "答え 🌸"})
                holder["child"] = child.span_id
            span = mlflow.get_current_active_span()
            holder["root"] = span
            return f"answer to {question}"

        name = "fx-assessment-kinds" if all_assessment_kinds else f"fx-trace-{e}-{t}"
        if t % 2 == 0:
            with mlflow.start_span(name=name, span_type="CHAIN") as root:
                root.set_inputs({"question": f"q{e}{t} 你好"})
                out = body(f"q{e}{t}")
                root.set_outputs({"answer": out})
        else:
            traced = mlflow.trace(body, name=name, span_type="AGENT")
            traced(f"q{e}{t}")
        root = holder["root"]
        trace_id = getattr(root, "trace_id", None) or root.request_id
        # No flush: async trace logging is switched off above (MLflow 3.2.0 logs an ERROR
        # from flush_trace_async_logging() when it is off), so the trace is on disk now.
        self.check_trace_on_disk(exp_id, trace_id)
        for k, v in later_tags:
            self.client.set_trace_tag(trace_id, k, v)
        self.counts["traces"] += 1
        self.counts["trace_spans"] += 2  # root + fx-child
        self.counts["trace_tags"] += len(tag_items)
        if self.features["trace_request_metadata"]:
            self.counts["trace_request_metadata"] += len(meta)
        self.ids["traces"].append({"experiment_id": exp_id, "trace_id": trace_id})
        if self.features["assessments"]:
            kinds = list(ASSESSMENT_KINDS)
            if not all_assessment_kinds:
                start = (self.counts["traces"] - 1) * n["assessments"]
                kinds = [kinds[(start + i) % len(kinds)] for i in range(n["assessments"])]
            for kind in kinds:
                self.log_assessment(trace_id, holder["child"], kind)

    def check_trace_on_disk(self, exp_id: str, trace_id: str):
        """Fail loudly unless the trace is complete on disk.

        With opentelemetry >= 1.45, MLflow 2.22.5 and 3.2.0 only log a warning: the trace
        stays IN_PROGRESS (2.22.5 writes trace_info.yaml at start, never ends it) or is
        not written at all, and it has no span data.
        """
        import yaml  # PyYAML comes with mlflow

        tdir = self.trace_dir(exp_id, trace_id)
        info, data = tdir / "trace_info.yaml", tdir / "artifacts" / "traces.json"
        problem = None
        if not info.is_file():
            problem = f"{info} does not exist"
        else:
            meta = yaml.safe_load(info.read_text(encoding="utf-8")) or {}
            state = meta.get("state", meta.get("status"))  # 3.x: state, 2.x: status
            if state in (None, "IN_PROGRESS", "STATE_UNSPECIFIED", "TRACE_STATUS_UNSPECIFIED"):
                problem = f"{info} has state {state!r} (the trace never ended)"
            elif not data.is_file():
                problem = f"{data} (span data) does not exist"
            else:
                spans = json.loads(data.read_text(encoding="utf-8")).get("spans", [])
                if len(spans) < 2:
                    problem = f"{data} holds {len(spans)} span(s), expected 2"
        if problem:
            raise FixtureError(
                f"trace {trace_id} was created but is not on disk: {problem}. MLflow "
                f"{self.mlflow.__version__} drops traces silently with opentelemetry >= 1.45; "
                f"for MLflow 2.22.5/3.2.0 add --with 'opentelemetry-sdk<1.45' "
                f"--with 'opentelemetry-api<1.45'.")

    def verify_traces_on_disk(self):
        for t in self.ids["traces"]:
            self.check_trace_on_disk(t["experiment_id"], t["trace_id"])

    def log_assessment(self, trace_id: str, span_id: str, kind: str):
        from mlflow.entities import AssessmentError, AssessmentSource

        mlflow = self.mlflow
        family, vtype = kind.split(":")
        value = {"bool": True, "number": 0.875, "int": 3, "string": "正しい ✅",
                 "list": ["a", 2, 3.5, False], "dict": {"score": 4, "label": "好", "ok": True},
                 "error": None}[vtype]
        meta = {"fx.kind": kind, "fx.judge": "v1"}
        if family == "feedback":
            src = AssessmentSource(source_type="LLM_JUDGE" if vtype != "bool" else "HUMAN",
                                   source_id="fx-judge" if vtype != "bool" else "fx-annotator")
            kw = dict(trace_id=trace_id, name=f"fx_fb_{vtype}", source=src, metadata=meta,
                      rationale=f"because {vtype} — 理由")
            if vtype == "error":
                kw["error"] = AssessmentError(error_code="RATE_LIMIT_EXCEEDED",
                                              error_message="judge was rate limited")
            else:
                kw["value"] = value
            if vtype in ("string", "error", "dict"):
                kw["span_id"] = span_id
            mlflow.log_feedback(**kw)
        else:
            src = AssessmentSource(source_type="HUMAN", source_id="fx-labeler")
            kw = dict(trace_id=trace_id, name=f"fx_exp_{vtype}", value=value, source=src,
                      metadata=meta)
            if vtype in ("list", "number"):
                kw["span_id"] = span_id
            mlflow.log_expectation(**kw)
        self.counts["assessments"] += 1
        self.counts[f"assessments_{family}"] += 1

    # ------------------------------------------------------------------ edge cases
    def build_edge_runs(self, exp_id: str, datasets):
        mlflow, client, f = self.mlflow, self.client, self.features
        # values: NaN/±Inf, duplicates, history, long and multi-line values, nested keys
        run = self.new_run(exp_id, "edge-values-数据-🔥")
        rid = run.info.run_id
        self.edge_values_run = rid
        long_param = ("p" * 97 + ("\n" if f["multiline_params"] else "p")) * (f["max_param_val_length"] // 98)
        long_param += "x" * (f["max_param_val_length"] - len(long_param))
        params = {"fx.long_param": long_param, "fx/deep/nested/param": "a/b/c",
                  "fx.multiline": "line one\nline two\n  indented: yes\n",
                  "fx.unicode": "中文-日本語-한국어-🎉", "fx.empty": ""}
        if not f["multiline_params"]:
            self.skip("multi-line param values")
            del params["fx.multiline"]
        long_tag = ("长" * 50 + "🚀") * 100  # 5100 chars, < MAX_TAG_VAL_LENGTH
        long_tag = long_tag[: min(len(long_tag), f["max_tag_val_length"])]
        self.log_run_data(rid, params=params, tags={
            "fx.long_tag": long_tag, "fx/nested/tag": "ネスト 🐙",
            "fx.multiline_tag": "first\nsecond", "fx.emoji": "🚀🔥💯",
        })
        dup_ts = self.ts()
        infinite = [("fx.pos_inf", math.inf, self.ts(), 0), ("fx.neg_inf", -math.inf, self.ts(), 0)]
        points = [("fx.nan", math.nan, self.ts(), 0),
                  ("fx.dup_step", 1.5, dup_ts, 7), ("fx.dup_step", 1.5, dup_ts, 7),  # exact dup
                  ("fx.dup_step", 2.5, self.ts(), 7),  # same step, other value
                  ("fx/nested/metric", 0.25, self.ts(), 0),
                  ("fx.negative_step", -1.0, self.ts(), -3),
                  ("fx.big", 1.7976931348623157e308, self.ts(), 0),
                  ("fx.tiny", 5e-324, self.ts(), 0),
                  ("fx.int_value", 3, self.ts(), 0),  # written "3", not "3.0"
                  ("fx.nan_then_value", math.nan, self.ts(), 0),
                  ("fx.nan_then_value", 3.0, self.ts(), 1)]
        points += [("fx.history", round(math.sin(s / 3), 6), self.ts(), s * 10) for s in range(25)]
        self.log_metrics(rid, points)
        try:
            self.log_metrics(rid, infinite)
            f["infinite_metrics"] = True
        except Exception as exc:  # noqa: BLE001 - MLflow 1.0 refuses them (MlflowException)
            f["infinite_metrics"] = False
            self.skip(f"metric values +-Inf ({type(exc).__name__}: {str(exc)[:80]})")
        # one metric through the single-metric API too (same step twice, same timestamp+value)
        client.log_metric(rid, "fx.single_api", 9.0, timestamp=dup_ts, step=1)
        client.log_metric(rid, "fx.single_api", 9.0, timestamp=dup_ts, step=1)
        self.counts["metric_points"] += 2
        self.finish(rid)

        # child run (mlflow.parentRunId) via the fluent API
        with mlflow.start_run(run_id=rid):
            with mlflow.start_run(run_name="edge-child-子", nested=True):
                mlflow.log_param("fx.child", "1")
                self.counts["params"] += 1
                self.counts["runs"] += 1
        self.counts["runs_finished"] += 1

        # Unnamed runs, as most runs of MLflow <= 1.28 are: create_run() and start_run() without
        # a name write neither a run name nor an mlflow.runName tag there (later eras make one up).
        bare = self.new_run(exp_id, None)
        self.log_run_data(bare.info.run_id, params={"fx.unnamed": "client"})
        self.log_metrics(bare.info.run_id, [("fx.loss", 0.5, self.ts(), 0)])
        self.finish(bare.info.run_id)
        with mlflow.start_run(experiment_id=exp_id):
            mlflow.log_param("fx.unnamed", "fluent")
        self.counts["runs"] += 1
        self.counts["params"] += 1
        self.counts["runs_finished"] += 1

        empty = self.new_run(exp_id, "edge-empty")
        self.finish(empty.info.run_id)

        running = self.new_run(exp_id, "edge-running-⏳")
        self.log_run_data(running.info.run_id, params={"fx.state": "running"})
        self.counts["runs_running"] += 1

        for status in ("FAILED", "KILLED"):
            r = self.new_run(exp_id, f"edge-{status.lower()}")
            self.log_run_data(r.info.run_id, tags={"fx.status": status})
            self.log_metrics(r.info.run_id, [("fx.loss", 1.0, self.ts(), 0)])
            self.finish(r.info.run_id, status)

        deleted = self.new_run(exp_id, "edge-deleted-🗑")
        self.log_run_data(deleted.info.run_id, params={"fx.deleted": "yes"})
        self.log_metrics(deleted.info.run_id, [("fx.loss", 2.0, self.ts(), 0)])
        self.finish(deleted.info.run_id)
        client.delete_run(deleted.info.run_id)
        self.counts["runs_deleted"] += 1
        self.edge_cases += [
            "metric values NaN, +Inf, -Inf" if f["infinite_metrics"] else "metric value NaN",
            "runs without a name (create_run() and start_run())",
            "metric 1.7976931348623157e308 and 5e-324", "metric NaN then a value",
            "metric value logged as an int (the file holds '3')",
            "CJK and emoji in experiment names, run names, tag values, param values",
            "deleted run (lifecycle_stage deleted)", "empty run (only default tags)",
            "RUNNING run", "FAILED run", "KILLED run", "nested child run (mlflow.parentRunId)",
            f"param value of {f['max_param_val_length']} chars (MAX_PARAM_VAL_LENGTH)"
            + (", multi-line" if f["multiline_params"] else ""),
            f"run tag value of {len(long_tag)} chars",
            "multi-line tag values" + (" and param values" if f["multiline_params"] else ""),
            "empty param value", "param/tag/metric/experiment-tag keys containing '/'",
            "same metric key logged twice at one step (different values)",
            "exact duplicate metric line (same timestamp, value, step)",
            "metric history (25 steps) and a negative step",
        ]

    def build_edge_experiments(self):
        client = self.client
        name = "fx-deleted-已删除-🗑"
        exp_id = self.create_experiment(name, {"fx.note": "削除済み"})
        r = self.new_run(exp_id, "run-in-deleted-exp")
        self.log_run_data(r.info.run_id, params={"fx.p": "1"}, tags={"fx.t": "x"})
        self.log_metrics(r.info.run_id, [("fx.m", 0.5, self.ts(), 0)])
        self.finish(r.info.run_id)
        client.delete_experiment(exp_id)
        # 3.x marks the runs of a deleted experiment deleted too; 2.x may not: ask MLflow
        if client.get_run(r.info.run_id).info.lifecycle_stage == "deleted":
            self.counts["runs_deleted"] += 1
            self.edge_cases.append("run deleted together with its experiment")
        self.counts["experiments_deleted"] += 1
        self.ids["deleted_experiment"] = exp_id

        s3 = "s3://fx-bucket/mlflow/artifacts"
        exp_id = self.create_experiment("fx-s3-artifacts", {"fx.store": "s3"}, artifact_location=s3)
        r = self.new_run(exp_id, "run-with-s3-artifacts")
        self.log_run_data(r.info.run_id, params={"fx.p": "1"})
        self.log_metrics(r.info.run_id, [("fx.m", 1.0, self.ts(), 0)])
        self.finish(r.info.run_id)
        self.ids["s3_experiment"] = exp_id

        # A relative artifact location, as `mlflow server --default-artifact-root ./mlruns` gave
        # every experiment: MLflow 1.x keeps it as given, later ones make it an absolute path.
        exp_id = self.create_experiment("fx-relative-artifacts", {}, artifact_location="./fx-artifacts")
        r = self.new_run(exp_id, "run-with-relative-artifacts")
        self.log_metrics(r.info.run_id, [("fx.m", 2.0, self.ts(), 0)])
        self.finish(r.info.run_id)
        location = client.get_experiment(exp_id).artifact_location
        self.edge_cases += ["deleted experiment (in .trash) holding a run",
                            f"experiment with non-file artifact location {s3}",
                            f"experiment created with artifact location ./fx-artifacts, kept as {location}"]

    # ------------------------------------------------------------------ logged models
    def build_logged_models(self):
        from mlflow.entities import LoggedModelInput, LoggedModelOutput

        mlflow, client, n, f = self.mlflow, self.client, self.n, self.features
        exp_id = self.exp0["id"]
        train = self.new_run(exp_id, "edge-model-train")
        evaluate = self.new_run(exp_id, "edge-model-eval")
        ds = self.exp0["datasets"][0] if self.exp0["datasets"] else None
        for k in range(n["logged_models"]):
            params = {f"lm_p{i}": str(self.rng.randint(1, 99)) for i in range(n["logged_model_params"])}
            tags = {f"fx.lm_t{i}": f"模型-{k}-{i}" for i in range(n["logged_model_tags"])}
            init_params = dict(list(params.items())[:-1])
            init_tags = dict(list(tags.items())[:-1])
            kw = dict(name=f"fx-model-{k}", source_run_id=train.info.run_id, tags=init_tags,
                      params=init_params, model_type="fx-classifier")
            if hasattr(mlflow, "initialize_logged_model"):
                model = mlflow.initialize_logged_model(experiment_id=exp_id, **kw)
            else:
                model = client.create_logged_model(exp_id, **kw)
            mid = model.model_id
            last_p = dict(list(params.items())[-1:])
            if f["logged_model_params_client"]:
                client.log_model_params(mid, last_p)
            client.set_logged_model_tags(mid, dict(list(tags.items())[-1:]))
            if f["model_outputs"]:
                client.log_outputs(train.info.run_id, [LoggedModelOutput(model_id=mid, step=k)])
                self.counts["model_outputs"] += 1
            # The fluent log_metric(model_id=..., dataset=...) also logs, as side effects, the
            # dataset (with no tags) and the model (unless it is already an output) as inputs
            # of the run: count what it added.
            before = self._run_inputs(train.info.run_id)
            for i in range(n["logged_model_metrics"]):
                mkw = dict(step=i, timestamp=self.ts(), run_id=train.info.run_id, model_id=mid)
                if i == 0 and ds is not None and f["metric_dataset_link"]:
                    mkw["dataset"] = ds
                mlflow.log_metric(f"fx.lm_m{i}", round(self.rng.random(), 6), **mkw)
            # What users log in a training loop: one model metric at every step. FileStore's
            # reader shows only the latest point; the files (and the database) hold them all.
            for step in range(n["history_steps"]):
                mlflow.log_metric("fx.lm_rmse", round(1.0 / (step + 1), 6), step=step,
                                  timestamp=self.ts(), run_id=train.info.run_id, model_id=mid)
            after = self._run_inputs(train.info.run_id)
            self.counts["inputs"] += after[0] - before[0]
            self.counts["input_tags"] += after[1] - before[1]
            self.counts["model_inputs"] += after[2] - before[2]
            self.counts["logged_model_metrics"] += n["logged_model_metrics"] + 1
            self.counts["logged_model_metric_points"] += n["logged_model_metrics"] + n["history_steps"]
            self.counts["metric_points"] += n["logged_model_metrics"] + n["history_steps"]
            client.finalize_logged_model(mid, "READY" if k == 0 else "FAILED")
            if f["model_inputs"]:
                client.log_inputs(evaluate.info.run_id, models=[LoggedModelInput(model_id=mid)])
                self.counts["model_inputs"] += 1
            self.counts["logged_models"] += 1
            self.counts["logged_model_params"] += len(params)
            self.counts["logged_model_tags"] += len(tags)
            self.ids["logged_models"].append(mid)
        self.finish(train.info.run_id)
        self.finish(evaluate.info.run_id)
        if f["metric_dataset_link"] and ds is not None:
            self.edge_cases.append("dataset input with no tags (side effect of "
                                   "mlflow.log_metric(dataset=..., model_id=...))")
        self.edge_cases.append(f"logged model metric history: {n['history_steps']} steps of one metric")
        self.edge_cases += ["logged model metric tied to a dataset (5/6-field metric lines)"
                            if f["metric_dataset_link"] and ds is not None else
                            "logged model metrics", "logged models READY and FAILED"]

    # ------------------------------------------------------------------ registry
    def build_registry(self):
        client, n, f = self.client, self.n, self.features
        src_runs = self.exp0["runs"]
        for k in range(n["registered_models"]):
            name = f"fx-模型-{k}" if k == 0 else f"fx-registered-{k}"
            tags = {f"fx.rm_t{i}": f"登録-{k}-{i}" for i in range(n["registered_model_tags"])}
            first = dict(list(tags.items())[:1])
            client.create_registered_model(name, tags=first, description=f"描述 {k} 📦")
            for kk, vv in list(tags.items())[1:]:
                client.set_registered_model_tag(name, kk, vv)
            self.counts["registered_models"] += 1
            self.counts["registered_model_tags"] += len(tags)
            self.ids["registered_models"].append(name)
            for v in range(n["model_versions"]):
                vtags = {f"fx.mv_t{i}": f"v{v}-{i}" for i in range(n["model_version_tags"])}
                last = v == n["model_versions"] - 1
                kw = dict(tags=dict(list(vtags.items())[:1]), description=f"version {v + 1}")
                if last:  # a model version with no run id
                    mv = client.create_model_version(name, f"s3://fx-bucket/models/{k}/{v}",
                                                     **kw)
                elif (v == 1 and self.ids["logged_models"] and f["model_version_model_id"]):
                    mid = self.ids["logged_models"][0]
                    mv = client.create_model_version(name, f"models:/{mid}", model_id=mid, **kw)
                else:
                    rid = src_runs[v % len(src_runs)]
                    art = client.get_run(rid).info.artifact_uri
                    mv = client.create_model_version(name, f"{art}/model", run_id=rid, **kw)
                for kk, vv in list(vtags.items())[1:]:
                    client.set_model_version_tag(name, mv.version, kk, vv)
                self.counts["model_versions"] += 1
                self.counts["model_version_tags"] += len(vtags)
            if f["stage_transitions"]:
                with contextlib.suppress(Exception):  # deprecated in 3.x, may warn
                    client.transition_model_version_stage(name, "1", "Production")
                    self.counts["stage_transitions"] += 1
            if not f["registered_model_aliases"]:
                self.skip("registered model aliases (MLflow < 2.3)")
            for a in range(min(n["aliases"], n["model_versions"]) if f["registered_model_aliases"] else 0):
                client.set_registered_model_alias(name, ["champion", "challenger", "shadow"][a],
                                                  str(a + 1))
                self.counts["aliases"] += 1
        # A deleted version: MLflow 2.1 removes its folder, later ones keep it as stage
        # Deleted_Internal (hidden from the reader).
        if n["model_versions"] >= 3:
            name, version = self.ids["registered_models"][-1], str(n["model_versions"] - 1)
            client.delete_model_version(name, version)
            self.counts["model_versions"] -= 1
            self.counts["model_version_tags"] -= n["model_version_tags"]
            self.counts["model_versions_deleted"] += 1
            self.edge_cases.append(f"deleted model version ({name} version {version})")
        self.edge_cases += ["model version without run id (s3:// source)",
                            "CJK in a registered model name"]
        if self.ids["logged_models"] and f["model_version_model_id"] and n["model_versions"] > 2:
            self.edge_cases.append("model version linked to a logged model (model_id)")

    def build_prompts(self):
        f, n = self.features, self.n
        register = self._prompt_fn("register_prompt")
        set_alias = self._prompt_fn("set_prompt_alias")
        for k in range(n["prompts"]):
            name = f"fx-prompt-{k}"
            kw = dict(name=name, commit_message=f"first commit 🎬 {k}",
                      tags={"fx.task": "qa", "fx.lang": "中文"})
            if k == 1 and f["prompt_chat_template"]:
                kw["template"] = [{"role": "system", "content": "You are {{persona}}."},
                                  {"role": "user", "content": "{{question}} 🤔"}]
            else:
                kw["template"] = "Answer {{question}} in {{language}}. 你好 🌟"
            if k == 0 and f["prompt_response_format"]:
                kw["response_format"] = {"type": "object",
                                         "properties": {"answer": {"type": "string"}}}
            if f["prompt_version_metadata"]:  # 2.x: version-level tags
                kw["version_metadata"] = {"fx.author": "fx-generator"}
            if k == 0 and f["prompt_model_config"]:
                kw["model_config"] = {"model_name": "fx-model", "temperature": 0.2,
                                      "max_tokens": 128}
            register(**kw)
            self.counts["prompts"] += 1
            self.counts["prompt_versions"] += 1
            if k == 0 and self.size == "full":
                register(name=name, template="v2: {{question}}", commit_message="second commit")
                self.counts["prompt_versions"] += 1
            set_alias(name, "production", 1)
            self.counts["prompt_aliases"] += 1
            self.ids["prompts"].append(name)

    # ------------------------------------------------------------------ summary
    # ------------------------------------------------------------------ upgrade
    def upgrade(self, before: dict) -> dict:
        """Add to a tree an older MLflow made (``before``: its summary) what a user who upgraded
        MLflow adds: a run of this era in an old experiment, a new experiment, an old run
        deleted, and what the older era could not write (model registry, prompts, logged
        models). Counts add up over both passes."""
        t0 = time.monotonic()
        client = self.client
        self.counts.update(before["counts"])
        self.ids.update(before["ids"])
        self.edge_cases = list(before["edge_cases"])
        self._ts = 100_000  # metric timestamps after the first pass's
        version = self.mlflow.__version__
        exp0 = self.ids["experiments"][0]
        r = self.new_run(exp0, f"upgraded-{version}")
        self.log_run_data(r.info.run_id, params={"fx.era": version}, tags={"fx.era": version})
        self.log_metrics(r.info.run_id, [("fx.loss", 0.25, self.ts(), 0)])
        self.finish(r.info.run_id)
        exp_id = self.create_experiment(f"fx-upgraded-{version}", {"fx.era": version})
        self.ids["experiments"].append(exp_id)
        r = self.new_run(exp_id, "run-of-the-upgraded-era")
        self.log_metrics(r.info.run_id, [("fx.m", 1.0, self.ts(), 0)])
        self.finish(r.info.run_id)
        s3_runs = client.search_runs([self.ids["s3_experiment"]])
        client.delete_run(s3_runs[0].info.run_id)
        self.counts["runs_deleted"] += 1
        self.edge_cases += [f"run of MLflow {version} in an experiment of MLflow "
                            f"{before['mlflow_version']}", f"experiment made by MLflow {version}",
                            f"run of MLflow {before['mlflow_version']} deleted by MLflow {version}"]
        gone = self.ids.get("deleted_experiment")
        if gone and client.get_experiment(gone).lifecycle_stage != "deleted":
            # MLflow 1.x (and 2.1) left "lifecycle_stage: active" in a deleted experiment's
            # meta.yaml and went by the .trash folder; later readers go by the file: ask this
            # one how it sees it.
            self.counts["experiments_deleted"] -= 1
            self.edge_cases.append(f"experiment deleted by MLflow {before['mlflow_version']} "
                                   f"is active to MLflow {version} (meta.yaml in .trash says so)")
        self.exp0 = {"id": exp0, "runs": self.ids["exp0_runs"], "datasets": []}
        if self.features["logged_models"]:
            self.build_logged_models()
        if self.features["registry"]:
            self.build_registry()
        if self.features["prompts"]:
            self.build_prompts()
        self.verify_traces_on_disk()
        mine = self.summary(time.monotonic() - t0)
        summary = dict(before, mlflow_version=version, counts=mine["counts"], ids=self.ids,
                       edge_cases=self.edge_cases, eras=before["eras"] + mine["eras"])
        summary["not_supported"] = sorted(set(before["not_supported"]) & set(mine["not_supported"]))
        summary["build_seconds"] = round(before["build_seconds"] + mine["build_seconds"], 2)
        return summary

    # ------------------------------------------------------------------ summary
    def summary(self, seconds: float) -> dict:
        return {
            "generator": "scripts/generate_migration_fixtures.py",
            "mlflow_version": self.mlflow.__version__,
            "python": sys.version.split()[0],
            # Every MLflow that wrote into the tree, in order (the first made it; an --upgrade
            # pass adds to it), with what each could not write.
            "eras": [{"mlflow_version": self.mlflow.__version__,
                      "python": sys.version.split()[0], "skipped": self.skipped,
                      "build_seconds": round(seconds, 2)}],
            "size": self.size,
            "tracking_uri": self.uri,
            "layout": {"filestore": "mlruns", "summary": "fixture_summary.json"},
            "features": self.features,
            "plan": SIZES[self.size],
            "plan_notes": PLAN_NOTES,
            "counts": dict(sorted(self.counts.items())),
            "ids": self.ids,
            "edge_cases": self.edge_cases,
            "assessment_kinds": list(ASSESSMENT_KINDS) if self.features["assessments"] else [],
            "not_supported": [k for k in ("traces", "trace_request_metadata", "assessments",
                                          "logged_models", "model_inputs", "model_outputs",
                                          "metric_dataset_link", "prompts",
                                          "prompt_response_format", "prompt_model_config",
                                          "prompt_chat_template") if not self.features.get(k)],
            "build_seconds": round(seconds, 2),
        }


ASSESSMENT_KINDS = ("feedback:bool", "expectation:dict", "feedback:number", "expectation:list",
                    "feedback:string", "expectation:string", "feedback:error",
                    "expectation:number", "expectation:bool", "feedback:list",
                    "feedback:dict", "feedback:int")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--output", required=True, type=Path, help="folder to create (must be "
                    "empty or absent); the FileStore goes to OUTPUT/mlruns")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--upgrade", action="store_true",
                    help="OUTPUT holds a tree this script made with an older MLflow: add to it "
                    "what a user who upgraded to this MLflow adds (a model registry, prompts, "
                    "logged models where this MLflow has them; a run, an experiment, a deletion)")
    args = ap.parse_args(argv)
    out: Path = args.output.resolve()
    before = None
    if args.upgrade:
        try:
            before = json.loads((out / "fixture_summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"error: --upgrade needs a tree made by this script in {out}: {exc}",
                  file=sys.stderr)
            return 2
        args.size = before["size"]
    elif out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    real_stdout = sys.stdout
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON only
            gen = Generator(out, args.size)
            log(f"mlflow {gen.mlflow.__version__}, size {args.size}, "
                f"{'upgrading' if before else 'into'} {out}")
            summary = gen.upgrade(before) if before else gen.build()
    except FixtureError as exc:
        print(f"FIXTURE GENERATION FAILED: {exc}", file=sys.stderr)
        return 3
    summary["total_seconds_in_process"] = round(time.monotonic() - t0, 2)
    era = summary["eras"][-1]
    log(f"MLflow {era['mlflow_version']} wrote, the tree now holds: "
        + ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
        + f"; skipped: {', '.join(era['skipped']) or 'nothing'}")
    text = json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=False)
    (out / "fixture_summary.json").write_text(text + "\n", encoding="utf-8")
    real_stdout.write(text + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
