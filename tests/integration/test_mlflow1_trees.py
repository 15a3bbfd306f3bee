"""Trees MLflow 1.x wrote through its client, later upgraded by a 2.x (which added its model
registry, a run, an experiment and a deletion), migrated with the default command: MLflow 1.20.2
upgraded by 2.9.2 into SQLite and PostgreSQL, MLflow 1.30.1 upgraded by 2.1.1 and MLflow 1.0.0
into SQLite.

What MLflow 1.x wrote that later MLflow does not, each found in the tree's files (not assumed
from the version) and migrated as MLflow's current reader shows it. The tree comes from
scripts/mlflow_eras.py (CI's recipe, kept in a cache across sessions); every era's tree also goes
through test_fixture_trees.py in CI.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType

from tests import client_compare as cc
from tests.conftest import era_tree, pg_client, run_cli, tree_fingerprint
from tests.trees import file_client, sql_client

ERA = "1.20.2+2.9.2"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return era_tree(ERA, tmp_path_factory.mktemp("mlflow1") / "tree") / "mlruns"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def migrated(request, tree, tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow1-db")
    if request.param == "sqlite":
        target = f"sqlite:///{work / 'mlflow.db'}"
    else:
        target = request.getfixturevalue("pg_server").create_database(f"mlflow1_{work.name}".lower())
    before = tree_fingerprint(tree)
    report = work / "report.json"
    # The default command (verification on), and its report for PostgreSQL's id map.
    result = run_cli("--source", str(tree), "--target", target, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Status: SUCCESS" in result.stdout
    assert tree_fingerprint(tree) == before
    dst = sql_client(Path(target[len("sqlite:///"):])) if request.param == "sqlite" else pg_client(target)
    return {"target": target, "src": file_client(tree), "dst": dst,
            "id_map": json.loads(report.read_text())["experiment_id_map"]}


def metas(tree: Path, pattern: str) -> dict[Path, dict]:
    return {p.parent: yaml.safe_load(p.read_text(encoding="utf-8")) for p in tree.glob(pattern)}


def experiment_metas(tree: Path) -> list[dict]:
    return [meta for meta in (metas(tree, "*/meta.yaml") | metas(tree, ".trash/*/meta.yaml")).values()
            if "experiment_id" in meta]


def runs(tree: Path) -> dict[Path, dict]:
    """Run folder -> its meta.yaml, in .trash too."""
    return {folder: meta for folder, meta in
            (metas(tree, "*/*/meta.yaml") | metas(tree, ".trash/*/*/meta.yaml")).items() if "run_id" in meta}


def test_unnamed_runs_have_no_name(tree, migrated):
    """MLflow <= 1.28 wrote `name: ''` and no mlflow.runName tag for a run made without a name:
    MLflow shows run_name None, and so does the database (not '')."""
    unnamed = [run.name for run, meta in runs(tree).items()
               if meta.get("name") == "" and "run_name" not in meta
               and not (run / "tags" / "mlflow.runName").exists()]
    assert len(unnamed) >= 2  # create_run() and start_run() without a name
    for run_id in unnamed:
        assert migrated["src"].get_run(run_id).info.run_name is None
        assert migrated["dst"].get_run(run_id).info.run_name is None


def test_runs_named_by_their_tag_only(tree, migrated):
    """MLflow < 1.30 kept a run's name in the mlflow.runName tag: that is its name."""
    named = {run.name: (run / "tags" / "mlflow.runName").read_text("utf-8")
             for run, meta in runs(tree).items()
             if "run_name" not in meta and (run / "tags" / "mlflow.runName").exists()}
    assert "edge-values-数据-🔥" in named.values()
    for run_id, name in named.items():
        assert migrated["dst"].get_run(run_id).info.run_name == name


