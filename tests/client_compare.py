"""Compare two MLflow backends entity by entity through MlflowClient, field by field.

The source client reads the FileStore, the target client the migrated database; every
assertion message names the entity and field, so a failing test says what differs. ``id_map``
(old experiment id -> new, as the run's report gives it) is how a target that renumbered
experiments (PostgreSQL: 32-bit ids) is compared: every experiment id goes through it.
"""

from __future__ import annotations

import math
from pathlib import Path

from mlflow.entities import ViewType

MAX = 50_000


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a):
            # The SQL store keeps +-Inf as the largest finite double.
            return b == math.copysign(1.7976931348623157e308, a) or a == b
        return a == b
    return a == b


def assert_fields(what: str, src, dst, fields) -> None:
    for f in fields:
        a, b = getattr(src, f), getattr(dst, f)
        assert _same_value(a, b), f"{what}: field {f!r} differs: source={a!r} target={b!r}"


def assert_mapping(what: str, src: dict, dst: dict) -> None:
    assert set(src) == set(dst), f"{what}: keys differ: only source={set(src) - set(dst)}, only target={set(dst) - set(src)}"
    for k in src:
        assert _same_value(src[k], dst[k]), f"{what}[{k!r}]: source={src[k]!r} target={dst[k]!r}"


def mapped(id_map: dict | None, exp_id: str) -> str:
    return (id_map or {}).get(exp_id, exp_id)


def experiments(client) -> dict:
    out, token = {}, None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        out.update({e.experiment_id: e for e in page})
        token = page.token
        if not token:
            return out


def listed_stages(client) -> dict[str, str]:
    """experiment id -> its lifecycle stage as the reader's listings show it: what it lists as
    deleted is deleted, whatever get_experiment says of it (a folder MLflow 1.x moved to .trash/
    with a meta.yaml still saying active)."""
    active = {e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000)}
    return {i: e.lifecycle_stage if i in active else "deleted" for i, e in experiments(client).items()}


def compare_experiments(src, dst, id_map=None) -> int:
    a, b = experiments(src), experiments(dst)
    assert {mapped(id_map, i) for i in a} == set(b), f"experiment ids differ: {set(a)} vs {set(b)}"
    stages = listed_stages(src)
    for exp_id, e in a.items():
        other = b[mapped(id_map, exp_id)]
        assert_fields(f"experiment {exp_id}", e, other,
                      ["name", "artifact_location", "creation_time", "last_update_time"])
        assert other.lifecycle_stage == stages[exp_id], \
            f"experiment {exp_id} lifecycle_stage: {stages[exp_id]} vs {other.lifecycle_stage}"
        assert_mapping(f"experiment {exp_id} tags", e.tags, other.tags)
    return len(a)


def runs(client, exp_id: str) -> dict:
    return {
        r.info.run_id: r
        for r in client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=MAX)
    }


RUN_INFO_FIELDS = ["run_id", "run_name", "user_id", "status", "start_time",
                   "end_time", "artifact_uri", "lifecycle_stage"]


def history(client, run_id: str, key: str, points=None) -> list:
    points = {(m.step, m.timestamp, repr(m.value)): m
              for m in (client.get_metric_history(run_id, key) if points is None else points)}
    return [points[k] for k in sorted(points, key=lambda k: (k[0], k[1]))]


def file_metric_points(src, info, key: str) -> tuple[list, bool]:
    """(every point of a run metric as its file holds it, whether any line has 5 fields).

    MLflow's FileStore reader reports step 0 for a 5-field line (``ts value step dataset_name
    dataset_digest``) although the file holds the step; the target keeps the file's step
    (DESIGN.md, "files, not views"), and so does this: each line through MLflow's own line
    parser, the step of a 5-field line taken from the line. Nothing else is changed, so a
    target that differs from the file in any other way still fails the comparison."""
    from mlflow.entities import Metric
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.file_utils import read_file_lines

    parent, _ = src._tracking_client.store._get_run_files(info, "metric")
    points, five = [], False
    for line in read_file_lines(parent, key):
        m = FileStore._get_metric_from_line(info.run_id, key, line, info.experiment_id)
        if m.dataset_name is not None:
            five = True
            m = Metric(key, m.value, m.timestamp, int(line.strip().split(" ")[2]), run_id=info.run_id)
        points.append(m)
    return points, five


