"""Several mlruns folders into one database (--source given several times): trees made by real
MLflow merged under each --on-name-clash rule, into SQLite and PostgreSQL, and compared field by
field through the report's maps with MLflow's own client on both sides.

The trees: those given with --fixtures-dir (each era's generator tree: CI passes 2.x and 3.x),
else one the fixture generator makes with the installed MLflow; then two small trees numbered
as MLflow 1.x numbered experiments (1, 2, 3 in every tree), written through MLflow's own
FileStore, so that ids clash as well as names (Default in every tree; the generator's names in
the numbered trees too; the same registered model and prompt names).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag

from etl.pipeline import HOLD_BEFORE_PROMOTION
from tests import client_compare as cc
from tests.conftest import REPO, generate_fixture_tree, pg_client, posix_only, run_cli, tree_fingerprint
from tests.trees import default_uris, file_client, sql_client

# Names the fixture generator gives its trees (scripts/generate_migration_fixtures.py).
GENERATOR_EXPERIMENT = "fx-exp-1"
GENERATOR_MODEL = "fx-模型-0"


def build_numbered_tree(mlruns: Path, experiments: dict[str, str], *, default_run: bool = False,
                        suffix: str = "") -> dict:
    """A tree whose experiments are numbered 1, 2, ... (as MLflow 1.x numbered them), written by
    MLflow's FileStore: each experiment with tags, runs with params, tags and metric histories;
    a registered model with two versions and an alias; a prompt."""
    import mlflow
    from mlflow.entities import ExperimentTag
    from mlflow.store.tracking.file_store import FileStore

    store = FileStore(str(mlruns))  # a new root: MLflow writes its Default experiment 0
    client = file_client(mlruns)
    ids: dict = {"runs": []}
    for number, (exp_id, name) in enumerate(experiments.items()):
        store._create_experiment_with_id(name, exp_id, None, [ExperimentTag("team", f"t{number}{suffix}"),
                                                                ExperimentTag(f"only{suffix}", "x")])
        for r in range(2):
            run = client.create_run(exp_id, run_name=f"{name}-run-{r}{suffix}").info.run_id
            client.log_batch(run, params=[Param("lr", f"0.{r}1"), Param("who", suffix or "-")],
                             metrics=[Metric("loss", 1.0 / (s + 1 + r), 1000 + s, s) for s in range(4)],
                             tags=[RunTag("kind", name)])
            client.set_terminated(run)
            ids["runs"].append(run)
    if default_run:
        run = client.create_run("0", run_name=f"in default{suffix}").info.run_id
        client.log_metric(run, "m", 1.5, timestamp=7, step=0)
        ids["runs"].append(run)
    client.create_registered_model(GENERATOR_MODEL, tags={"owner": f"o{suffix}"}, description=f"d{suffix}")
    for run in ids["runs"][:2]:
        client.create_model_version(GENERATOR_MODEL, f"runs:/{run}/model", run_id=run, tags={"v": suffix})
    client.set_registered_model_alias(GENERATOR_MODEL, "champion", "2")
    with default_uris(mlruns):
        # A prompt links itself to the active experiment: none here, whatever an earlier test of
        # the session left in the environment (default_uris puts it back after).
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        mlflow.genai.register_prompt("greeting", f"Hello {{{{name}}}}{suffix}", commit_message=f"c{suffix}")
        # MLflow links the prompt to the active experiment on a thread of its own: done first.
        for thread in threading.enumerate():
            if thread.name.startswith("link_prompt_to_experiment_thread"):
                thread.join()
    # Linked to an experiment as MLflow links a prompt used in one (its own tag, ",2,"): an id
    # the merge renumbers.
    client.set_prompt_tag("greeting", "_mlflow_experiment_ids", ",2,")
    return ids


@pytest.fixture(scope="module")
def trees(request, tmp_path_factory) -> list[Path]:
    work = tmp_path_factory.mktemp("several")
    given = request.config.getoption("--fixtures-dir")
    out = []
    for folder in given:
        copy = work / Path(folder).name
        shutil.copytree(folder, copy, symlinks=True)
        out.append(copy / "mlruns")
    if not given:
        out.append(generate_fixture_tree(work / "proj-a") / "mlruns")
    (work / "proj-b").mkdir()
    build_numbered_tree(work / "proj-b" / "mlruns", {"1": GENERATOR_EXPERIMENT, "2": "churn"}, suffix="-b")
    (work / "proj-c").mkdir()
    build_numbered_tree(work / "proj-c" / "mlruns", {"1": "churn", "2": GENERATOR_EXPERIMENT, "3": "only c"},
                        default_run=True, suffix="-c")
    return out + [work / "proj-b" / "mlruns", work / "proj-c" / "mlruns"]


def _sources(trees: list[Path]) -> list[str]:
    return [arg for tree in trees for arg in ("--source", str(tree))]


@pytest.fixture(scope="module", params=["rename-sqlite", "merge-sqlite", "rename-postgresql", "merge-postgresql"])
def merged(request, trees, tmp_path_factory):
    rule, kind = request.param.split("-")
    if request.config.getoption("--fixtures-dir") and request.param in ("merge-sqlite", "rename-postgresql"):
        # Every era's full tree merged: each rule once, each target once (CI time); the small
        # trees of a run without --fixtures-dir go every way.
        pytest.skip("with --fixtures-dir, rename into SQLite and merge into PostgreSQL")
    work = tmp_path_factory.mktemp(request.param)
    before = [tree_fingerprint(t) for t in trees]
    if kind == "sqlite":
        target = f"sqlite:///{work / 'team.db'}"
    else:
        target = request.getfixturevalue("pg_server").create_database(f"several_{rule}")
    result = run_cli(*_sources(trees), "--target", target, "--on-name-clash", rule, "--workers", "4",
                     "--report", str(work / "report.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [tree_fingerprint(t) for t in trees] == before, "a source was written to"
    dst = sql_client(Path(target[len("sqlite:///"):])) if kind == "sqlite" else pg_client(target)
    return {"rule": rule, "target": target, "report": json.loads((work / "report.json").read_text()),
            "result": result, "dst": dst, "trees": trees}


def test_verified_and_every_change_listed(merged):
    report, out = merged["report"], merged["result"].stdout
    assert report["verification"]["status"] == "SUCCESS" and "Status: SUCCESS" in out
    assert report["source"] == [str(t) for t in merged["trees"]]
    assert [s["path"] for s in report["sources"]] == report["source"]
    assert set(report["experiment_id_map"]) == set(report["source"]) == set(report["census"])
    b, c = report["sources"][-2:]
    # An experiment keeps its id unless an earlier source's kept it (or the target cannot hold
    # it); one merged into another takes that one's.
    held: set[str] = set()
    biggest = 2**63 - 1 if merged["target"].startswith("sqlite") else 2**31 - 1
    for tree, part in zip(merged["trees"], report["sources"]):
        joined = set(part["experiments_merged"])
        for folder in sorted({p.parent.name for p in [*tree.glob("*/meta.yaml"), *tree.glob(".trash/*/meta.yaml")]
                              if p.parent.name.isdigit()}):
            new = part["experiment_id_map"].get(folder, folder)
            if folder not in joined:
                assert (new == folder) == (folder not in held and int(folder) <= biggest), (tree, folder, new)
                held.add(new)
    assert "1" in c["experiment_id_map"]  # proj-b's (or an earlier tree's) experiment 1 kept its id
    if merged["rule"] == "rename":
        assert b["experiments_renamed"]["1"] == f"{GENERATOR_EXPERIMENT} (proj-b)"
        assert c["experiments_renamed"]["1"] == "churn (proj-c)"
        assert c["registered_models_renamed"] == {GENERATOR_MODEL: f"{GENERATOR_MODEL} (proj-c)",
                                                  "greeting": "greeting.proj-c"}
        assert "Renamed (" in out and f"'{GENERATOR_EXPERIMENT} (proj-b)'" in out
    else:
        assert {"1", "2"} <= set(c["experiments_merged"]) and c["experiments_renamed"] == {}
        assert set(c["registered_models_merged"]) == {GENERATOR_MODEL, "greeting"}
        churn = next(m for m in report["merged"] if m["kind"] == "experiment" and m["name"] == "churn")
        assert churn["fields_from"] == {"source": b["path"], "experiment_id": "2"}
        # Both trees tag "team": proj-b's value won, proj-c's is named as not taken.
        assert {"key": "team", "value": "t0-c", "kept": "t1-b"}.items() <= churn["not_taken"][0].items()
    # The Default kept is the first that holds something (proj-c's holds a run, a 1.x tree's may
    # too); the empty ones join it.
    default = next(m for m in report["merged"] if m["name"] == "Default")
    holding = next(str(t) for t in merged["trees"] if any(p.name != "meta.yaml" for p in (t / "0").iterdir()))
    assert default["fields_from"] == {"source": holding, "experiment_id": "0"}
    assert all(j["empty"] for j in default["joined"]) or merged["rule"] == "merge"


def test_every_entity_equal_through_the_maps(merged):
    """Each source read by MLflow's FileStore client, the target by MLflow's SQL client, every
    field of every entity through the report's id, name and version maps."""
    counts = compare_through_maps(merged["trees"], merged["report"], merged["dst"])
    assert counts["runs"] >= 10 and counts["model_versions"] >= 4 and counts["prompt_versions"] >= 2


