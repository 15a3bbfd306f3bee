#!/usr/bin/env python
"""Read a fixture tree back through MlflowClient and compare with its summary.

Standalone (standard library + mlflow). Run it under the SAME MLflow version that
generated the tree:

    uv run --with mlflow==3.17.2 --no-project python -I scripts/check_fixture_tree.py DIR

DIR is the --output folder of scripts/generate_migration_fixtures.py: it holds
DIR/mlruns and DIR/fixture_summary.json. Exit 0 when every count read back equals
the generator's count (and the structural edge cases hold), 1 on any mismatch,
2 on bad usage. Prints the read-back counts as JSON on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
for _var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
             "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
    os.environ.pop(_var, None)


def custom(tags: dict) -> int:
    return sum(1 for k in tags if not k.startswith("mlflow."))


def fx(d: dict) -> int:
    return sum(1 for k in d if k.startswith("fx."))


def paged(fn, *args, **kwargs):
    """Yield every item of a PagedList-returning search (unpaged in older MLflow: MLflow 1.0's
    search_runs, 2.1's search_model_versions, which take no max_results either)."""
    try:
        accepted = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        accepted = {"page_token": None}
    if "page_token" not in accepted:
        yield from fn(*args, **{k: v for k, v in kwargs.items() if k in accepted})
        return
    token = None
    while True:
        page = fn(*args, page_token=token, **kwargs)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def read_back(root: Path, problems: list[str], summary: dict) -> Counter:
    import mlflow
    from mlflow.entities import ViewType

    try:
        from mlflow import MlflowClient
    except ImportError:  # MLflow < 1.26
        from mlflow.tracking import MlflowClient

    uri = root.resolve().as_uri()
    # Explicit client URIs are not enough: in MLflow 3.17.2 MlflowClient.search_prompts and
    # load_prompt also open the *global* tracking URI (default sqlite:///mlflow.db in the cwd).
    mlflow.set_tracking_uri(uri)
    if hasattr(mlflow, "set_registry_uri"):  # MLflow >= 1.2
        mlflow.set_registry_uri(uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    else:
        client = MlflowClient(tracking_uri=uri)
    c: Counter = Counter()

    # experiments (MLflow < 1.28 lists them, unpaged)
    if hasattr(client, "search_experiments"):
        exps = list(paged(client.search_experiments, view_type=ViewType.ALL, max_results=1000))
    else:
        exps = list(client.list_experiments(view_type=ViewType.ALL))
    c["experiments"] = len(exps)
    for e in exps:
        c["experiment_tags"] += custom(getattr(e, "tags", None) or {})  # MLflow 1.0: no tags
        if e.lifecycle_stage == "deleted":
            c["experiments_deleted"] += 1
        # 1, 2, 3 in MLflow 1.x trees, 18 random digits from 2.0 (2.1 has them) on
        if not e.experiment_id.isdigit():
            problems.append(f"experiment id {e.experiment_id!r} is not a number")
    s3 = summary["ids"].get("s3_experiment")
    if s3:
        loc = client.get_experiment(s3).artifact_location
        if not loc.startswith("s3://"):
            problems.append(f"s3 experiment {s3} has artifact location {loc}")
    deleted = summary["ids"].get("deleted_experiment")
    if deleted and not (root / ".trash" / deleted).is_dir():
        problems.append(f"deleted experiment {deleted} is not in .trash")
    exp_ids = [e.experiment_id for e in exps]
    live_ids = [e.experiment_id for e in exps if e.lifecycle_stage == "active"]

    # runs, params, tags, metrics, inputs, outputs
    datasets = set()
    edge_seen = False
    for eid in exp_ids:
        runs = list(paged(client.search_runs, [eid], run_view_type=ViewType.ALL,
                          max_results=1000))
        for run in runs:
            c["runs"] += 1
            c[f"runs_{run.info.status.lower()}"] += 1
            if run.info.lifecycle_stage == "deleted":
                c["runs_deleted"] += 1
            c["params"] += len(run.data.params)
            # MLflow < 1.30 has no run name but the mlflow.runName tag
            name = getattr(run.info, "run_name", None) or run.data.tags.get("mlflow.runName")
            if name == "edge-values-数据-🔥":
                edge_seen = True
                check_edge_values(client, run, summary, problems)
            c["run_tags"] += custom(run.data.tags)
            for key in run.data.metrics:
                c["metric_points"] += len(client.get_metric_history(run.info.run_id, key))
            inputs = getattr(run, "inputs", None)  # MLflow >= 2.4
            for di in (inputs.dataset_inputs if inputs else []):
                c["inputs"] += 1
                c["input_tags"] += len(di.tags)
                datasets.add((eid, di.dataset.name, di.dataset.digest))
            c["model_inputs"] += len(getattr(inputs, "model_inputs", None) or [])
            outputs = getattr(run, "outputs", None)
            c["model_outputs"] += len(getattr(outputs, "model_outputs", None) or [])
    c["datasets"] = len(datasets)
    if not edge_seen:
        problems.append("edge-values run not found")

    # traces and assessments
    if hasattr(client, "search_traces"):
        for eid in live_ids:
            for tr in paged(client.search_traces, [eid], max_results=100):
                info = tr.info
                tid = getattr(info, "trace_id", None) or info.request_id
                full = client.get_trace(tid)
                c["traces"] += 1
                c["trace_spans"] += len(full.data.spans)
                c["trace_tags"] += fx(full.info.tags)
                meta = getattr(full.info, "trace_metadata", None)
                if meta is None:
                    meta = getattr(full.info, "request_metadata", {}) or {}
                c["trace_request_metadata"] += fx(meta)
                for a in getattr(full.info, "assessments", None) or []:
                    c["assessments"] += 1
                    c["assessments_feedback" if a.feedback is not None
                      else "assessments_expectation"] += 1
                if not (root / eid / "traces" / tid / "trace_info.yaml").is_file():
                    problems.append(f"trace {tid} has no trace_info.yaml on disk")

    # logged models
    if hasattr(client, "search_logged_models") and live_ids:
        for m in paged(client.search_logged_models, experiment_ids=live_ids, max_results=100):
            c["logged_models"] += 1
            c["logged_model_params"] += len(m.params)
            c["logged_model_tags"] += custom(m.tags)
            c["logged_model_metrics"] += len(m.metrics or [])
            # The reader shows the latest point of each series; the files hold every line.
            folder = root / m.experiment_id / "models" / m.model_id / "metrics"
            c["logged_model_metric_points"] += sum(
                len(f.read_text(encoding="utf-8").splitlines()) for f in folder.rglob("*") if f.is_file())

    # registry: registered models (prompts are registered models tagged as prompts); none in
    # trees of MLflow < 2.1, whose registry refuses file: URIs
    if (root / "models").is_dir():
        read_registry(client, c)
    return c


def read_registry(client, c: Counter) -> None:
    prompt_names = []
    for rm in paged(client.search_registered_models, max_results=1000):
        if rm.tags.get("mlflow.prompt.is_prompt") == "true":
            prompt_names.append(rm.name)  # 2.x lists prompts here; 3.x filters them out
            continue
        c["registered_models"] += 1
        c["registered_model_tags"] += custom(rm.tags)
        c["aliases"] += len(getattr(rm, "aliases", None) or {})  # MLflow >= 2.3
        for mv in paged(client.search_model_versions, f"name='{rm.name}'", max_results=1000):
            c["model_versions"] += 1
            c["model_version_tags"] += custom(mv.tags)
            if mv.current_stage not in (None, "None"):
                c["stage_transitions"] += 1
    if hasattr(client, "search_prompts"):
        prompt_names += [p.name for p in paged(client.search_prompts, max_results=1000)]
    else:  # 2.x: the file store hides prompts unless the filter names the prompt tag
        prompt_names += [rm.name for rm in paged(
            client.search_registered_models, "tag.`mlflow.prompt.is_prompt` = 'true'",
            max_results=1000)]
    for name in sorted(set(prompt_names)):
        c["prompts"] += 1
        v = 1
        while True:
            try:
                pv = client.load_prompt(name, version=v)
            except Exception:  # noqa: BLE001 - any "no such version" ends the scan
                pv = None
            if pv is None:
                break
            c["prompt_versions"] += 1
            c["prompt_aliases"] += len(getattr(pv, "aliases", None) or [])
            v += 1


def check_edge_values(client, run, summary: dict, problems: list[str]) -> None:
    """Values the migration must carry exactly, read back from the edge-values run."""
    m, p = run.data.metrics, run.data.params
    if not math.isnan(m.get("fx.nan", 0.0)):
        problems.append(f"fx.nan read back as {m.get('fx.nan')}")
    infinite = summary["features"].get("infinite_metrics", True)  # MLflow 1.0 refuses them
    if infinite and (m.get("fx.pos_inf") != math.inf or m.get("fx.neg_inf") != -math.inf):
        problems.append(f"±Inf read back as {m.get('fx.pos_inf')}, {m.get('fx.neg_inf')}")
    want = summary["features"]["max_param_val_length"]
    if len(p.get("fx.long_param", "")) != want:
        problems.append(f"fx.long_param has {len(p.get('fx.long_param', ''))} chars, want {want}")
    if "fx/deep/nested/param" not in p or "fx/nested/tag" not in run.data.tags:
        problems.append("nested ('/') param or tag key missing")
    dup = [(x.timestamp, x.value, x.step)
           for x in client.get_metric_history(run.info.run_id, "fx.dup_step")]
    if len(dup) != 3 or len(set(dup)) != 2:
        problems.append(f"fx.dup_step history {dup}: want an exact duplicate + another value")
    if m.get("fx.dup_step") != 2.5:
        problems.append(f"latest fx.dup_step is {m.get('fx.dup_step')}, want 2.5")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="check a generated fixture tree")
    ap.add_argument("dir", type=Path, help="generator --output folder")
    args = ap.parse_args(argv)
    summary_path = args.dir / "fixture_summary.json"
    root = args.dir / "mlruns"
    if not summary_path.is_file() or not root.is_dir():
        print(f"error: expected {summary_path} and {root}", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    real_stdout = sys.stdout
    problems: list[str] = []
    with contextlib.redirect_stdout(sys.stderr):
        import mlflow

        if mlflow.__version__ != summary["mlflow_version"]:
            problems.append(f"tree made by MLflow {summary['mlflow_version']}, "
                            f"read with {mlflow.__version__}")
        got = read_back(root, problems, summary)
    # A deleted model version is hidden from MLflow's reader: nothing reads it back.
    expected = {k: v for k, v in summary["counts"].items() if k != "model_versions_deleted"}
    for key in sorted(set(expected) | set(got)):
        if expected.get(key, 0) != got.get(key, 0):
            problems.append(f"{key}: summary says {expected.get(key, 0)}, read back "
                            f"{got.get(key, 0)}")
    real_stdout.write(json.dumps({"mlflow_version": mlflow.__version__, "dir": str(args.dir),
                                  "read_back": dict(sorted(got.items())),
                                  "problems": problems}, indent=2, ensure_ascii=False) + "\n")
    for p in problems:
        print(f"MISMATCH: {p}", file=sys.stderr)
    print(f"{'FAIL' if problems else 'OK'}: {len(expected)} counts compared, "
          f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
