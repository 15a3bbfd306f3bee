"""Every entity of a real fixture tree, migrated, then read through MlflowClient on both sides.

Runs on each tree given with --fixtures-dir (made by scripts/generate_migration_fixtures.py
under any MLflow version), or on a small tree the installed MLflow makes when none is given.
Each test runs only when the tree holds that kind of entity: found by looking in the tree, not
by guessing from a version number. Every tree goes into each target, a SQLite file, a PostgreSQL
database and a MariaDB database (compared through the run's experiment id map: PostgreSQL's and
MySQL's ids are 32-bit).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import client_compare as cc
from tests.conftest import generate_fixture_tree, mysql_client, pg_client, run_cli, tree_fingerprint
from tests.trees import file_client, sql_client


@pytest.fixture(scope="session")
def fixture_root(fixture_tree_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fixture")
    if fixture_tree_dir == "<generated>":
        return generate_fixture_tree(work / "tree")
    # A private copy: the tree given may be shared, and the run must not depend on its path.
    root = work / "tree"
    shutil.copytree(fixture_tree_dir, root, symlinks=True)
    return root


@pytest.fixture(scope="session", params=["sqlite", "postgresql", "mysql"])
def migrated(request, fixture_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("migrated")
    mlruns = fixture_root / "mlruns"
    before = tree_fingerprint(mlruns)
    if request.param == "sqlite":
        db = work / "mlflow.db"
        target = f"sqlite:///{db}"
    else:
        server = request.getfixturevalue("pg_server" if request.param == "postgresql" else "mysql_server")
        target = server.create_database(f"fixture_{work.name}".lower())
    report = work / "report.json"
    result = run_cli("--source", str(fixture_root), "--target", target, "--workers", "4",
                     "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(report.read_text())
    return {"mlruns": mlruns, "target": target, "result": result, "before": before, "report": data,
            "id_map": data["experiment_id_map"]}


@pytest.fixture(scope="session")
def clients(migrated):
    target = migrated["target"]
    if target.startswith("sqlite"):
        dst = sql_client(Path(target[len("sqlite:///"):]))
    else:
        dst = mysql_client(target) if target.startswith("mysql") else pg_client(target)
    return file_client(migrated["mlruns"]), dst


@pytest.fixture(scope="session")
def id_map(migrated) -> dict[str, str]:
    return migrated["id_map"]


def has(mlruns: Path, pattern: str) -> bool:
    return next(mlruns.glob(pattern), None) is not None


def require(migrated, pattern: str, what: str) -> None:
    if not has(migrated["mlruns"], pattern):
        pytest.skip(f"this tree holds no {what}")


def test_verified_clean_and_source_untouched(migrated):
    assert "Status: SUCCESS" in migrated["result"].stdout
    assert tree_fingerprint(migrated["mlruns"]) == migrated["before"]


def test_census_finds_nothing_but_filestore_data(migrated):
    """Every entry MLflow wrote is classified: nothing is a stray, every file read is counted, and
    the verify command's walk (folders listed, no file read) takes the same census."""
    from etl.source.census import census_tree
    from etl.summary import census_dict

    census = migrated["report"]["census"]
    assert census["not_filestore"] == [] and census["warnings"] == []
    assert census["counts"]["migrated_files"] == migrated["report"]["files"]
    assert census["kept_in_place"]["run_artifacts"] >= 1
    assert census_dict(census_tree(migrated["mlruns"]), str(migrated["mlruns"])) == census


def test_experiment_ids_kept_where_they_fit(migrated, id_map):
    """SQLite holds every FileStore id; PostgreSQL and MySQL renumber exactly the ids over 32 bits."""
    ids = [int(p.parent.name) for pattern in ("*/meta.yaml", ".trash/*/meta.yaml")
           for p in migrated["mlruns"].glob(pattern) if p.parent.name.isdigit()]
    if migrated["target"].startswith("sqlite"):
        assert id_map == {}
    else:
        assert sorted(int(i) for i in id_map) == sorted(i for i in ids if i > 2**31 - 1)
        kept = [i for i in ids if i <= 2**31 - 1]
        assert sorted(int(v) for v in id_map.values()) == list(
            range(max(kept, default=-1) + 1, max(kept, default=-1) + 1 + len(id_map)))


def test_experiments(clients, id_map):
    assert cc.compare_experiments(*clients, id_map) >= 2


def test_runs_params_tags_metrics(clients, id_map):
    assert cc.compare_runs(*clients, id_map) >= 2


def test_registered_models_and_versions(migrated, clients):
    require(migrated, "models/*/meta.yaml", "registered models")
    assert cc.compare_registry(*clients) >= 1


def test_registry_is_proven_by_bytes(migrated):
    """Each MLflow era's registry files are ones the byte comparison knows: proven without
    MLflow's reader (etl/verify/registry.py), so a registry costs no MLflow import."""
    require(migrated, "models/*/meta.yaml", "registered models")
    if not migrated["target"].startswith("sqlite:///"):
        pytest.skip("the same files; checked once, on the SQLite target")
    code = (
        "import sys; from etl.verify.registry import verify_registry; "
        f"r = verify_registry({str(migrated['mlruns'])!r}, {migrated['target'][len('sqlite:///'):]!r}); "
        "print(r.ok, r.results['registered_models'].checked > 0, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False"]


def test_datasets_inputs_outputs(migrated, clients):
    require(migrated, "*/*/inputs/*/meta.yaml", "run inputs")
    assert cc.compare_run_inputs_outputs(*clients) >= 1


def test_traces_and_assessments(migrated, clients, id_map):
    require(migrated, "*/traces/*/trace_info.yaml", "traces")
    n_traces, n_assessments = cc.compare_traces(*clients, id_map)
    assert n_traces >= 1
    if has(migrated["mlruns"], "*/traces/*/assessments/*.yaml"):
        assert n_assessments >= 1


def test_logged_models(migrated, clients, id_map):
    require(migrated, "*/models/*/meta.yaml", "logged models")
    assert cc.compare_logged_models(*clients, id_map) >= 1


def test_prompts(migrated, clients, id_map):
    require(migrated, "models/*/tags/mlflow.prompt.is_prompt", "prompts")
    assert cc.compare_prompts(*clients, id_map) >= 1