def compare_through_maps(trees: list[Path], report: dict, dst) -> dict:
    heads = {(m["fields_from"]["source"], m["fields_from"].get("experiment_id")) for m in report["merged"]}
    not_taken = {(t["source"], t.get("experiment_id"), t["key"]) for m in report["merged"]
                 for t in m["not_taken"] if "key" in t}
    target_experiments = cc.experiments(dst)
    counts = dict.fromkeys(("experiments", "runs", "model_versions", "prompt_versions", "traces", "logged_models"), 0)
    all_runs = set()
    for tree, part in zip(trees, report["sources"]):
        src, path = file_client(tree), str(tree)
        ids, renamed, joined = part["experiment_id_map"], part["experiments_renamed"], set(part["experiments_merged"])
        copies = {c["id"] for c in part["copies"]}
        stages = cc.listed_stages(src)
        for exp_id, e in cc.experiments(src).items():
            t = target_experiments[ids.get(exp_id, exp_id)]
            counts["experiments"] += 1
            assert t.name == renamed.get(exp_id, e.name), f"{path} experiment {exp_id}: name"
            if exp_id not in joined:
                cc.assert_fields(f"{path} experiment {exp_id}", e, t,
                                 ["artifact_location", "creation_time", "last_update_time"])
                assert t.lifecycle_stage == stages[exp_id], f"{path} experiment {exp_id}: lifecycle_stage"
            for key, value in e.tags.items():
                if (path, exp_id, key) not in not_taken:
                    assert t.tags.get(key) == value, f"{path} experiment {exp_id} tag {key!r}"
            if exp_id not in joined and (path, exp_id) not in heads:
                assert t.tags == e.tags, f"{path} experiment {exp_id}: tags"
            for run_id, r in cc.runs(src, exp_id).items():
                all_runs.add(run_id)
                if run_id in copies:
                    continue
                o = dst.get_run(run_id)
                cc.assert_fields(f"run {run_id}", r.info, o.info, cc.RUN_INFO_FIELDS)
                assert o.info.experiment_id == t.experiment_id, f"run {run_id}: experiment"
                cc.assert_mapping(f"run {run_id} params", r.data.params, o.data.params)
                cc.assert_mapping(f"run {run_id} tags", r.data.tags, o.data.tags)
                cc.assert_mapping(f"run {run_id} metrics", r.data.metrics, o.data.metrics)
                for key in r.data.metrics:
                    a, b = cc.history(src, run_id, key), cc.history(dst, run_id, key)
                    assert len(a) == len(b), f"run {run_id} metric {key}"
                    for pa, pb in zip(a, b):
                        cc.assert_fields(f"run {run_id} metric {key}", pa, pb, ["step", "timestamp", "value"])
                counts["runs"] += 1
            for trace_id in cc.traces(src, exp_id):
                a, b = src.get_trace(trace_id).info, dst.get_trace(trace_id).info
                cc.assert_fields(f"trace {trace_id}", a, b, cc.TRACE_FIELDS)
                assert b.experiment_id == t.experiment_id, f"trace {trace_id}: experiment"
                cc.assert_mapping(f"trace {trace_id} tags", a.tags, b.tags)
                assert len(a.assessments) == len(b.assessments), f"trace {trace_id}: assessments"
                counts["traces"] += 1
            if hasattr(src, "search_logged_models"):
                for m in src.search_logged_models(experiment_ids=[exp_id], max_results=1000):
                    o = dst.get_logged_model(m.model_id)
                    cc.assert_fields(f"logged model {m.model_id}", m, o, cc.LOGGED_MODEL_FIELDS)
                    assert o.experiment_id == t.experiment_id
                    assert cc._file_model_metrics(src, m.model_id) == cc._model_metrics(o.metrics)
                    counts["logged_models"] += 1
        models_renamed, offsets = part["registered_models_renamed"], part["registered_models_merged"]
        for name, m in cc.registered_models(src).items():
            t = dst.get_registered_model(models_renamed.get(name, name))
            if name not in offsets:
                cc.assert_fields(f"{path} model {name}", m, t,
                                 ["creation_timestamp", "last_updated_timestamp", "description"])
            for version in src.search_model_versions(f"name='{name}'"):
                v = src.get_model_version(name, version.version)
                w = dst.get_model_version(t.name, int(v.version) + offsets.get(name, 0))
                # A merged model's versions are renumbered; they keep their run ids and sources.
                cc.assert_fields(f"{path} version {name}/{v.version}", v, w,
                                 [f for f in cc.VERSION_FIELDS if f != "version"])
                cc.assert_mapping(f"{path} version {name}/{v.version} tags", v.tags, w.tags)
                counts["model_versions"] += 1
        for p in src.search_prompts(max_results=1000) if hasattr(src, "search_prompts") else []:
            target_name = models_renamed.get(p.name, p.name)
            version = 1
            while True:
                try:
                    a = src.get_prompt_version(p.name, version)
                except Exception:  # noqa: BLE001 - past the last version
                    break
                b = dst.get_prompt_version(target_name, version + offsets.get(p.name, 0))
                assert a.template == b.template and a.commit_message == b.commit_message, f"prompt {p.name}/{version}"
                counts["prompt_versions"] += 1
                version += 1
        # Linked to the same experiments, by their new ids (a merged prompt: to each one's).
        for exp_id in cc.experiments(src) if hasattr(src, "search_prompts") else []:
            linked = {models_renamed.get(n, n) for n in cc.linked_prompts(src, exp_id)}
            assert linked <= cc.linked_prompts(dst, part["experiment_id_map"].get(exp_id, exp_id)), \
                f"{path} prompts of experiment {exp_id}"
    # Nothing in the target that no source holds.
    assert {r.info.run_id for exp_id in target_experiments for r in cc.runs(dst, exp_id).values()} == all_runs
    distinct = {(part["experiment_id_map"].get(e, e)) for tree, part in zip(trees, report["sources"])
                for e in cc.experiments(file_client(tree))}
    assert set(target_experiments) == distinct
    return counts