def test_experiments_without_creation_time(tree, migrated):
    """No creation_time/last_update_time before MLflow 1.29: None on both sides, not the time of
    the migration (which `mlflow migrate-filestore` writes)."""
    old = [meta["experiment_id"] for meta in experiment_metas(tree) if "creation_time" not in meta]
    new = [meta for meta in experiment_metas(tree) if "creation_time" in meta]
    assert len(old) >= 5 and len(new) == 1  # 1.20's, and the one 2.9 made
    assert not any("tags" in meta for meta in experiment_metas(tree))  # tags live in tags/ only
    for exp_id in old:
        e = migrated["dst"].get_experiment(cc.mapped(migrated["id_map"], exp_id))
        assert (e.creation_time, e.last_update_time) == (None, None)
        assert migrated["src"].get_experiment(exp_id).creation_time is None
    e = migrated["dst"].get_experiment(cc.mapped(migrated["id_map"], new[0]["experiment_id"]))
    assert (e.creation_time, e.last_update_time) == (new[0]["creation_time"], new[0]["last_update_time"])


def test_deleted_experiment_stays_deleted(tree, migrated):
    """MLflow 1.x (and 2.1) left `lifecycle_stage: active` in a deleted experiment's meta.yaml
    and went by the .trash folder. MLflow's current reader lists it as deleted (search by view
    type), though get_experiment reads the file: the database keeps it deleted, as its user left it."""
    trashed = {folder.name: meta for folder, meta in metas(tree, ".trash/*/meta.yaml").items()}
    assert [meta["lifecycle_stage"] for meta in trashed.values()] == ["active"]
    (exp_id,) = trashed
    assert [e.experiment_id for e in migrated["src"].search_experiments(view_type=ViewType.DELETED_ONLY)] == [exp_id]
    assert migrated["src"].get_experiment(exp_id).lifecycle_stage == "active"
    dst_id = cc.mapped(migrated["id_map"], exp_id)
    assert migrated["dst"].get_experiment(dst_id).lifecycle_stage == "deleted"
    assert dst_id not in {e.experiment_id for e in migrated["dst"].search_experiments(view_type=ViewType.ACTIVE_ONLY)}


def test_deleted_runs_with_and_without_deleted_time(tree, migrated):
    """MLflow < 1.28 wrote no deleted_time: NULL; the run 2.9 deleted has its time."""
    deleted = {run.name: meta for run, meta in runs(tree).items() if meta["lifecycle_stage"] == "deleted"}
    without = [r for r, meta in deleted.items() if "deleted_time" not in meta]
    with_time = {r: meta["deleted_time"] for r, meta in deleted.items() if "deleted_time" in meta}
    assert without and with_time
    rows = dict(_query(migrated, "SELECT run_uuid, deleted_time FROM runs WHERE lifecycle_stage = 'deleted'"))
    assert rows == {**dict.fromkeys(without), **with_time}


def test_run_without_tags_folder(tree, migrated):
    """MLflow 1.x made a tags/ folder only for a run given tags (not for create_run())."""
    bare = [run.name for run in runs(tree) if not (run / "tags").exists()]
    assert bare
    for run_id in bare:
        run = migrated["dst"].get_run(run_id)
        assert run.data.tags == {} and run.data.params == migrated["src"].get_run(run_id).data.params


def test_sequential_experiment_ids_kept(tree, migrated):
    """1, 2, 3... as MLflow 1.x numbered them, beside the 18-digit id 2.9 gave its experiment
    (renumbered in PostgreSQL, whose experiment ids are 32-bit)."""
    ids = sorted(int(meta["experiment_id"]) for meta in experiment_metas(tree))
    small = [i for i in ids if i < 2**31]
    assert small == list(range(len(small))) and len(ids) == len(small) + 1
    kept = {int(e) for (e,) in _query(migrated, "SELECT experiment_id FROM experiments")}
    assert set(small) <= kept and not set(small) & {int(i) for i in migrated["id_map"]}


