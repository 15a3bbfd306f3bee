"""The command runs where POSIX-only modules do not exist (Windows), shown on any OS.

A ``sitecustomize`` on PYTHONPATH makes ``fcntl``, ``resource``, ``termios``, ``pwd`` and ``grp``
unimportable (``sys.modules[name] = None``, exactly how an absent module fails) in the CLI and
in every worker process it starts, so an import of one of them anywhere on the migration's path
fails this test on Linux too, before a Windows user finds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.entities import ViewType

from etl.pipeline import SMALL_TREE_FOLDERS
from tests.conftest import run_cli
from tests.trees import build_core_tree, file_client, sql_client

POSIX_ONLY = ("fcntl", "resource", "termios", "pwd", "grp")

SITECUSTOMIZE = f"""\
import os, sys
for name in {POSIX_ONLY!r}:
    sys.modules[name] = None
# Each process that ran this leaves its pid, so the test sees the workers were covered too.
open(os.path.join(os.path.dirname(__file__), f"ran-{{os.getpid()}}"), "w").close()
"""

# Prints each module whose import fails.
PROBE = f"""\
for name in {POSIX_ONLY!r}:
    try:
        __import__(name)
    except ImportError:
        print(name)
"""


def _without_posix_modules(folder: Path) -> dict[str, str]:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


def test_migration_and_verification_run_without_posix_only_modules(tmp_path):
    """On a small tree in the command's own process; on a larger one in worker processes too."""
    mlruns = tmp_path / "mlruns"
    build_core_tree(mlruns)
    site = tmp_path / "no-posix"
    env = _without_posix_modules(site)

    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == list(POSIX_ONLY), "the module blocker is not active"

    def processes(*args: str) -> int:
        """Run the command; how many Python processes ran."""
        for pid_file in site.glob("ran-*"):
            pid_file.unlink()
        result = run_cli(*args, "--workers", "2", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return len(list(site.glob("ran-*")))

    def migrate(name: str) -> tuple[int, int]:
        """Migrate the tree as it is now, then verify the result again: processes each ran."""
        db, report = tmp_path / f"{name}.db", tmp_path / f"{name}.json"
        migrated = processes("--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report))
        assert json.loads(report.read_text())["verification"]["status"] == "SUCCESS"
        _assert_same_runs(mlruns, db)
        return migrated, processes("verify", "--source", str(mlruns), "--target", f"sqlite:///{db}")

    # A small tree is parsed and verified in the command's process: no worker process starts.
    assert migrate("small") == (1, 1)
    # More folders than a small tree: worker processes, which must run without them too.
    client = file_client(mlruns)
    extra = client.create_experiment("more runs than a small tree")
    for _ in range(SMALL_TREE_FOLDERS):
        client.create_run(extra)
    migrated, verified = migrate("larger")
    assert migrated >= 2 and verified >= 2

def _assert_same_runs(mlruns: Path, db: Path) -> None:
    source, target = file_client(mlruns), sql_client(db)
    experiments = sorted((e.experiment_id, e.name) for e in source.search_experiments(view_type=ViewType.ALL))
    assert sorted((e.experiment_id, e.name) for e in target.search_experiments(view_type=ViewType.ALL)) == experiments

    def run_ids(client):
        return {r.info.run_id for e in experiments for r in client.search_runs([e[0]], run_view_type=ViewType.ALL)}

    assert run_ids(source) and run_ids(target) == run_ids(source)
