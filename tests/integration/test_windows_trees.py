"""A tree written on Windows migrates unchanged: its artifact locations are Windows file URIs
(``file:///C:/...``), which a migration must carry byte for byte, whatever OS it runs on.

The tree is real (the fixture generator under the installed MLflow); only the location prefix
is rewritten to what MLflow on Windows writes, since the test may not run on Windows.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import generate_fixture_tree, run_cli
from tests.trees import sql_client

# What MLflow on Windows writes for a tree under C:\Users\José M\mlruns (Path.as_uri()).
WINDOWS_ROOT = "file:///C:/Users/Jos%C3%A9%20M/mlruns"
# A plain drive path, as some older MLflow versions wrote an experiment's artifact_location.
WINDOWS_PATH = "C:\\Users\\José M\\mlruns"
LOCATION_FIELDS = ("artifact_location", "artifact_uri", "source", "storage_location")


@pytest.fixture(scope="module")
def windows_tree(tmp_path_factory) -> tuple[Path, dict[Path, dict[str, str]]]:
    """The tree, and {rewritten meta.yaml: {field: Windows value}}."""
    mlruns = generate_fixture_tree(tmp_path_factory.mktemp("windows") / "tree") / "mlruns"
    local = mlruns.as_uri()
    rewritten: dict[Path, dict[str, str]] = {}
    for meta in sorted(mlruns.rglob("meta.yaml")):
        text = meta.read_text(encoding="utf-8")
        if local not in text:
            continue
        # A text edit, not a YAML round trip: the rest of the file stays exactly as MLflow wrote it.
        meta.write_text(text.replace(local, WINDOWS_ROOT), encoding="utf-8")
        data = yaml.safe_load(meta.read_text(encoding="utf-8"))
        rewritten[meta] = {f: data[f] for f in LOCATION_FIELDS if str(data.get(f, "")).startswith(WINDOWS_ROOT)}
    # One experiment with a drive path instead of a URI.
    exp_meta = next(m for m, fields in rewritten.items() if "artifact_location" in fields
                    and "experiment_id" in yaml.safe_load(m.read_text(encoding="utf-8")))
    data = yaml.safe_load(exp_meta.read_text(encoding="utf-8"))
    data["artifact_location"] = f"{WINDOWS_PATH}\\{data['experiment_id']}"
    exp_meta.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    rewritten[exp_meta] = {"artifact_location": data["artifact_location"]}
    for tag in mlruns.rglob("mlflow.artifactLocation"):
        tag.write_bytes(tag.read_bytes().replace(local.encode(), WINDOWS_ROOT.encode()))
    kinds = {kind for fields in rewritten.values() for kind in fields}
    assert {"artifact_location", "artifact_uri", "source"} <= kinds, kinds
    return mlruns, rewritten


def test_windows_artifact_locations_migrate_byte_for_byte(windows_tree, tmp_path):
    mlruns, rewritten = windows_tree
    db = tmp_path / "mlflow.db"
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(report.read_text())["verification"]["status"] == "SUCCESS"

    client = sql_client(db)
    conn = sqlite3.connect(db)
    try:
        checked = 0
        for meta_path, fields in rewritten.items():
            meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
            # A model version's meta also names its run: look at the version first.
            if "version" in meta:
                version = client.get_model_version(meta["name"], str(meta["version"]))
                read = {"source": version.source}
                key = ("model_versions", "name = ? AND version = ?", (meta["name"], int(meta["version"])))
            elif "run_id" in meta or "run_uuid" in meta:
                run_id = meta.get("run_id") or meta["run_uuid"]
                read = {"artifact_uri": client.get_run(run_id).info.artifact_uri}
                key = ("runs", "run_uuid = ?", (run_id,))
            elif "model_id" in meta:
                read = {"artifact_location": client.get_logged_model(meta["model_id"]).artifact_location}
                key = ("logged_models", "model_id = ?", (meta["model_id"],))
            else:
                read = {"artifact_location": client.get_experiment(str(meta["experiment_id"])).artifact_location}
                key = ("experiments", "experiment_id = ?", (int(meta["experiment_id"]),))
            for field, value in read.items():
                if field in fields:
                    assert value == fields[field], (meta_path, field)
            table, where, args = key
            for field, value in fields.items():
                # Brackets, not quotes: SQLite reads an unknown "name" as a string literal.
                (stored,) = conn.execute(
                    f"SELECT CAST([{field}] AS BLOB) FROM [{table}] WHERE {where}", args
                ).fetchone()
                assert stored == value.encode("utf-8"), (meta_path, field)
                checked += 1
        trace_locations = [v for (v,) in conn.execute(
            "SELECT value FROM trace_tags WHERE key = 'mlflow.artifactLocation'")]
    finally:
        conn.close()
    assert checked >= len(rewritten)
    assert trace_locations and all(v.startswith(WINDOWS_ROOT) for v in trace_locations)
