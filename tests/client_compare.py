"""Compare two MLflow backends entity by entity through MlflowClient, field by field.

The source client reads the FileStore, the target client the migrated SQLite database; every
assertion message names the entity and field, so a failing test says what differs.
"""

from __future__ import annotations

import math

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


def experiments(client) -> dict:
    out, token = {}, None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        out.update({e.experiment_id: e for e in page})
        token = page.token
        if not token:
            return out


def compare_experiments(src, dst) -> int:
    a, b = experiments(src), experiments(dst)
    assert set(a) == set(b), f"experiment ids differ: {set(a) ^ set(b)}"
    for exp_id, e in a.items():
        assert_fields(f"experiment {exp_id}", e, b[exp_id],
                      ["name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time"])
        assert_mapping(f"experiment {exp_id} tags", e.tags, b[exp_id].tags)
    return len(a)


def runs(client, exp_id: str) -> dict:
    return {
        r.info.run_id: r
        for r in client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=MAX)
    }


RUN_INFO_FIELDS = ["run_id", "run_name", "experiment_id", "user_id", "status", "start_time",
                   "end_time", "artifact_uri", "lifecycle_stage"]


def history(client, run_id: str, key: str) -> list:
    points = {(m.step, m.timestamp, repr(m.value)): m for m in client.get_metric_history(run_id, key)}
    return [points[k] for k in sorted(points, key=lambda k: (k[0], k[1]))]


def compare_runs(src, dst) -> int:
    count = 0
    for exp_id in experiments(src):
        a, b = runs(src, exp_id), runs(dst, exp_id)
        assert set(a) == set(b), f"runs of experiment {exp_id} differ: {set(a) ^ set(b)}"
        for run_id, r in a.items():
            t = b[run_id]
            assert_fields(f"run {run_id}", r.info, t.info, RUN_INFO_FIELDS)
            assert_mapping(f"run {run_id} params", r.data.params, t.data.params)
            assert_mapping(f"run {run_id} tags", r.data.tags, t.data.tags)
            assert_mapping(f"run {run_id} latest metrics", r.data.metrics, t.data.metrics)
            for key in r.data.metrics:
                ha, hb = history(src, run_id, key), history(dst, run_id, key)
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
