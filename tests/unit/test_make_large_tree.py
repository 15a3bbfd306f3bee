"""scripts/make_large_tree.py writes trees that MLflow's own FileStore reads back as intended.

The generator runs as a subprocess under ``python -S`` (no site-packages: proves it is
standard-library only). What it meant to write comes from the script's own pure planner
(``TreePlan``); what it did write is read through ``MlflowClient`` on the file store.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_large_tree.py"

# tiny plus one of everything; 3 experiments so one lands in .trash and 6 runs stay live; per
# experiment one trace in each layout (2.x, 3.x), 12 assessments per trace (every kind, one
# overriding ones), logged models with 4-step metric histories
ARGS = [
    "--shape", "tiny", "--experiments", "3", "--runs", "9", "--params", "5", "--tags", "7",
    "--datasets", "2", "--inputs", "2", "--traces", "2", "--logged-models", "2",
    "--registered-models", "2", "--versions-per-model", "2", "--assessments", "12",
    "--v2-trace-fraction", "0.5", "--model-metric-steps", "4",
    "--deleted-experiment-fraction", "0.34", "--deleted-run-fraction", "0.34",
    "--nan-fraction", "0.15", "--inf-fraction", "0.15", "--seed", "7", "--workers", "1",
]  # fmt: skip
STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


def _load_module():
    spec = importlib.util.spec_from_file_location("make_large_tree", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_large_tree", module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return sys.modules["make_large_tree"]


mlt = _load_module()


def _generate(out: Path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-S", str(SCRIPT), "--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            h.update(f"D {rel}\n".encode())
        else:
            data = path.read_bytes()
            h.update(f"F {rel} {len(data)}\n".encode())
            h.update(data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("large-tree") / "mlruns"
    summary = _generate(root, *ARGS)
    plan = mlt.TreePlan(mlt.build_config(mlt.parse_args(["--output", str(root), *ARGS])))
    return root, summary, plan


@pytest.fixture
def client(tree, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    root = tree[0]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    # The registry FileStore calls a bare MlflowClient() to resolve a version's model_id.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", root.as_uri())
    monkeypatch.chdir(tmp_path)
    return MlflowClient(tracking_uri=root.as_uri(), registry_uri=root.as_uri())


def _all_experiment_ids(plan) -> list[str]:
    return ["0"] + [e.experiment_id for e in plan.experiments]


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---------------------------------------------------------------------------------------------


def test_presets_overrides_and_scale():
    cfg = mlt.build_config(mlt.parse_args(["--output", "x", "--shape", "metric-heavy"]))
    sizes = (cfg.experiments, cfg.runs, cfg.params, cfg.tags, cfg.metric_keys)
    assert sizes == (4, 2000, 10, 5, 10)
    assert (cfg.min_steps, cfg.max_steps) == (50, 100)
    cfg = mlt.build_config(mlt.parse_args(["--output", "x", "--shape", "wide", "--params", "3"]))
    sizes = (cfg.experiments, cfg.runs, cfg.params, cfg.tags, cfg.metric_keys)
    assert sizes == (10, 10000, 3, 10, 5)
    assert (cfg.min_steps, cfg.max_steps) == (1, 1)
    cfg = mlt.build_config(mlt.parse_args(["--output", "x", "--shape", "tiny", "--scale", "10"]))
    assert (cfg.experiments, cfg.runs, cfg.traces, cfg.logged_models) == (1, 30, 10, 10)
    # MLflow's fs2db generator at "full": 600 traces, 12,000 assessments, 200 logged models
    cfg = mlt.build_config(mlt.parse_args(["--output", "x", "--shape", "trace-heavy"]))
    total = (cfg.runs, cfg.experiments * cfg.traces, cfg.experiments * cfg.traces * cfg.assessments,
             cfg.experiments * cfg.logged_models)  # fmt: skip
    assert total == (1200, 600, 12000, 200)
    assert (cfg.v2_trace_fraction, cfg.model_metric_steps) == (0.5, 50)
    args = ["--output", "x", "--shape", "trace-heavy", "--scale", "0.1"]
    cfg = mlt.build_config(mlt.parse_args(args))
    assert (cfg.runs, cfg.traces, cfg.logged_models, cfg.assessments) == (120, 3, 1, 20)


def test_summary_counts_match_plan(tree):
    _, summary, plan = tree
    runs = list(plan.runs())
    counts = summary["counts"]
    assert counts["experiments"] == 4
    assert counts["deleted_experiments"] == 1 == sum(e.deleted for e in plan.experiments)
    assert counts["runs"] == 9
    assert counts["deleted_runs"] == sum(r.deleted for r in runs)
    assert len(plan.deleted_run_indices) == 2  # 0.34 of the 6 runs in live experiments
    assert counts["params"] == 9 * 5 and counts["tags"] == 9 * 7
    assert counts["metric_rows"] == sum(len(p) for r in runs for p in r.metric_points().values())
    assert counts["nan_values"] > 0 and counts["inf_values"] > 0
    assert counts["datasets"] == 6 and counts["inputs"] == 18
    assert counts["traces"] == 6 and counts["logged_models"] == 6 and counts["outputs"] == 6
    assert counts["v2_traces"] == 3 and counts["assessments"] == 6 * 12
    assert counts["assessments_expectation"] == 6 * 4
    assert counts["logged_model_metrics"] == 6 * 4
    assert counts["registered_models"] == 2 and counts["model_versions"] == 4


def test_experiments(tree, client):
    from mlflow.entities import ViewType

    _, _, plan = tree
    found = {e.experiment_id: e for e in client.search_experiments(view_type=ViewType.ALL)}
    assert set(found) == set(_all_experiment_ids(plan))
    assert found["0"].name == "Default" and found["0"].lifecycle_stage == "active"
    for exp in plan.experiments:
        got = found[exp.experiment_id]
        assert len(exp.experiment_id) == 18 and exp.experiment_id.isdigit()
        assert got.name == exp.name
        assert got.lifecycle_stage == ("deleted" if exp.deleted else "active")
        assert got.tags == exp.tags
        assert got.creation_time == exp.creation_time
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    want = [e.experiment_id for e in plan.experiments if e.deleted]
    assert [e.experiment_id for e in deleted] == want


def test_runs_params_tags_and_info(tree, client):
    from mlflow.entities import ViewType

    _, _, plan = tree
    found = client.search_runs(
        _all_experiment_ids(plan), run_view_type=ViewType.ALL, max_results=1000
    )
    by_id = {r.info.run_id: r for r in found}
    assert len(by_id) == 9
    for spec in plan.runs():
        run = by_id[spec.run_id]
        assert run.info.experiment_id == spec.experiment.experiment_id
        assert run.info.run_name == spec.run_name
        assert run.info.status == STATUS[spec.status]
        assert run.info.start_time == spec.start_time
        assert run.info.end_time == spec.end_time
        assert run.info.lifecycle_stage == spec.lifecycle_stage
        assert run.info.user_id == mlt.USER
        assert run.data.params == spec.params
        assert run.data.tags == spec.tags
        assert run.data.tags["mlflow.runName"] == spec.run_name
        tail = f"/{spec.experiment.experiment_id}/{spec.run_id}/artifacts"
        assert run.info.artifact_uri.endswith(tail)
    # a multi-line param value and a nested ("a/b") key made it through unchanged
    first = plan.run(0)
    assert "\n" in first.params["param_02"]
    assert "nested/param_04" in by_id[first.run_id].data.params


def test_metric_histories_with_nan_and_inf(tree, client):
    _, _, plan = tree
    nan = inf = 0
    for spec in plan.runs():
        points = spec.metric_points()
        assert set(client.get_run(spec.run_id).data.metrics) == set(points)
        for key, expected in points.items():
            history = client.get_metric_history(spec.run_id, key)
            assert len(history) == len(expected)
            for metric, (ts, value, step) in zip(history, expected):
                assert (metric.timestamp, metric.step) == (ts, step)
                assert _same_float(metric.value, value), (spec.run_id, key, metric, value)
                nan += math.isnan(metric.value)
                inf += math.isinf(metric.value)
    assert nan > 0 and inf > 0


def test_deleted_runs(tree, client):
    from mlflow.entities import ViewType

    _, _, plan = tree
    live_ids = [e.experiment_id for e in plan.experiments if not e.deleted]
    def run_ids(view):
        return {r.info.run_id for r in client.search_runs(live_ids, run_view_type=view)}

    active, deleted = run_ids(ViewType.ACTIVE_ONLY), run_ids(ViewType.DELETED_ONLY)
    for i in plan.deleted_run_indices:
        spec = plan.run(i)
        assert not spec.experiment.deleted
        assert spec.run_id in deleted and spec.run_id not in active
        assert client.get_run(spec.run_id).info.lifecycle_stage == "deleted"
    assert len(deleted) == 2 and len(active) == 4
    # runs of a deleted experiment were marked deleted with it
    for spec in plan.runs():
        if spec.experiment.deleted:
            assert client.get_run(spec.run_id).info.lifecycle_stage == "deleted"
            if spec.index not in plan.deleted_run_indices:
                assert spec.deleted_time == spec.experiment.deletion_time


def test_dataset_inputs_and_model_outputs(tree, client):
    _, _, plan = tree
    for spec in plan.runs():
        run = client.get_run(spec.run_id)
        got = sorted(
            (d.dataset.name, d.dataset.digest, d.dataset.source, d.dataset.schema,
             d.dataset.profile, d.dataset.source_type, tuple((t.key, t.value) for t in d.tags))
            for d in run.inputs.dataset_inputs
        )  # fmt: skip
        want = sorted(
            (ds.name, ds.digest, ds.meta["source"], ds.meta["schema"], ds.meta["profile"],
             ds.meta["source_type"], (("mlflow.data.context", context),))
            for ds, context in spec.inputs
        )  # fmt: skip
        assert got == want and len(got) == 2
        assert sorted(o.model_id for o in run.outputs.model_outputs) == sorted(
            lm.model_id for lm in spec.outputs
        )
    # the long schema strings were folded at 80 columns in meta.yaml and still read back whole
    assert any(len(ds.meta["schema"]) > 80 for e in plan.experiments for ds in e.datasets)


def test_traces(tree, client):
    _, _, plan = tree
    # (search_traces(experiment_ids=...) is deprecated in favour of locations=)
    infos = client.search_traces(locations=_all_experiment_ids(plan), include_spans=False)
    by_id = {t.info.trace_id: t.info for t in infos}
    assert set(by_id) == {t.trace_id for t in plan.traces}
    for tr in plan.traces:
        info = by_id[tr.trace_id]
        assert info.experiment_id == tr.experiment.experiment_id
        assert info.request_time == tr.request_time_ms
        assert info.execution_duration == tr.duration_ms
        assert info.state.value == tr.state
        assert info.request_preview == tr.request_preview
        assert info.response_preview == tr.response_preview
        assert info.tags == tr.tags
        assert info.trace_metadata == tr.request_metadata
        assert info.trace_metadata["mlflow.trace_schema.version"] == ("2" if tr.v2 else "3")
    for v2 in (True, False):  # both span layouts read back
        live = next(t for t in plan.traces if not t.experiment.deleted and t.v2 == v2)
        trace = client.get_trace(live.trace_id)
        assert [s.name for s in trace.data.spans] == ["predict"]
        assert trace.data.spans[0].span_id == live.span_id.hex()


def _assessment_value(a):
    from mlflow.entities import Expectation

    return a.value if isinstance(a, Expectation) else a.feedback.value


def test_assessments(tree, client):
    """Every kind reads back through MLflow; valid and overrides as the file holds them."""
    import yaml

    root, _, plan = tree
    kinds = set()
    infos = client.search_traces(locations=_all_experiment_ids(plan), include_spans=False)
    by_trace = {t.info.trace_id: t.info for t in infos}
    for tr in plan.traces:
        got = {a.assessment_id: a for a in by_trace[tr.trace_id].assessments}
        assert set(got) == {a.assessment_id for a in tr.assessments}
        folder = next(root.glob(f"**/traces/{tr.trace_id}/assessments"))
        for want in tr.assessments:
            a = got[want.assessment_id]
            assert (a.name, a.trace_id, a.span_id) == (want.name, tr.trace_id, want.span_id)
            assert (a.source.source_type, a.source.source_id) == (want.source_type, want.source_id)
            assert a.create_time_ms == a.last_update_time_ms == want.create_ms
            assert (a.rationale, a.metadata) == (want.rationale, want.metadata)
            assert _assessment_value(a) == want.value
            assert (a.feedback is not None) == (want.kind == "feedback")
            if want.error:
                assert a.feedback.error.error_code == want.error["error_code"]
            on_disk = yaml.safe_load((folder / f"{want.assessment_id}.yaml").read_text())
            assert on_disk["valid"] == want.valid and on_disk.get("overrides") == want.overrides
            if want.kind == "expectation" and isinstance(want.value, (dict, list)):
                assert "serialized_value" in on_disk["expectation"]
            kinds.add((want.kind, type(want.value).__name__, bool(want.error), want.valid))
    assert len(kinds) >= 9  # bool/float/str/dict feedback, error, str/float/dict/list expectations
    overridden = [a for tr in plan.traces for a in tr.assessments if not a.valid]
    assert len(overridden) == 6  # one per trace: the 10th assessment overrides the 1st


def test_logged_models(tree, client):
    from mlflow.store.tracking.file_store import FileStore

    root, _, plan = tree
    found = client.search_logged_models(experiment_ids=_all_experiment_ids(plan), max_results=100)
    by_id = {m.model_id: m for m in found}
    assert set(by_id) == {lm.model_id for lm in plan.logged_models}
    for lm in plan.logged_models:
        model = by_id[lm.model_id]
        assert model.name == lm.name
        assert model.experiment_id == lm.experiment.experiment_id
        assert model.source_run_id == lm.source_run_id
        assert model.status.value == "READY"
        assert model.model_type == lm.model_type
        assert model.params == lm.params
        assert model.tags == lm.tags
        # FileStore's reader shows only the latest point; the file holds the whole history.
        [metric] = model.metrics
        ts, value, step = max(lm.metric_points, key=lambda p: (p[2], p[0], p[1]))
        assert (metric.key, metric.value, metric.step, metric.timestamp, metric.run_id) == (
            lm.metric_key, value, step, ts, lm.source_run_id,
        )  # fmt: skip
        assert len(lm.metric_points) == 4
        path = next(root.glob(f"**/models/{lm.model_id}/metrics/{lm.metric_key}"))
        history = [
            FileStore._get_model_metric_from_line(lm.model_id, lm.metric_key, line)
            for line in path.read_text().splitlines()
        ]
        assert [(m.timestamp, m.value, m.step) for m in history] == lm.metric_points
        assert {m.run_id for m in history} == {lm.source_run_id or "0" * 32}


def test_registered_models_versions_and_aliases(tree, client):
    _, _, plan = tree
    assert sorted(m.name for m in client.search_registered_models()) == [
        rm.name for rm in plan.registered_models
    ]
    for rm in plan.registered_models:
        got = client.get_registered_model(rm.name)
        assert got.description == rm.description
        assert got.tags == rm.tags
        assert got.aliases == rm.aliases
        assert got.creation_timestamp == rm.creation_timestamp
        versions = {int(v.version): v for v in client.search_model_versions(f"name='{rm.name}'")}
        assert set(versions) == {mv.version for mv in rm.versions}
        for mv in rm.versions:
            v = versions[mv.version]
            assert (v.source, v.run_id, v.model_id) == (mv.source, mv.run_id, mv.model_id)
            assert v.tags == mv.tags and v.description == mv.description
            assert v.current_stage == "None" and v.status == "READY"
        champion = client.get_model_version_by_alias(rm.name, "champion")
        assert str(champion.version) == rm.aliases["champion"]


def test_yaml_files_are_byte_identical_to_mlflows_write_yaml(tree, tmp_path):
    import yaml

    from mlflow.utils.yaml_utils import write_yaml

    root = tree[0]
    checked = 0
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        out = tmp_path / f"{checked}.yaml"
        write_yaml(str(tmp_path), out.name, yaml.safe_load(text))
        assert out.read_text(encoding="utf-8") == text, path
        checked += 1
    assert checked > 50


def test_same_seed_gives_byte_identical_trees(tmp_path):
    args = ["--shape", "tiny", "--runs", "240", "--experiments", "3", "--datasets", "1",
            "--inputs", "1", "--traces", "1", "--logged-models", "1", "--registered-models", "1",
            "--deleted-run-fraction", "0.1", "--nan-fraction", "0.05",
            "--artifact-root", "file:///fixed/mlruns", "--seed", "3"]  # fmt: skip
    a = _tree_digest_of(tmp_path / "a", *args, "--workers", "1")
    b = _tree_digest_of(tmp_path / "b", *args, "--workers", "2")  # worker count never matters
    c = _tree_digest_of(tmp_path / "c", *args[:-1], "4", "--workers", "1")
    assert a == b
    assert a != c


def _tree_digest_of(out: Path, *args: str) -> str:
    _generate(out, *args)
    return _tree_digest(out)


def test_etl_migrate_migrates_and_verifies_the_tree(tree, tmp_path, monkeypatch):
    """The default command (verification on) accepts the tree; MLflow reads it from the database."""
    from mlflow import MlflowClient

    root, summary, plan = tree
    db = tmp_path / "target.db"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    proc = subprocess.run(
        [sys.executable, "-m", "etl", "--source", str(root), "--target", f"sqlite:///{db}",
         "--report", str(tmp_path / "report.json"), "-q"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    target = json.loads((tmp_path / "report.json").read_text())["counts"]["target"]
    counts = summary["counts"]
    assert target["assessments"] == counts["assessments"]
    assert target["trace_info"] == counts["traces"]
    assert target["logged_model_metrics"] == counts["logged_model_metrics"]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    infos = client.search_traces(locations=_all_experiment_ids(plan), include_spans=False)
    got = {t.info.trace_id: sorted(a.assessment_id for a in t.info.assessments) for t in infos}
    assert got == {tr.trace_id: sorted(a.assessment_id for a in tr.assessments) for tr in plan.traces}