def test_a_live_server_shows_the_merge_and_logs_into_it(merged, tmp_path):
    """`mlflow server` of the installed MLflow on the merged database: every experiment and run
    is there over REST, and a new run goes into a merged experiment."""
    from mlflow import MlflowClient

    from tests import mlflow_server

    if merged["rule"] != "merge" or not merged["target"].startswith("sqlite"):
        pytest.skip("one live server, on the merged SQLite database")
    proc, url, _log = mlflow_server.start(Path(merged["target"][len("sqlite:///"):]), tmp_path)
    try:
        rest = MlflowClient(tracking_uri=url)
        local = merged["dst"]
        assert {e.experiment_id: e.name for e in cc.experiments(rest).values()} == \
            {e.experiment_id: e.name for e in cc.experiments(local).values()}
        for exp_id in cc.experiments(local):
            assert set(cc.runs(rest, exp_id)) == set(cc.runs(local, exp_id))
        churn = rest.get_experiment_by_name("churn")
        run = rest.create_run(churn.experiment_id, run_name="after the merge")
        rest.log_metric(run.info.run_id, "m", 2.0)
        rest.set_terminated(run.info.run_id)
        assert local.get_run(run.info.run_id).info.experiment_id == churn.experiment_id
    finally:
        mlflow_server.stop(proc)