def compare_runs(src, dst, id_map=None) -> int:
    count = 0
    for exp_id in experiments(src):
        a, b = runs(src, exp_id), runs(dst, mapped(id_map, exp_id))
        assert set(a) == set(b), f"runs of experiment {exp_id} differ: {set(a) ^ set(b)}"
        for run_id, r in a.items():
            t = b[run_id]
            assert_fields(f"run {run_id}", r.info, t.info, RUN_INFO_FIELDS)
            assert mapped(id_map, r.info.experiment_id) == t.info.experiment_id, f"run {run_id} experiment_id"
            assert_mapping(f"run {run_id} params", r.data.params, t.data.params)
            assert_mapping(f"run {run_id} tags", r.data.tags, t.data.tags)
            latest = dict(r.data.metrics)
            files = {}
            for key in latest:
                points, five = file_metric_points(src, r.info, key)
                if five:
                    # The reader's own latest rule (FileStore._get_metric_from_file) over the
                    # file's steps.
                    latest[key] = max(points, key=lambda m: (m.step, m.timestamp, m.value)).value
                    files[key] = points
            assert_mapping(f"run {run_id} latest metrics", latest, t.data.metrics)
            for key in latest:
                ha, hb = history(src, run_id, key, files.get(key)), history(dst, run_id, key)
                assert len(ha) == len(hb), f"run {run_id} metric {key!r}: {len(ha)} vs {len(hb)} points"
                for pa, pb in zip(ha, hb):
                    assert_fields(f"run {run_id} metric {key!r}", pa, pb, ["step", "timestamp", "value"])
            count += 1
    return count


def registered_models(client) -> dict:
    out, token = {}, None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        out.update({m.name: m for m in page})
        token = page.token
        if not token:
            return out


VERSION_FIELDS = ["version", "creation_timestamp", "last_updated_timestamp", "description",
                  "user_id", "current_stage", "source", "run_id", "status", "status_message",
                  "run_link"]


def compare_registry(src, dst) -> int:
    a, b = registered_models(src), registered_models(dst)
    assert set(a) == set(b), f"registered models differ: {set(a) ^ set(b)}"
    versions = 0
    for name, m in a.items():
        assert_fields(f"registered model {name}", m, b[name],
                      ["creation_timestamp", "last_updated_timestamp", "description"])
        assert_mapping(f"registered model {name} tags", m.tags, b[name].tags)
        # The FileStore hands alias versions back as strings, the SQL store as ints.
        assert_mapping(
            f"registered model {name} aliases",
            {k: str(v) for k, v in m.aliases.items()},
            {k: str(v) for k, v in b[name].aliases.items()},
        )
        va = {v.version: v for v in src.search_model_versions(f"name='{name}'")}
        vb = {v.version: v for v in dst.search_model_versions(f"name='{name}'")}
        assert set(va) == set(vb), f"versions of {name} differ: {set(va) ^ set(vb)}"
        for version in va:
            # search_model_versions leaves aliases empty in the SQL store; get_model_version fills them.
            v, w = src.get_model_version(name, version), dst.get_model_version(name, version)
            assert_fields(f"model version {name}/{version}", v, w, VERSION_FIELDS)
            assert_mapping(f"model version {name}/{version} tags", v.tags, w.tags)
            assert sorted(v.aliases) == sorted(w.aliases), f"aliases of {name}/{version}"
            versions += 1
    return versions


# --- datasets, run inputs and outputs -------------------------------------------------------------


def _dataset_inputs(run) -> list:
    return sorted(
        (
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source,
             d.dataset.schema, d.dataset.profile, tuple(sorted((t.key, t.value) for t in d.tags)))
            for d in run.inputs.dataset_inputs
        ),
        key=repr,
    )


