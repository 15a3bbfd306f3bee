"""Every kind of damage a tree can carry: strict runs list every problem and write nothing;
--skip-invalid migrates the rest, lists each skipped item, and verification accounts for them.

The base tree is real (the fixture generator under the installed MLflow); the damage is done by
hand, since MLflow's API cannot write a broken tree.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import generate_fixture_tree, run_cli, tree_fingerprint

HUGE = "h" * (10 * 1024 * 1024)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return generate_fixture_tree(tmp_path_factory.mktemp("bad-input") / "tree") / "mlruns"


def _runs(mlruns: Path) -> list[Path]:
    """Active, finished-or-not runs of regular experiments, in a stable order."""
    return sorted(
        p.parent for p in mlruns.glob("[0-9]*/*/meta.yaml")
        if p.parent.parent.name != "0" and not (p.parent / "outputs").exists()
    )


def _edit_yaml(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data))


def damage(mlruns: Path) -> dict[str, str]:
    """Apply one kind of damage per entity; return {path named in the error: reason fragment}."""
    runs = _runs(mlruns)
    assert len(runs) >= 11, "the fixture tree has too few runs to damage"
    expected: dict[str, str] = {}

    meta = runs[0] / "meta.yaml"
    meta.write_text("run_id: [unclosed\n")
    expected[str(meta)] = "malformed YAML"

    meta = runs[1] / "meta.yaml"
    meta.write_bytes(b"")
    expected[str(meta)] = "empty file"

    meta = runs[2] / "meta.yaml"
    meta.unlink()
    expected[str(meta)] = "missing meta.yaml in run folder"

    meta = runs[3] / "meta.yaml"
    _edit_yaml(meta, run_id=None, run_uuid=None)
    expected[str(meta)] = "required field 'run_id' is missing"

    meta = runs[4] / "meta.yaml"
    _edit_yaml(meta, experiment_id="999")
    expected[str(meta)] = "sits in experiment folder"

    metric = runs[5] / "metrics" / "broken"
    metric.parent.mkdir(exist_ok=True)
    metric.write_text("1700000000000 1.0 0\n1700000000001 abc 1\n")
    expected[f"{metric}:2"] = "metric line is not 'timestamp value [step]'"
    # A second bad file in the same run: every problem is listed, not only a run's first.
    param = runs[5] / "params" / "latin1"
    param.parent.mkdir(exist_ok=True)
    param.write_bytes(b"na\xefve")
    expected[str(param)] = "not valid UTF-8"

    metric = runs[6] / "metrics" / "truncated"
    metric.parent.mkdir(exist_ok=True)
    metric.write_text("1700000000000\n")
    expected[f"{metric}:1"] = "metric line has 1 fields"

    tag = runs[7] / "tags" / "fx.bytes"
    tag.parent.mkdir(exist_ok=True)
    tag.write_bytes(b"caf\xe9")
    expected[str(tag)] = "not valid UTF-8"

    unreadable = runs[8] / "params" / "gone"
    unreadable.parent.mkdir(exist_ok=True)
    unreadable.symlink_to(runs[8] / "params" / "no-such-file")
    expected[str(unreadable)] = "cannot read file"

    loop = runs[9] / "tags" / "loop"
    loop.parent.mkdir(exist_ok=True)
    loop.symlink_to(runs[9] / "tags", target_is_directory=True)
    expected[str(loop)] = "symlink loop"

    # The same run id in two experiments: a copy of a good run under the Default experiment.
    twin = mlruns / "0" / runs[10].name
    shutil.copytree(runs[10], twin, symlinks=True)
    shutil.rmtree(twin / "inputs", ignore_errors=True)  # its datasets live in the other experiment
    _edit_yaml(twin / "meta.yaml", experiment_id="0")
    expected[runs[10].name] = "the run id appears in two experiments"

    exp = max((p.parent for p in sorted(mlruns.glob("[1-9]*/meta.yaml")) if (p.parent / "traces").exists()),
              key=lambda e: len(list((e / "traces").iterdir())))
    candidates = sorted(mlruns.glob("[1-9]*/meta.yaml")) + sorted(mlruns.glob(".trash/*/meta.yaml"))
    exp_meta = next(p for p in candidates if p.parent not in (exp, runs[11].parent, runs[10].parent))
    _edit_yaml(exp_meta, name=None)
    expected[str(exp_meta)] = "required field 'name' is missing"

    traces = sorted((exp / "traces").iterdir())
    (traces[0] / "trace_info.yaml").unlink()
    expected[str(traces[0])] = "trace folder without trace_info.yaml"
    assessment = next(p for t in traces[1:] for p in sorted((t / "assessments").glob("*.yaml")))
    assessment.write_text("feedback: [not: yaml\n")
    expected[str(assessment)] = "malformed YAML"

    model = next(p.parent for p in sorted(mlruns.glob("models/*/meta.yaml"))
                 if not (p.parent / "tags" / "mlflow.prompt.is_prompt").exists())
    version_meta = sorted(model.glob("version-*/meta.yaml"))[0]
    _edit_yaml(version_meta, version=None)
    expected[str(version_meta)] = "required field 'version' is missing"
    # Prompts are registered models too, and carry aliases the same way.
    other = next(p.parent for p in sorted(mlruns.glob("models/*/meta.yaml")) if p.parent != model)
    (other / "aliases").mkdir(exist_ok=True)
    (other / "aliases" / "ghost").write_text("77")
    expected[str(other / "aliases" / "ghost")] = "version 77, which does not exist"

    # Not damage: things MLflow itself accepts or ignores, which must migrate (or be ignored).
    for folder in ("tags", "params", "metrics"):
        (runs[11] / folder).mkdir(exist_ok=True)
    (runs[11] / "tags" / "huge").write_text(HUGE)
    (runs[11] / "params" / "empty").write_text("")
    (runs[11] / "metrics" / "special").write_text("1 nan 0\n2 inf 1\n3 -inf 2\n")
    (exp / "notes.txt").write_text("a user's notes")
    (exp / "scratch").mkdir()
    (mlruns / ".DS_Store").write_bytes(b"\x00")
    return expected


@pytest.fixture(scope="module")
def damaged(base, tmp_path_factory) -> tuple[Path, dict[str, str], dict]:
    mlruns = tmp_path_factory.mktemp("damaged") / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    expected = damage(mlruns)
    return mlruns, expected, tree_fingerprint(mlruns)


def test_strict_lists_every_problem_and_writes_nothing(damaged, tmp_path):
    mlruns, expected, before = damaged
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db",
                     "--report", str(report))
    assert result.returncode == 3, result.stderr[-3000:]
    for where, reason in expected.items():
        assert any(where in line and reason in line for line in result.stderr.splitlines()), (where, reason)
    listed = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(listed) == len(expected), "\n".join(listed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    data = json.loads(report.read_text())
    assert data["exit_status"] == 3 and len(data["problems"]) == len(expected)
    assert tree_fingerprint(mlruns) == before


def test_skip_invalid_migrates_the_rest_and_accounts_for_every_item(damaged, tmp_path):
    mlruns, expected, before = damaged
    db = tmp_path / "mlflow.db"
    report_path = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid",
                     "--report", str(report_path), "--verbose")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"SKIPPED {len(expected)} invalid item(s)" in result.stdout
    for where, reason in expected.items():
        assert any(where in line and reason in line for line in result.stdout.splitlines()), (where, reason)
    report = json.loads(report_path.read_text())
    assert len([s for s in report["skipped"] if s["path"]]) == len(expected)
    assert report["verification"]["status"] == "SUCCESS"
    skipped = sum(e["skipped"] for e in report["verification"]["entities"].values())
    # Every damaged entity is accounted for; ids with two problems (a run with two bad files)
    # count once, the twin run id once per folder it appears in.
    assert skipped >= len(expected) - 2
    # Unknown entries are ignored, and said so under --verbose.
    assert "notes.txt" in result.stderr and "scratch" in result.stderr and ".DS_Store" in result.stderr
    conn = sqlite3.connect(db)
    try:
        (huge,) = conn.execute("SELECT value FROM tags WHERE key = 'huge'").fetchone()
        specials = conn.execute("SELECT is_nan, value FROM metrics WHERE key = 'special' ORDER BY step").fetchall()
        empty = conn.execute("SELECT value FROM params WHERE key = 'empty'").fetchone()
    finally:
        conn.close()
    assert huge == HUGE
    assert specials == [(1, 0.0), (0, 1.7976931348623157e308), (0, -1.7976931348623157e308)]
    assert empty == ("",)
    assert tree_fingerprint(mlruns) == before
    assert not [p for p in os.listdir(tmp_path) if ".staging-" in p or p.endswith(".lock")]


def test_an_alias_holding_a_digit_that_is_no_number_is_invalid_input(base, tmp_path):
    """'²' is a digit to str.isdigit() but no number to int(): exit 3 naming the file, not exit 4."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    alias = sorted(mlruns.glob("models/*/aliases/*"))[0]
    alias.write_text("²")
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    assert any(str(alias) in line and "alias must hold a version number" in line and "found '²'" in line
               for line in result.stderr.splitlines()), result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