def test_registry_over_mlflow1_runs(tree, migrated):
    """2.9's registry on 1.20's runs; its deleted version kept as Deleted_Internal, as the SQL
    store keeps one (and hides it, as the FileStore does)."""
    versions = metas(tree, "models/*/version-*/meta.yaml")
    stages = sorted(meta["current_stage"] for meta in versions.values())
    assert "Deleted_Internal" in stages
    rows = sorted(stage for (stage,) in _query(migrated, "SELECT current_stage FROM model_versions"))
    assert rows == stages
    assert cc.compare_registry(migrated["src"], migrated["dst"]) >= 1


def test_relative_artifact_location_kept(tree, migrated):
    """MLflow 1.x kept an artifact location as given (`./mlruns` of `mlflow server`'s default
    root); later MLflow would make it absolute. As the file says, for the runs too."""
    (meta,) = [m for m in experiment_metas(tree) if m["artifact_location"].startswith("./")]
    exp = migrated["dst"].get_experiment(cc.mapped(migrated["id_map"], meta["experiment_id"]))
    assert exp.artifact_location == meta["artifact_location"] == "./fx-artifacts"
    for folder, run_meta in runs(tree).items():
        if run_meta["experiment_id"] == meta["experiment_id"]:
            assert migrated["dst"].get_run(folder.name).info.artifact_uri == run_meta["artifact_uri"]
            assert run_meta["artifact_uri"].startswith("./fx-artifacts/")


def test_everything_reads_back_as_mlflow_shows_it(migrated):
    assert cc.compare_experiments(migrated["src"], migrated["dst"], migrated["id_map"]) >= 9
    assert cc.compare_runs(migrated["src"], migrated["dst"], migrated["id_map"]) >= 30


def _query(migrated, sql: str) -> list[tuple]:
    target = migrated["target"]
    if target.startswith("sqlite:///"):
        with sqlite3.connect(target[len("sqlite:///"):]) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(target) as conn:
        return conn.execute(sql).fetchall()



# --- MLflow 1.30.1, upgraded by 2.1.1: the first file-store registry ------------------------------


@pytest.fixture(scope="module")
def tree_130(tmp_path_factory) -> Path:
    return era_tree("1.30.1+2.1.1", tmp_path_factory.mktemp("mlflow130") / "tree") / "mlruns"