def compare_run_inputs_outputs(src, dst) -> int:
    """Datasets and tags each run used, model inputs and outputs: get_run(...).inputs/.outputs."""
    count = 0
    for exp_id in experiments(src):
        for run_id in runs(src, exp_id):
            a, b = src.get_run(run_id), dst.get_run(run_id)
            assert _dataset_inputs(a) == _dataset_inputs(b), f"run {run_id} dataset inputs"
            models_a = sorted(m.model_id for m in (a.inputs.model_inputs or []))
            models_b = sorted(m.model_id for m in (b.inputs.model_inputs or []))
            assert models_a == models_b, f"run {run_id} model inputs: {models_a} vs {models_b}"
            out_a = sorted((m.model_id, m.step) for m in (a.outputs.model_outputs if a.outputs else []))
            out_b = sorted((m.model_id, m.step) for m in (b.outputs.model_outputs if b.outputs else []))
            assert out_a == out_b, f"run {run_id} model outputs: {out_a} vs {out_b}"
            count += len(a.inputs.dataset_inputs) + len(models_a) + len(out_a)
    return count


# --- traces and assessments -----------------------------------------------------------------------

TRACE_FIELDS = ["trace_id", "request_time", "execution_duration", "state", "client_request_id",
                "request_preview", "response_preview"]
ASSESSMENT_FIELDS = ["assessment_id", "name", "trace_id", "run_id", "span_id", "rationale",
                     "metadata", "create_time_ms", "last_update_time_ms", "overrides", "valid"]


def traces(client, exp_id: str) -> dict:
    out, token = {}, None
    while True:
        page = client.search_traces(locations=[exp_id], max_results=500, page_token=token) \
            if "locations" in _params(client.search_traces) \
            else client.search_traces(experiment_ids=[exp_id], max_results=500, page_token=token)
        out.update({t.info.trace_id: t.info for t in page})
        token = page.token
        if not token:
            return out


def _params(func) -> set:
    import inspect

    return set(inspect.signature(func).parameters)


def _assessment_key(a):
    value = a.feedback.value if a.feedback is not None else a.expectation.value
    error = a.feedback.error.to_dictionary() if a.feedback is not None and a.feedback.error else None
    return (a.source.source_type, a.source.source_id, repr(value), repr(error))


def compare_traces(src, dst, id_map=None) -> tuple[int, int]:
    n_traces = n_assessments = 0
    for exp_id in experiments(src):
        a, b = traces(src, exp_id), traces(dst, mapped(id_map, exp_id))
        assert set(a) == set(b), f"traces of experiment {exp_id} differ: {set(a) ^ set(b)}"
        for trace_id, info in a.items():
            other = dst.get_trace(trace_id).info
            info = src.get_trace(trace_id).info
            assert_fields(f"trace {trace_id}", info, other, TRACE_FIELDS)
            assert_mapping(f"trace {trace_id} tags", info.tags, other.tags)
            assert_mapping(f"trace {trace_id} metadata", info.trace_metadata, other.trace_metadata)
            sa = {x.assessment_id: x for x in info.assessments}
            sb = {x.assessment_id: x for x in other.assessments}
            assert set(sa) == set(sb), f"assessments of trace {trace_id}: {set(sa) ^ set(sb)}"
            for aid, x in sa.items():
                fields = ASSESSMENT_FIELDS
                if x.expectation is not None and x.valid is None:
                    # The FileStore reader builds expectations without the file's valid/overrides
                    # (Expectation.from_dictionary ignores them); the database keeps what the file
                    # holds, which the verifier checks against the file itself.
                    fields = [f for f in fields if f not in ("valid", "overrides")]
                assert_fields(f"assessment {aid}", x, sb[aid], fields)
                assert _assessment_key(x) == _assessment_key(sb[aid]), f"assessment {aid} value/source/error"
            n_traces += 1
            n_assessments += len(sa)
    return n_traces, n_assessments


