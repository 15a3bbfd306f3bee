"""Registry verification by bytes (etl/verify/registry.py): a clean registry is proven without
importing MLflow; a target with one wrong field is never proven by bytes, and `etl-migrate verify`
names that field (through MLflow's reader, which takes over the one registered model the bytes
could not prove); a registered model whose files MLflow writes otherwise (a key the bytes do not
know) is proven by MLflow's reader instead.

One tree made with MLflow's public API holds one registered model per planted corruption (each
with tags, an alias, an archived version from a run, a version of a logged model, a deleted
version) and a prompt; the corruptions are planted in one copy of the database, each in its own
registered model, so one `etl-migrate verify` run names them all.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from etl.verify.registry import VERSION_FIELDS, _matches_files, _target, valid_model_name, valid_tag_key, verify_registry
from tests.conftest import run_cli
from tests.trees import default_uris, file_client

# case -> (SQL planting it in the registered model named :m, [(entity, id, field), ...] the
# report must hold for it; "{m}" is the registered model's name).
CORRUPTIONS = {
    "description": ("UPDATE registered_models SET description = 'changed' WHERE name = :m",
                    [("registered_models", "{m}", "description")]),
    "created": ("UPDATE registered_models SET creation_time = creation_time + 1 WHERE name = :m",
                [("registered_models", "{m}", "creation_timestamp")]),
    "updated": ("UPDATE registered_models SET last_updated_time = NULL WHERE name = :m",
                [("registered_models", "{m}", "last_updated_timestamp")]),
    "name": ("UPDATE registered_models SET name = :m || '-renamed' WHERE name = :m",
             [("registered_models", "{m}", "presence"), ("registered_models", "{m}-renamed", "presence")]),
    "tag": ("UPDATE registered_model_tags SET value = value || 'x' WHERE name = :m AND key = 'nested/key'",
            [("registered_models", "{m}", "nested/key")]),
    "tag lost": ("DELETE FROM registered_model_tags WHERE name = :m AND key = 'team'",
                 [("registered_models", "{m}", "team")]),
    "tag extra": ("INSERT INTO registered_model_tags (name, key, value) VALUES (:m, 'extra', 'x')",
                  [("registered_models", "{m}", "extra")]),
    "alias": ("UPDATE registered_model_aliases SET version = 1 WHERE name = :m",
              [("registered_models", "{m}", "champion")]),
    "alias extra": ("INSERT INTO registered_model_aliases (name, alias, version) VALUES (:m, 'other', 1)",
                    [("registered_models", "{m}", "other")]),
    "version extra": ("INSERT INTO model_versions (name, version, creation_time, current_stage, status) "
                      "VALUES (:m, 9, 1, 'None', 'READY')", [("model_versions", "{m}/9", "presence")]),
    "version lost": ("DELETE FROM model_versions WHERE name = :m AND version = 2",
                     [("model_versions", "{m}/2", "presence")]),
    "version tag": ("UPDATE model_version_tags SET value = 'x' WHERE name = :m AND version = 1",
                    [("model_versions", "{m}/1", "note.first")]),
    "deleted version": ("UPDATE model_versions SET current_stage = 'None' WHERE name = :m AND version = 3",
                        [("model_versions", "{m}/3", "current_stage")]),
    # MLflow's SQL store reads versions WHERE current_stage != 'Deleted_Internal': NULL hides it.
    "stage null": ("UPDATE model_versions SET current_stage = NULL WHERE name = :m AND version = 1",
                   [("model_versions", "{m}/1", "current_stage")]),
    "prompt tag": ("DELETE FROM registered_model_tags WHERE name = :m AND key = 'mlflow.prompt.is_prompt'",
                   [("registered_models", "{m}", "mlflow.prompt.is_prompt")]),
}
# Each column of a model version: the version of a logged model (storage_location from the
# logged model, source models:/...) or the archived one from a run (run_id, run_link).
for field in VERSION_FIELDS:
    column = {"creation_timestamp": "creation_time", "last_updated_timestamp": "last_updated_time"}.get(field, field)
    version = 2 if field == "storage_location" else 1
    CORRUPTIONS[f"version {field}"] = (
        f"UPDATE model_versions SET {column} = CASE WHEN typeof({column}) = 'integer' THEN {column} + 1 "
        f"ELSE coalesce({column}, '') || 'x' END WHERE name = :m AND version = {version}",
        [("model_versions", f"{{m}}/{version}", field)],
    )


def model_name(case: str) -> str:
    return "m-" + case.replace(" ", "-")


def build_registry_tree(mlruns) -> None:
    import mlflow

    client = file_client(mlruns)
    # A version of a logged model looks the model up through the default tracking URI.
    with default_uris(mlruns):
        exp = client.create_experiment("registry")
        run = client.create_run(exp).info.run_id
        client.set_terminated(run)
        model = client.create_logged_model(exp, source_run_id=run)
        for case in [*CORRUPTIONS, "control"]:
            if case == "prompt tag":
                mlflow.genai.register_prompt(name=model_name(case), template="Answer {{q}}")
                continue
            name = model_name(case)
            client.create_registered_model(name, tags={"team": "数据", "nested/key": "v"}, description=f"model {case}")
            client.create_model_version(name, f"runs:/{run}/model", run_id=run, tags={"note.first": "yes"},
                                        run_link="http://server/run", description="from a run")
            client.create_model_version(name, f"models:/{model.model_id}", model_id=model.model_id)
            client.create_model_version(name, f"runs:/{run}/model", run_id=run)
            client.transition_model_version_stage(name, "1", "Archived")
            client.delete_model_version(name, "3")
            client.set_registered_model_alias(name, "champion", "2")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    mlruns = root / "mlruns"
    build_registry_tree(mlruns)
    db = root / "clean.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--no-verify", "-q")
    assert result.returncode == 0, result.stderr
    return mlruns, db


def proven(mlruns, db, name: str) -> bool:
    versions = _matches_files(str(mlruns / "models" / name), name, _target(str(db)))
    return versions is not None


def test_a_clean_registry_is_proven_by_bytes_without_importing_mlflow(migrated):
    mlruns, db = migrated
    code = (
        "import sys; from etl.verify.registry import verify_registry; "
        f"r = verify_registry({str(mlruns)!r}, {str(db)!r}); "
        "print(r.ok, r.results['registered_models'].checked, r.results['model_versions'].checked, "
        "'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    models = len(CORRUPTIONS) + 1
    # The prompt has one version; every other model three (one of them deleted).
    assert out.split() == ["True", str(models), str(3 * (models - 1) + 1), "False"]


def test_the_tree_holds_what_the_cases_need(migrated):
    """The fields the cases change hold values (a corruption of a None could hide nothing)."""
    mlruns, db = migrated
    conn = sqlite3.connect(db)
    try:
        stages = dict(conn.execute("SELECT version, current_stage FROM model_versions WHERE name = 'm-control'"))
        v2 = conn.execute("SELECT source, storage_location FROM model_versions "
                          "WHERE name = 'm-control' AND version = 2").fetchone()
    finally:
        conn.close()
    assert stages == {1: "Archived", 2: "None", 3: "Deleted_Internal"}
    assert v2[0].startswith("models:/") and v2[1].endswith("/artifacts")


@pytest.fixture(scope="module")
def corrupted(migrated, tmp_path_factory):
    mlruns, clean = migrated
    db = tmp_path_factory.mktemp("corrupt") / "corrupt.db"
    shutil.copyfile(clean, db)
    conn = sqlite3.connect(db)
    try:
        for case, (sql, _) in CORRUPTIONS.items():
            assert conn.execute(sql, {"m": model_name(case)}).rowcount == 1, case
        conn.commit()
    finally:
        conn.close()
    return mlruns, db


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_a_corrupted_registered_model_is_never_proven_by_bytes(migrated, corrupted, case):
    mlruns, clean = migrated
    name = model_name(case)
    assert proven(mlruns, clean, name)
    assert not proven(mlruns, corrupted[1], name)


def test_etl_migrate_verify_names_every_planted_field(corrupted, tmp_path):
    mlruns, db = corrupted
    assert proven(mlruns, db, "m-control")
    report_path = tmp_path / "report.json"
    result = run_cli("verify", "--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 1, result.stdout + result.stderr
    named = {(m["entity"], m["id"], m["field"]) for m in json.loads(report_path.read_text())["verification"]["mismatches"]}
    expected = {
        (entity, id_.format(m=model_name(case)), field)
        for case, (_, found) in CORRUPTIONS.items() for entity, id_, field in found
    }
    assert named == expected
    assert "FAILED: model version m-version-storage_location/2" in result.stderr


def test_a_layout_the_bytes_do_not_know_is_proven_by_mlflows_reader(migrated, tmp_path):
    """A key MLflow's writer does not write (a newer or older MLflow's), in one registered model
    and one model version: those two registered models go to MLflow's reader, which passes them."""
    mlruns, db = migrated
    tree = tmp_path / "mlruns"
    shutil.copytree(mlruns, tree, symlinks=True)
    with open(tree / "models" / "m-description" / "meta.yaml", "a") as f:
        f.write("future_field: 1\n")
    with open(tree / "models" / "m-tag" / "version-2" / "meta.yaml", "a") as f:
        f.write("future_field: 1\n")
    assert not proven(tree, db, "m-description") and not proven(tree, db, "m-tag")
    assert proven(tree, db, "m-control")
    report = verify_registry(str(tree), str(db))
    assert report.ok, report.to_text()
    assert report.results["registered_models"].checked == len(CORRUPTIONS) + 1


