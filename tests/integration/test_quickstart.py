"""The README's quick start, as a new user runs it: a clone of etl-migrate somewhere, a shell in
the folder that holds ``mlruns/`` (a tree a training script wrote through MLflow), the README's
command line as written (only its placeholder path replaced by the clone's), then the server
command the run prints, as printed, answering over REST with the migrated data.

uv installs the clone's locked dependencies from its cache (the first time from the package
registry); nothing else is fetched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests import mlflow_server
from tests.conftest import REPO, posix_only
from tests.trees import build_training_tree

pytestmark = posix_only("the README's command lines are POSIX shell; the server's process group")

PLACEHOLDER = "/path/to/etl-migrate"


def locked_mlflow() -> str | None:
    """The MLflow version uv.lock pins, which the quick start runs."""
    found = re.search(r'^name = "mlflow"\nversion = "([^"]+)"', (REPO / "uv.lock").read_text(), re.MULTILINE)
    return found.group(1) if found else None


def readme_quick_start() -> list[str]:
    """The quick start's command lines (indented blocks of its section) that use the checkout."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and PLACEHOLDER in line]


def clone(dest: Path) -> Path:
    """The checkout as a user's clone holds it: every tracked file, with the working tree's
    content (so uncommitted changes are what is tested), and no .venv."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout ({listed.stderr.decode().strip()}); the quick start starts with a clone")
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def user_shell_env() -> dict[str, str]:
    """A shell as the user has it: the Python they would type `python` for (the one this test
    environment was made from, which has pip) first on PATH, and no virtual environment active."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    venv_bin = os.path.dirname(sys.executable)
    base_bin = os.path.dirname(getattr(sys, "_base_executable", sys.executable))
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != os.path.abspath(venv_bin)]
    if not (Path(base_bin) / "python").exists():
        pytest.skip(f"no `python` beside the base interpreter in {base_bin}")
    env["PATH"] = os.pathsep.join([base_bin, *path])
    return env


def test_readme_quick_start_from_the_users_folder(tmp_path, monkeypatch):
    import importlib.metadata

    if importlib.metadata.version("mlflow") != locked_mlflow():
        # The quick start runs the lock file's MLflow whatever this environment holds: the pass
        # on the lock file's MLflow runs it; another pass (the oldest MLflow's) would repeat it.
        pytest.skip(f"the quick start runs the locked MLflow {locked_mlflow()}; this environment tests "
                    f"{importlib.metadata.version('mlflow')}")
    commands = readme_quick_start()
    assert commands, "README's quick start has no command line using the checkout"
    first = commands[0]
    assert first.endswith("uv run --project /path/to/etl-migrate etl-migrate"), first

    checkout = clone(tmp_path / "etl-migrate")
    user = tmp_path / "my project"  # a space in the path: the printed command must quote it
    user.mkdir()
    monkeypatch.chdir(user)  # where the training script runs (MLflow looks for a project there)
    ids = build_training_tree(user / "mlruns")
    run_id, key = ids["duplicated"]
    lines = (user / "mlruns" / ids["experiment"] / run_id / "metrics" / key).read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], "MLflow no longer writes the point twice"

    env = user_shell_env()
    result = subprocess.run(["bash", "-c", first.replace(PLACEHOLDER, str(checkout))], cwd=user, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The defaults meant the user's folder, not the checkout's.
    assert (user / "mlflow.db").is_file()
    assert not (checkout / "mlflow.db").exists() and not (checkout / "mlruns").exists()

    out = result.stdout.rstrip().splitlines()
    named = re.fullmatch(r"The database has the schema of MLflow (\S+); start a server of that version on it:", out[-2])
    assert named, out[-2:]
    version = named.group(1)
    server = out[-1].strip()
    assert version == locked_mlflow()
    assert server.startswith(f"uvx --from mlflow=={version} mlflow server --backend-store-uri "), server
    with sqlite3.connect(user / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == len(ids["runs"])

    # The printed command, as printed, in the user's shell and folder (the port through MLflow's
    # own MLFLOW_PORT, so that the command line stays as printed).
    port = mlflow_server.free_port()
    env.update(MLFLOW_PORT=str(port), MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["bash", "-c", server], cwd=user, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    # uvx first sets up an environment for the pinned MLflow: more time than a server alone.
    mlflow_server.wait_healthy(proc, url, log_path, timeout=2 * mlflow_server.HEALTH_TIMEOUT)
    try:
        runs = _post(url, "runs/search", {"experiment_ids": [ids["experiment"]], "max_results": 100})["runs"]
        assert sorted(r["info"]["run_id"] for r in runs) == sorted(ids["runs"])
        history = _get(url, f"metrics/get-history?run_id={run_id}&metric_key={key}")["metrics"]
        assert len(history) == 1  # the duplicate point, stored once
        assert "Running upgrade" not in log_path.read_text()  # opened as is, no schema change
    finally:
        mlflow_server.stop(proc)


def _post(url: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)


def _get(url: str, endpoint: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{endpoint}", timeout=60) as resp:
        return json.load(resp)