# --- logged models --------------------------------------------------------------------------------

LOGGED_MODEL_FIELDS = ["model_id", "name", "artifact_location", "creation_timestamp",
                       "last_updated_timestamp", "status", "status_message", "model_type",
                       "source_run_id", "tags", "params"]


def _model_metrics(metrics) -> list:
    return sorted(
        (m.key, m.timestamp, m.step, repr(m.value), m.run_id, m.dataset_name, m.dataset_digest)
        for m in (metrics or [])
    )


def _file_model_metrics(src, model_id: str) -> list:
    """Every point of a logged model's metric files, through MLflow's own line parser: the
    FileStore client shows only the latest point per (metric, dataset), the database keeps all
    (the first of a (metric, timestamp, step, run) key, as the SQL store does)."""
    from mlflow.store.tracking.file_store import FileStore

    _, model_dir = src._tracking_client.store._find_model_root(model_id)
    folder = Path(model_dir) / "metrics"
    points = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = path.relative_to(folder).as_posix()
        for line in path.read_text(encoding="utf-8").splitlines():
            m = FileStore._get_model_metric_from_line(model_id, key, line)
            points.setdefault((m.key, m.timestamp, m.step, m.run_id), m)
    return _model_metrics(points.values())


def compare_logged_models(src, dst, id_map=None) -> int:
    exp_ids = list(experiments(src))
    if not hasattr(src, "search_logged_models"):
        return 0
    a = {m.model_id: m for m in src.search_logged_models(experiment_ids=exp_ids, max_results=1000)}
    b = {m.model_id: m for m in dst.search_logged_models(
        experiment_ids=[mapped(id_map, e) for e in exp_ids], max_results=1000)}
    assert set(a) == set(b), f"logged models differ: {set(a) ^ set(b)}"
    for model_id, m in a.items():
        assert_fields(f"logged model {model_id}", m, b[model_id], LOGGED_MODEL_FIELDS)
        assert _file_model_metrics(src, model_id) == _model_metrics(b[model_id].metrics), f"logged model {model_id} metrics"
        assert mapped(id_map, m.experiment_id) == b[model_id].experiment_id, f"logged model {model_id} experiment_id"
    return len(a)


# --- prompts --------------------------------------------------------------------------------------


def linked_prompts(client, exp_id: str) -> set[str]:
    """The prompts linked to an experiment, as the UI's prompts tab of the experiment asks."""
    return {p.name for p in client.search_prompts(filter_string=f"experiment_id = '{exp_id}'", max_results=1000)}


def compare_prompts(src, dst, id_map=None) -> int:
    if not hasattr(src, "search_prompts"):
        return 0
    a = {p.name: p for p in src.search_prompts(max_results=1000)}
    b = {p.name: p for p in dst.search_prompts(max_results=1000)}
    assert set(a) == set(b), f"prompts differ: {set(a) ^ set(b)}"
    for exp_id in experiments(src):
        assert linked_prompts(src, exp_id) == linked_prompts(dst, mapped(id_map, exp_id)), f"prompts of experiment {exp_id}"
    versions = 0
    for name in a:
        tags = dict(a[name].tags)
        if "_mlflow_experiment_ids" in tags and id_map:  # linked experiments, by their new ids
            ids = [mapped(id_map, i) for i in tags["_mlflow_experiment_ids"].split(",") if i]
            tags["_mlflow_experiment_ids"] = f",{','.join(ids)},"
        assert_mapping(f"prompt {name} tags", tags, b[name].tags)
        version = 1
        while True:
            try:
                pa = src.get_prompt_version(name, version)
            except Exception:
                break
            pb = dst.get_prompt_version(name, version)
            for f in ["template", "commit_message", "tags", "aliases", "response_format", "model_config"]:
                if hasattr(pa, f):
                    assert _same_value(getattr(pa, f), getattr(pb, f)), f"prompt {name} v{version} {f}"
            versions += 1
            version += 1
    return versions
