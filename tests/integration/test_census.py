"""The census: every path under the source is migrated, kept in place, or named as a stray.

A real tree written by MLflow (every entity kind) with files a user or a newer MLflow might leave
there: a note beside the experiments, a scratch folder in an experiment, unknown folders in a
run (one holding YAML: a warning), and loose files in each kind of folder the FileStore writes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import generate_fixture_tree, run_cli
from tests.trees import file_client

WARNING_REASON = "holds YAML files where MLflow writes none: data of a newer MLflow? It was NOT migrated"


def _first(pattern: str, mlruns: Path) -> Path:
    found = sorted(mlruns.glob(pattern))
    assert found, f"the fixture tree has no {pattern}"
    return found[0]


def plant_strays(mlruns: Path) -> tuple[list[str], list[str]]:
    """Plant files that are not FileStore data; return (every stray entry, the warnings), as
    the report must list them: relative to mlruns, a folder as one entry ending in '/'."""
    run_input = _first("*/*/inputs/*/meta.yaml", mlruns).parent
    run = run_input.parent.parent
    experiment = run.parent
    trace = _first("*/traces/*/trace_info.yaml", mlruns).parent
    dataset = _first("*/datasets/*/meta.yaml", mlruns).parent
    version = _first("models/*/version-*/meta.yaml", mlruns).parent
    registered = version.parent

    (mlruns / "NOTES.txt").write_text("moved to the database on Monday\n")
    (experiment / "scratch" / "plots").mkdir(parents=True)
    (experiment / "scratch" / "plots" / "loss.png").write_bytes(b"\x89PNG")
    (experiment / "scratch" / "todo.txt").write_text("tune lr\n")
    (run / "unknown").mkdir()
    (run / "unknown" / "blob.bin").write_bytes(b"\0" * 10)
    (run / "evaluations" / "deep").mkdir(parents=True)
    (run / "evaluations" / "deep" / "eval-1.yaml").write_text("score: 1\n")
    (run_input / "extra.txt").write_text("x")
    (trace / "spans.bak").write_text("x")
    (experiment / "traces" / "index.yaml").write_text("a: 1\n")
    (dataset / "preview.csv").write_text("a,b\n")
    (mlruns / ".trash" / "deleted-by-hand.txt").write_text("x")
    (mlruns / "models" / "registry-notes.md").write_text("x")
    (registered / "owners.txt").write_text("x")
    (version / "signature").mkdir()
    (version / "signature" / "input.json").write_text("{}")
    # Folders named like experiments by str.isdigit() only, each with a copy of an experiment's
    # meta.yaml: not ids MLflow gives ('²' int() refuses; '٣' int() reads as 3).
    for folder in (mlruns / "²", mlruns / ".trash" / "٣"):
        folder.mkdir()
        shutil.copyfile(experiment / "meta.yaml", folder / "meta.yaml")

    def rel(path: Path, folder: bool) -> str:
        return path.relative_to(mlruns).as_posix() + ("/" if folder else "")

    strays = sorted([
        rel(mlruns / "NOTES.txt", False),
        rel(experiment / "scratch", True),
        rel(run / "unknown", True),
        rel(run / "evaluations", True),
        rel(run_input / "extra.txt", False),
        rel(trace / "spans.bak", False),
        rel(experiment / "traces" / "index.yaml", False),
        rel(dataset / "preview.csv", False),
        rel(mlruns / ".trash" / "deleted-by-hand.txt", False),
        rel(mlruns / "models" / "registry-notes.md", False),
        rel(registered / "owners.txt", False),
        rel(version / "signature", True),
        rel(mlruns / "²", True),
        rel(mlruns / ".trash" / "٣", True),
    ])
    warnings = sorted([rel(run / "evaluations", True), rel(experiment / "traces" / "index.yaml", False),
                       rel(mlruns / "²", True), rel(mlruns / ".trash" / "٣", True)])
    return strays, warnings


def files_under(path: Path) -> int:
    if path.is_file():
        return 1
    return sum(len(files) for _root, _dirs, files in os.walk(path))


def artifact_folders(mlruns: Path) -> list[Path]:
    """Every artifacts/ folder MLflow made for a run, a trace or a logged model."""
    return [p for p in mlruns.rglob("artifacts")
            if p.is_dir() and "artifacts" not in p.relative_to(mlruns).parts[:-1]]


def log_artifacts(mlruns: Path, work: Path) -> None:
    """Artifacts of a run and of a logged model, written by MLflow: kept in place, not listed."""
    client = file_client(mlruns)
    run_id = _first("*/*/inputs", mlruns).parent.name
    client.log_text(run_id, "a note\n", "notes/readme.txt")
    weights = work / "weights.bin"
    weights.write_bytes(b"\1" * 64)
    client.log_model_artifact(_first("*/models/*/meta.yaml", mlruns).parent.name, str(weights))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    work = tmp_path_factory.mktemp("census")
    mlruns = generate_fixture_tree(work / "tree") / "mlruns"
    log_artifacts(mlruns, work)
    strays, warnings = plant_strays(mlruns)
    report = work / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{work}/mlflow.db",
                     "--report", str(report), "--verbose", "--log-format", "json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "mlruns": mlruns, "strays": strays, "warnings": warnings,
            "result": result, "report": json.loads(report.read_text())}


def test_report_names_every_stray_once_and_warns_on_yaml(planted):
    census = planted["report"]["census"]
    assert census["not_filestore"] == planted["strays"]
    assert census["warnings"] == [{"path": p, "reason": WARNING_REASON} for p in planted["warnings"]]
    assert census["counts"]["not_filestore_entries"] == len(planted["strays"])


def test_every_file_falls_in_exactly_one_class(planted):
    mlruns, census = planted["mlruns"], planted["report"]["census"]
    artifacts = artifact_folders(mlruns)
    assert census["counts"]["kept_in_place_folders"] == len(artifacts) == sum(census["kept_in_place"].values())
    assert census["kept_in_place"]["run_artifacts"] == len([p for p in artifacts if p.parent.parent.name != "traces"
                                                            and p.parent.parent.name != "models"])
    assert census["kept_in_place"]["trace_artifacts"] == len([p for p in artifacts if p.parent.parent.name == "traces"])
    assert census["kept_in_place"]["logged_model_artifacts"] == 1
    # Files migrated are the files the load read, table by table.
    assert census["counts"]["migrated_files"] == planted["report"]["files"] == sum(census["migrated"].values())
    assert census["migrated"]["runs"] == planted["report"]["counts"]["source"]["runs"]
    assert census["migrated"]["trace_info"] == planted["report"]["counts"]["source"]["trace_info"]
    in_artifacts = sum(files_under(p) for p in artifacts)
    in_strays = sum(files_under(mlruns / p) for p in census["not_filestore"])
    assert census["counts"]["migrated_files"] + in_artifacts + in_strays == files_under(mlruns)


def test_summary_prints_the_three_counts_and_each_warning(planted):
    counts = planted["report"]["census"]["counts"]
    stdout = planted["result"].stdout
    assert (f"Census of the source: {counts['migrated_files']:,} files migrated into "
            f"{len(planted['report']['census']['migrated'])} tables; {counts['kept_in_place_folders']:,} "
            f"artifact folders kept in place; {len(planted['strays'])} entries not FileStore data") in stdout
    for path in planted["warnings"]:
        assert f"WARNING: {path} {WARNING_REASON}" in stdout
    assert "Status: SUCCESS" in stdout  # strays are no error


def test_verbose_logs_every_stray(planted):
    mlruns = planted["mlruns"]
    events = [json.loads(line) for line in planted["result"].stderr.splitlines() if line.startswith("{")]
    logged = {e["path"]: e["level"] for e in events if e["event"] == "not FileStore data, not migrated"}
    expected = {str(mlruns / p.rstrip("/")): "warning" if p in planted["warnings"] else "debug"
                for p in planted["strays"]}
    assert logged == expected


def test_verify_command_and_dry_run_report_the_same_census(planted, tmp_path):
    work, mlruns = planted["work"], planted["mlruns"]
    report = tmp_path / "verify.json"
    result = run_cli("verify", "--source", str(mlruns), "--target", f"sqlite:///{work}/mlflow.db",
                     "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(report.read_text())["census"] == planted["report"]["census"]
    for path in planted["warnings"]:
        assert f"WARNING: {path} {WARNING_REASON}" in result.stdout

    report = tmp_path / "dry.json"
    result = run_cli("--dry-run", "--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/none.db",
                     "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(report.read_text())["census"] == planted["report"]["census"]
    assert f"{len(planted['strays'])} entries not FileStore data" in result.stdout


def test_a_clean_tree_has_no_strays(planted, tmp_path):
    """Removing what was planted leaves nothing unaccounted for (no false strays)."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(planted["mlruns"], mlruns)
    for path in planted["strays"]:
        target = mlruns / path.rstrip("/")
        shutil.rmtree(target) if path.endswith("/") else target.unlink()
    report = tmp_path / "dry.json"
    result = run_cli("--dry-run", "--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/none.db",
                     "--report", str(report))
    assert result.returncode == 0, result.stderr
    census = json.loads(report.read_text())["census"]
    assert census["not_filestore"] == [] and census["warnings"] == []
    assert census["migrated"] == planted["report"]["census"]["migrated"]
    assert "0 entries not FileStore data, not migrated\n" in result.stdout
