"""What a user sees: dry run, the JSON report, logs, --no-verify, the verify command."""

from __future__ import annotations

import importlib.metadata
import json
import shutil

import pytest

from tests.conftest import posix_only, run_cli, tree_fingerprint
from tests.trees import build_core_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    mlruns = tmp_path_factory.mktemp("cli") / "mlruns"
    ids = build_core_tree(mlruns)
    return mlruns, ids


def test_dry_run_counts_and_writes_nothing(tree, tmp_path):
    mlruns, _ = tree
    target_dir = tmp_path / "out"
    target_dir.mkdir()
    (target_dir / "keep.txt").write_text("untouched")
    before = tree_fingerprint(target_dir)
    result = run_cli("--dry-run", "--source", str(mlruns), "--target", f"sqlite:///{target_dir}/mlflow.db")
    assert result.returncode == 0, result.stderr
    assert "nothing was written" in result.stdout
    assert "runs" in result.stdout and "metrics" in result.stdout
    assert tree_fingerprint(target_dir) == before


def test_dry_run_lists_problems_and_still_writes_nothing(tree, tmp_path):
    mlruns, ids = tree
    bad = tmp_path / "mlruns"
    shutil.copytree(mlruns, bad)
    meta = next(bad.glob(f"*/{ids['killed_run']}")) / "meta.yaml"
    meta.write_bytes(b"")
    result = run_cli("--dry-run", "--source", str(bad), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3
    assert f"{meta}: empty file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]


def test_report_json_holds_what_it_claims(tree, tmp_path):
    mlruns, _ = tree
    report_path = tmp_path / "report.json"
    db = tmp_path / "mlflow.db"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["schema_version"] == 1
    assert report["tool"]["name"] == "etl-migrate" and report["mlflow_version"] and report["sqlite_version"]
    assert report["exit_status"] == 0 and report["command"] == "migrate"
    assert report["target"] == str(db)
    assert report["counts"]["source"]["runs"] == report["counts"]["target"]["runs"] == 7
    # Three metric lines of one point logged twice: the source holds one more than the target.
    assert report["counts"]["source"]["metrics"] == report["counts"]["target"]["metrics"] + 1
    assert set(report["phases"]) >= {"schema", "load", "verify", "promote"}
    assert report["throughput"]["rows"] == sum(report["counts"]["source"].values())
    assert report["verification"]["status"] == "SUCCESS"
    assert report["verification"]["entities"]["runs"] == {"checked": 7, "passed": 7, "skipped": 0, "unit": "runs"}
    assert report["verification"]["entities"]["metrics"]["unit"] == "series"
    assert report["verification"]["entities"]["params"]["unit"] == "runs"


def test_piped_logs_are_json_lines_and_no_verify_is_loud(tree, tmp_path):
    mlruns, _ = tree
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db", "--no-verify")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert any(e["level"] == "warning" and "verification skipped" in e["event"] for e in events)
    assert events[-1]["event"] == "run finished" and events[-1]["exit_status"] == 0
    assert "WARNING: verification was skipped" in result.stdout


def test_quiet_prints_nothing_on_success(tree, tmp_path):
    mlruns, _ = tree
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db", "-q")
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""


def test_quiet_is_errors_only_even_with_no_verify(tree, tmp_path):
    """--help promises nothing but errors: not even --no-verify's warning, which the report
    keeps; an error still prints."""
    mlruns, _ = tree
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db",
                     "--no-verify", "-q", "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert json.loads(report.read_text())["verification"] == {"skipped": True}
    failed = run_cli("verify", "-q", "--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/none.db")
    assert failed.returncode == 2 and "does not exist" in failed.stderr
    assert "Print nothing but errors" in run_cli("--help").stdout


def test_verify_command_on_missing_database(tree, tmp_path):
    mlruns, _ = tree
    result = run_cli("verify", "--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/none.db")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_help_documents_exit_codes():
    result = run_cli("--help")
    assert result.returncode == 0
    for code in ("0", "1", "2", "3", "4", "130", "143"):
        assert f"  {code:>3}  " in result.stdout


def test_tracking_only_tree_and_relative_source(tree, tmp_path):
    """A tree never used with the registry has no models/ folder; --source may be relative."""
    mlruns, _ = tree
    copy = tmp_path / "mlruns"
    shutil.copytree(mlruns, copy)
    shutil.rmtree(copy / "models")
    result = run_cli("--source", "mlruns", "--target", "sqlite:///mlflow.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Status: SUCCESS" in result.stdout
    assert not (copy / "models").exists()  # the verifier did not create it either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns"]


TELEMETRY_PROBE = """
import atexit, json, os, sys

def _probe():
    try:
        from mlflow.telemetry.client import get_telemetry_client
    except ImportError:  # a release without usage telemetry
        result = {"client": None, "telemetry": False}
    else:
        result = {"client": get_telemetry_client() is not None, "telemetry": True}
    with open(os.environ["TELEMETRY_PROBE_OUT"], "w") as f:
        json.dump(result, f)

atexit.register(_probe)
"""


@pytest.mark.parametrize("user_setting", [None, "false"])
def test_mlflow_usage_telemetry_is_off_unless_the_user_turns_it_on(tree, tmp_path, user_setting):
    """MLflow reports usage from any process that imports it, unless told not to or run under
    CI; the run must not, from a user's shell (no CI variables), and a user's own setting wins."""
    import os
    import sys

    mlruns, _ = tree
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(TELEMETRY_PROBE)
    out = tmp_path / "telemetry.json"
    ci_markers = {"CI", "GITHUB_ACTIONS", "PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in ci_markers}
    env["PYTHONPATH"] = os.pathsep.join([str(probe_dir), *sys.path])
    env["TELEMETRY_PROBE_OUT"] = str(out)
    if user_setting is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = user_setting
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db", "-q", env=env)
    assert result.returncode == 0, result.stderr
    probe = json.loads(out.read_text())
    if not probe["telemetry"]:
        pytest.skip("the installed MLflow has no usage telemetry")
    assert probe["client"] is (user_setting == "false")


@posix_only("the printed command line is run by a POSIX shell")
def test_server_command_works_as_printed_outside_uv(tree, tmp_path):
    """Not started by uv: the printed command is this environment's MLflow, as `mlflow` where the
    shell finds that one, else through this interpreter's path; each starts MLflow's server
    command as printed (here with --help appended, which stops it after parsing)."""
    import os
    import subprocess
    import sys

    mlruns, _ = tree
    here = os.path.dirname(sys.executable)
    others = [p for p in os.environ["PATH"].split(os.pathsep) if p and os.path.abspath(p) != os.path.abspath(here)]
    env = {k: v for k, v in os.environ.items() if k not in ("UV", "VIRTUAL_ENV")}
    for path, program in ((os.pathsep.join([here, *others]), "mlflow"), (os.pathsep.join(others), sys.executable)):
        db = tmp_path / f"{len(program)}.db"
        result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--no-verify",
                         env={**env, "PATH": path})
        assert result.returncode == 0, result.stderr
        named, command = result.stdout.rstrip().splitlines()[-2:]
        assert named == (f"The database has the schema of MLflow {importlib.metadata.version('mlflow')}; "
                         "start a server of that version on it:")
        assert command.strip().startswith(f"{program} ") and command.endswith(f"--backend-store-uri sqlite:///{db}")
        shown = subprocess.run(["bash", "-c", command + " --help"], env={**env, "PATH": path},
                               capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0 and "--backend-store-uri" in shown.stdout, shown.stderr[-2000:]


def test_dry_run_on_a_filled_target_runs_and_says_a_real_run_would_refuse_it(tree, tmp_path):
    """A dry run writes nothing, so a target holding data does not stop it: it reads the whole
    tree, prints what it would migrate, and ends with the status and reason a real run would."""
    mlruns, _ = tree
    db = tmp_path / "mlflow.db"
    assert run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "-q").returncode == 0
    before = tree_fingerprint(tmp_path)
    result = run_cli("--dry-run", "--source", str(mlruns), "--target", f"sqlite:///{db}")
    assert result.returncode == 2
    assert "This is what would be migrated:" in result.stdout and "runs" in result.stdout
    assert "No problems found in the tree, but a real run would refuse the target (see below)." in result.stdout
    assert result.stderr.startswith(f"error: a real run would refuse the target: target {db} already holds MLflow data (")
    assert f"`etl-migrate verify --source {mlruns} --target sqlite:///{db}`" in result.stderr
    assert tree_fingerprint(tmp_path) == before


def test_verify_help_is_about_verifying():
    """verify's own exit statuses and options, none of the migration's."""
    text = run_cli("verify", "--help").stdout
    codes = text.split("Exit status:", 1)[1]
    assert "  0  the database holds what the tree holds" in codes
    assert "  1  the database differs from the tree" in codes
    for migration_only in ("migration failed", "--no-verify", "invalid input", "staging"):
        assert migration_only not in text
    workers = text.split("--workers", 1)[1].split("--report", 1)[0]
    assert "compar" in workers and "pars" not in workers