def test_a_folder_without_meta_yaml_is_no_registered_model(migrated, tmp_path):
    """MLflow's reader skips it, so a target holding it is reported, by bytes as by MLflow."""
    mlruns, db = migrated
    tree = tmp_path / "mlruns"
    shutil.copytree(mlruns, tree, symlinks=True)
    (tree / "models" / "m-control" / "meta.yaml").unlink()
    report = verify_registry(str(tree), str(db))
    named = {(m.entity, m.id, m.field) for m in report.mismatches}
    assert named == {("registered_models", "m-control", "presence"),
                     *{("model_versions", f"m-control/{v}", "presence") for v in (1, 2, 3)}}


def test_names_and_keys_the_bytes_accept_are_accepted_by_mlflow():
    """The name and tag key rules are MLflow's (or stricter, where MLflow's differ by platform)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry.file_store import _validate_model_name
    from mlflow.utils.validation import _validate_tag_name

    samples = ["model", "数据 model", "a.b", "a..b", "..a", ".", "..", "a/b", "a:b", "50%", " ", "",
               "a b", "/a", "a/", "a//b", "a/./b", "a\\b", "x-y_z", "mlflow.prompt.is_prompt", "tab\t"]
    for rule, mlflow_rule in ((valid_model_name, _validate_model_name), (valid_tag_key, _validate_tag_name)):
        for sample in samples:
            if rule(sample):
                try:
                    mlflow_rule(sample)
                except MlflowException as e:
                    pytest.fail(f"{rule.__name__} accepts {sample!r}, which MLflow refuses: {e}")
    assert valid_model_name("数据 model") and valid_tag_key("nested/key")