@pytest.fixture(scope="module")
def migrated_130(tree_130, tmp_path_factory):
    db = tmp_path_factory.mktemp("mlflow130-db") / "mlflow.db"
    result = run_cli("--source", str(tree_130), "--target", f"sqlite:///{db}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"target": f"sqlite:///{db}", "src": file_client(tree_130), "dst": sql_client(db)}


def test_registry_of_mlflow_2_1(tree_130, migrated_130):
    """MLflow 2.1 wrote no `aliases` or `storage_location` keys and removed a deleted version's
    folder: no alias rows, storage_location NULL, no row for the version that is gone."""
    versions = metas(tree_130, "models/*/version-*/meta.yaml")
    assert versions and not any({"aliases", "storage_location"} & meta.keys() for meta in versions.values())
    assert not list(tree_130.glob("models/*/aliases"))
    folders = {(meta["name"], int(meta["version"])) for meta in versions.values()}
    numbers = {name: {v for n, v in folders if n == name} for name, _ in folders}
    assert any(max(v) > len(v) for v in numbers.values())  # a gap: the deleted version
    rows = _query(migrated_130, "SELECT name, version, storage_location FROM model_versions")
    assert {(name, version) for name, version, _ in rows} == folders
    assert {location for _, _, location in rows} == {None}
    assert _query(migrated_130, "SELECT COUNT(*) FROM registered_model_aliases") == [(0,)]
    assert cc.compare_registry(migrated_130["src"], migrated_130["dst"]) == len(folders)


def test_mlflow_1_30_runs_and_experiments(tree_130, migrated_130):
    """1.30 writes run_name (and no `name`), creation times, deleted_time; its deleted experiment
    still says active."""
    run_meta = list(runs(tree_130).values())
    assert all("run_name" in meta and "name" not in meta for meta in run_meta)
    assert [meta["lifecycle_stage"] for meta in metas(tree_130, ".trash/*/meta.yaml").values()] == ["active"]
    assert cc.compare_experiments(migrated_130["src"], migrated_130["dst"]) >= 8
    assert cc.compare_runs(migrated_130["src"], migrated_130["dst"]) >= 30


# --- MLflow 1.0.0 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_100(tmp_path_factory) -> tuple[Path, list[int]]:
    """MLflow 1.0.0's tree as a tree begun under MLflow 0.8 has it: its experiments' meta.yaml
    keep the integer id and the plain path 0.8 wrote (`experiment_id: 1`, `artifact_location:
    /home/me/mlruns/1`; no MLflow 1.x rewrote them), the runs 1.x made in them say '1'. And every
    meta.yaml without its final newline (as a file edited by hand, or passed through a tool that
    strips it, is). MLflow's reader takes all of it."""
    mlruns = era_tree("1.0.0", tmp_path_factory.mktemp("mlflow100") / "tree") / "mlruns"
    begun_under_0_8 = []
    for meta_path in mlruns.glob("*/meta.yaml"):
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        if meta["artifact_location"].startswith("file://"):
            meta["experiment_id"] = int(meta["experiment_id"])
            meta["artifact_location"] = meta["artifact_location"][len("file://"):]
            meta_path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
            begun_under_0_8.append(meta["experiment_id"])
    for meta in mlruns.rglob("meta.yaml"):
        meta.write_bytes(meta.read_bytes().rstrip(b"\n"))
    return mlruns, begun_under_0_8


def test_mlflow_1_0_tree(tree_100, tmp_path):
    """1.0: no experiment tags at all, unnamed runs, metric values as logged ('3' for an int);
    experiments of 0.8 (int ids, plain paths), meta.yaml files without a final newline."""
    mlruns, begun_under_0_8 = tree_100
    assert not list(mlruns.glob("*/tags")) and not list(mlruns.glob(".trash/*/tags"))
    assert all(not p.read_bytes().endswith(b"\n") for p in mlruns.rglob("meta.yaml"))
    assert len(begun_under_0_8) >= 3
    (line,) = next(mlruns.glob("*/*/metrics/fx.int_value")).read_text().splitlines()
    assert line.split(" ")[1] == "3"
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    src, dst = file_client(mlruns), sql_client(db)
    unnamed = [r.name for r, meta in runs(mlruns).items() if not (r / "tags" / "mlflow.runName").exists()]
    assert unnamed and all(dst.get_run(r).info.run_name is None for r in unnamed)
    for exp_id in begun_under_0_8:
        assert dst.get_experiment(str(exp_id)).artifact_location.startswith("/")
    assert cc.compare_experiments(src, dst) >= 4
    assert cc.compare_runs(src, dst) >= 10


def test_run_of_mlflow_0_x_is_invalid_input(tree_100, tmp_path):
    """A run MLflow 0.x made and no later release rewrote has run_uuid but no run_id in its
    meta.yaml (0.9 wrote exactly that); MLflow 3's reader cannot read it: invalid input, named,
    and --skip-invalid migrates the rest."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(tree_100[0], mlruns)
    meta = next(p for p in sorted(mlruns.glob("*/*/meta.yaml")) if "run_id:" in p.read_text())
    meta.write_text("".join(line for line in meta.read_text().splitlines(True) if not line.startswith("run_id:")))
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{meta}: run_uuid without run_id: a run of MLflow 0.x" in result.stderr
    assert not db.exists()
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        runs_in_db = {r for (r,) in conn.execute("SELECT run_uuid FROM runs")}
    assert meta.parent.name not in runs_in_db and len(runs_in_db) == len(runs(tree_100[0])) - 1