def test_fail_lists_every_clash_and_writes_nothing(trees, tmp_path):
    report = tmp_path / "report.json"
    result = run_cli(*_sources(trees), "--target", f"sqlite:///{tmp_path / 'team.db'}", "--on-name-clash", "fail",
                     "--report", str(report))
    assert result.returncode == 3, result.stderr[-3000:]
    listed = [line for line in result.stderr.splitlines() if "(--on-name-clash fail)" in line]
    b, c = (str(t) for t in trees[-2:])
    assert any(f"{c}/1/meta.yaml: experiment name 'churn' is also the name of {b}/2/meta.yaml" in line for line in listed)
    assert any(line.startswith(f"  - {c}/models/greeting/meta.yaml: registered model name 'greeting'") for line in listed)
    # An empty Default is kept once, never a clash; two that hold something clash as any name.
    holding = [t for t in trees if any(p.name != "meta.yaml" for p in (t / "0").iterdir())]
    assert any("'Default'" in line for line in listed) == (len(holding) > 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert json.loads(report.read_text())["exit_status"] == 3


def test_the_same_sources_map_the_same_way(pair, tmp_path):
    """Determinism: a dry run twice gives the same maps; another order, other maps (the first
    source keeps its ids and names)."""
    trees = pair
    def maps(order):
        path = tmp_path / "report.json"
        result = run_cli("--dry-run", *_sources(order), "--target", f"sqlite:///{tmp_path / 'x.db'}",
                         "--report", str(path))
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(path.read_text())["sources"]

    first = maps(trees)
    assert maps(trees) == first
    swapped = maps([trees[-1], *trees[:-1]])
    assert swapped[0]["experiment_id_map"] == {} and swapped[0]["experiments_renamed"] == {}


# --- small trees: copies, mutations, warnings, crashes ----------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> list[Path]:
    """Two small trees numbered 1, 2 each: every id and name clashes but the runs'."""
    work = tmp_path_factory.mktemp("pair")
    out = []
    for label, names in (("team-a", {"1": "churn", "2": "forecast"}), ("team-b", {"1": "forecast", "2": "churn"})):
        (work / label).mkdir()
        build_numbered_tree(work / label / "mlruns", names, suffix=f"-{label}")
        out.append(work / label / "mlruns")
    return out


def _copy_pair(pair: list[Path], tmp_path: Path) -> list[Path]:
    for tree in pair:
        shutil.copytree(tree.parent, tmp_path / tree.parent.name, symlinks=True)
    return [tmp_path / t.parent.name / "mlruns" for t in pair]


def _runs(tree: Path, exp_id: str) -> list[Path]:
    return sorted(p.parent for p in (tree / exp_id).glob("*/meta.yaml"))


def test_a_folder_copied_into_another_tree_is_migrated_once(pair, tmp_path):
    """The same run id in two trees with byte-identical files (a folder copied by hand) is one run,
    named in the report; with other files it is invalid input naming both folders."""
    a, b = _copy_pair(pair, tmp_path)
    run = _runs(a, "1")[0]
    copy = b / "2" / run.name  # team-b's churn (2) is team-a's churn (1): meta.yaml differs...
    shutil.copytree(run, b / "1" / run.name)  # ...so into team-b's experiment 1 it goes as it is
    (a / "1" / run.name / "artifacts").mkdir(exist_ok=True)
    (a / "1" / run.name / "artifacts" / "model.pkl").write_bytes(b"only here: artifacts stay where they are")
    report = tmp_path / "report.json"
    result = run_cli("--source", str(a), "--source", str(b), "--target", f"sqlite:///{tmp_path / 'one.db'}",
                     "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    copies = json.loads(report.read_text())["sources"][1]["copies"]
    assert copies == [{"kind": "runs", "id": run.name, "path": str(b / "1" / run.name), "migrated_from": str(run)}]
    assert f"run {run.name}: {b / '1' / run.name} is a copy of {run}" in result.stdout
    db = sql_client(tmp_path / "one.db")
    assert db.get_run(run.name).info.experiment_id == "1"  # team-a's, where the first copy is
    # The same id with other bytes: both folders named, nothing written; --skip-invalid leaves both out.
    shutil.rmtree(b / "1" / run.name)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("artifacts"))
    (copy / "params" / "lr").write_text("0.5")
    result = run_cli("--source", str(a), "--source", str(b), "--target", f"sqlite:///{tmp_path / 'two.db'}")
    assert result.returncode == 3, result.stderr[-3000:]
    assert f"  - {run}: the same id is also {copy}, with other files" in result.stderr
    assert f"  - {copy}: the same id is also {run}, with other files" in result.stderr
    assert not (tmp_path / "two.db").exists()
    result = run_cli("--source", str(a), "--source", str(b), "--target", f"sqlite:///{tmp_path / 'two.db'}",
                     "--skip-invalid")
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.raises(Exception, match="not found"):
        sql_client(tmp_path / "two.db").get_run(run.name)


def test_verify_names_a_swapped_name_and_a_moved_run(pair, tmp_path):
    """`etl-migrate verify --source A --source B` on a merged database edited after the fact:
    two experiments' names swapped, a run moved into the other source's experiment."""
    a, b = pair
    db = tmp_path / "team.db"
    sources = ["--source", str(a), "--source", str(b)]
    assert run_cli(*sources, "--target", f"sqlite:///{db}", "-q").returncode == 0
    assert run_cli("verify", *sources, "--target", f"sqlite:///{db}", "-q").returncode == 0
    run = _runs(a, "1")[0].name
    cases = {
        "swap": ("UPDATE experiments SET name = 'x' WHERE name = 'churn'; "
                 "UPDATE experiments SET name = 'churn' WHERE name = 'churn (team-b)'; "
                 "UPDATE experiments SET name = 'churn (team-b)' WHERE name = 'x'",
                 ["1 (team-a)", "Field 'name': source='churn', target='churn (team-b)'"]),
        "move": (f"UPDATE runs SET experiment_id = (SELECT experiment_id FROM experiments WHERE name = "
                 f"'churn (team-b)') WHERE run_uuid = '{run}'",
                 [f"FAILED: run {run}", "Field 'experiment_id': source='1'"]),
    }
    for what, (sql, named) in cases.items():
        edited = tmp_path / f"{what}.db"
        shutil.copyfile(db, edited)
        with sqlite3.connect(edited) as conn:
            conn.executescript(sql)
        result = run_cli("verify", *sources, "--target", f"sqlite:///{edited}")
        assert result.returncode == 1, (what, result.stdout[-2000:], result.stderr[-2000:])
        for text in named:
            assert text.lower() in result.stderr.lower(), (what, text, result.stderr[-3000:])


def test_relative_and_moved_artifact_locations_are_named(pair, tmp_path):
    """Migrated as they are, and named: a relative location (as MLflow 1.x wrote under a relative
    tracking URI) resolves against a server's working folder; one into a folder the tree was
    moved out of finds nothing."""
    a, b = _copy_pair(pair, tmp_path)
    meta = a / "1" / "meta.yaml"
    meta.write_text(re.sub(r"(?m)^artifact_location: .*$", "artifact_location: ./mlruns/1", meta.read_text()))
    for meta in b.rglob("meta.yaml"):  # team-b as it was written somewhere it is no longer
        meta.write_text(meta.read_text().replace(pair[1].as_uri(), (tmp_path / "gone" / "mlruns").as_uri()))
    result = run_cli("--source", str(a), "--source", str(b), "--target", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: 1/ artifact location './mlruns/1' is relative" in result.stdout
    assert "points outside the tree, to a folder that does not exist (the tree moved?)" in result.stdout


@posix_only("the run's process group is killed with os.killpg")
def test_kill_9_while_the_second_source_loads_leaves_the_target_as_it_was(tmp_path):
    """All sources go into one staging area, promoted once: killed while the second source is
    being read, the target (here an empty file, which a run may fill) is as it was, and the
    next run removes the staging file and migrates both."""
    trees = []
    for seed in (1, 2):
        mlruns = tmp_path / f"tree-{seed}" / "mlruns"
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
                        "--shape", "tiny", "--runs", "30", "--seed", str(seed)],
                       check=True, capture_output=True, timeout=300)
        trees.append(mlruns)
    db = tmp_path / "team.db"
    db.write_bytes(b"")
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", *_sources(trees), "--target", f"sqlite:///{db}", "-v", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # Held before promotion (a flag file that never appears): however fast the run, the kill lands in it.
        env={**os.environ, HOLD_BEFORE_PROMOTION: str(tmp_path / "never")})
    try:
        for line in proc.stderr:
            if '"tree discovered"' in line and str(trees[1]) in line:
                break  # the first source is loaded, the second is being read
        else:
            pytest.fail("the run ended before it read the second source")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert db.read_bytes() == b""
    assert any(".staging-" in p.name for p in tmp_path.iterdir())
    again = run_cli(*_sources(trees), "--target", f"sqlite:///{db}", "-q")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not any(".staging-" in p.name for p in tmp_path.iterdir())
    assert len({r.info.run_id for e in cc.experiments(sql_client(db)) for r in cc.runs(sql_client(db), e).values()}) == 60
