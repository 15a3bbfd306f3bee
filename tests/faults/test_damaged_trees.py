"""The damage of issue 18's table, every row in one real tree: exit 3 naming each file (and key)
with its reason, nothing written, the source unchanged; --skip-invalid migrates the rest and
lists what it left out. Links out of the tree and special files are warnings of the census,
with the data migrated as MLflow's reader shows it.

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

from tests import client_compare as cc
from tests.conftest import generate_fixture_tree, posix_only, run_cli
from tests.mutations import fingerprint, prepare, remove_tree, run_cli_forked
from tests.trees import file_client, sql_client

pytestmark = posix_only("symlinks and named pipes")

BAD = b"\xed\xa0\x80x"  # no UTF-8 (the encoding of a lone surrogate)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return generate_fixture_tree(tmp_path_factory.mktemp("damaged-trees") / "tree") / "mlruns"


def _edit(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def _shown(path) -> str:
    """A path as the problems show it: the bytes of a name that is no UTF-8 as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _layout(mlruns: Path) -> dict:
    """The experiments of the fixture tree by what they hold."""
    exps = [p.parent for p in sorted(mlruns.glob("[1-9]*/meta.yaml"))]
    main = next(e for e in exps if (e / "models").is_dir())
    with_trace = next(e for e in exps if e != main and (e / "traces").is_dir())
    plain = next(e for e in exps if e not in (main, with_trace) and not (e / "traces").exists())
    runs = [p.parent for p in sorted(main.glob("*/meta.yaml"))
            if not (p.parent / "inputs").exists() and not (p.parent / "outputs").exists()]
    with_inputs = [p.parent.parent.parent for p in sorted(main.glob("*/inputs/*/meta.yaml"))
                   if yaml.safe_load(p.read_text())["source_type"] == "DATASET"]
    return {"main": main, "with_trace": with_trace, "plain": plain, "runs": runs,
            "with_inputs": sorted(set(with_inputs)), "trash": next(mlruns.glob(".trash/*/meta.yaml")).parent}


def _dataset_input(run: Path) -> Path:
    return next(p for p in sorted(run.glob("inputs/*/meta.yaml"))
                if yaml.safe_load(p.read_text())["source_type"] == "DATASET")


def damage(mlruns: Path) -> list[tuple[str, str]]:
    """Every row of the table, each in an entity of its own; returns (path shown, reason)."""
    t = _layout(mlruns)
    expected = []
    free = list(t["runs"])

    def run(has: str = "") -> Path:
        """A run no other damage touches, with a file under ``has`` if given."""
        chosen = next(r for r in free if not has or any((r / has).iterdir()))
        free.remove(chosen)
        return chosen

    runs = [run("tags"), run(), run(), run("params"), run(), run()]

    # A key file's name that is no UTF-8, and a run's params/ folder's.
    tag = next((runs[0] / "tags").iterdir())
    bad_tag = os.path.join(os.fsencode(tag.parent), os.fsencode(tag.name) + BAD)
    os.rename(tag, bad_tag)
    expected.append((_shown(bad_tag), "its name is not valid UTF-8"))
    params = os.path.join(os.fsencode(runs[1]), b"params" + BAD)
    os.rename(runs[1] / "params", params)
    expected.append((_shown(params), "its name is not valid UTF-8"))
    metadata = next((t["with_trace"] / "traces").iterdir()) / "request_metadata"
    bad_key = os.path.join(os.fsencode(metadata), b"fx." + BAD)
    Path(os.fsdecode(bad_key)).write_text("v")
    expected.append((_shown(bad_key), "its name is not valid UTF-8"))

    # Key folders nested 1,300 deep (MLflow's own reader recurses into a RecursionError).
    folder = runs[2] / "tags"
    for _ in range(1300):
        folder = folder / "d"
        folder.mkdir()
    (folder / "leaf").write_text("v")
    expected.append((str(runs[2] / "tags" / "d"), "key folders nested more than 125 deep"))

    # A param that links to itself; a cycle of two links in metrics/.
    param = next((runs[3] / "params").iterdir())
    param.unlink()
    param.symlink_to(param.name)
    expected.append((str(param), "symlink loop"))
    (runs[4] / "metrics" / "loop_a").symlink_to("loop_b")
    (runs[4] / "metrics" / "loop_b").symlink_to("loop_a")
    expected += [(str(runs[4] / "metrics" / "loop_a"), "symlink loop"),
                 (str(runs[4] / "metrics" / "loop_b"), "symlink loop")]

    # An experiment's traces/ that is a file.
    (t["plain"] / "traces").write_text("")
    expected.append((str(t["plain"] / "traces"), "a file where MLflow keeps a folder"))

    # An integer beyond 64 bits where MLflow writes text.
    _edit(runs[5] / "meta.yaml", entry_point_name=-9223372036854775809)
    expected.append((str(runs[5] / "meta.yaml"),
                     "'entry_point_name' must be text or null, found integer -9223372036854775809"))

    # Required keys deleted, values of the wrong type.
    _edit(t["trash"] / "meta.yaml", lifecycle_stage=None)
    expected.append((str(t["trash"] / "meta.yaml"), "required field 'lifecycle_stage' is missing"))
    dataset = next((t["with_trace"] / "datasets").iterdir()) / "meta.yaml"
    _edit(dataset, source_type=None)
    expected.append((str(dataset), "required field 'source_type' is missing"))
    model = next((t["main"] / "models").iterdir()) / "meta.yaml"
    _edit(model, experiment_id=None, creation_timestamp=1.5)
    expected += [(str(model), "required field 'experiment_id' is missing"),
                 (str(model), "'creation_timestamp' must be integer, found number 1.5")]
    traces = sorted((t["main"] / "traces").iterdir(), key=lambda p: -len(list((p / "assessments").iterdir())))
    first, second, third, fourth = sorted((traces[0] / "assessments").iterdir())[:4]
    _edit(first, last_update_time=None)
    expected.append((str(first), "required field 'last_update_time' is missing"))
    # Times protobuf's reader refuses: no zone (it takes the date's '-' for one), no such day.
    _edit(third, create_time="2024-01-01T00:00:00")
    expected.append((str(third), "timestamp '2024-01-01T00:00:00' is not an RFC 3339 time with a zone"))
    _edit(fourth, last_update_time="2024-02-30T00:00:00Z")
    expected.append((str(fourth), "timestamp '2024-02-30T00:00:00Z' is no date and time: day is out of range"))
    _edit(second, valid="no")
    expected.append((str(second), "'valid' must be boolean, found text 'no'"))
    version = sorted(mlruns.glob("models/*/version-*/meta.yaml"))[0]
    _edit(version, status=True)
    expected.append((str(version), "'status' must be text, found boolean True"))
    # A version without a stage: MLflow's file reader shows None, which its database cannot show.
    staged = sorted(mlruns.glob("models/*/version-*/meta.yaml"))[-1]
    assert staged.parent.parent != version.parent.parent
    _edit(staged, current_stage=None)
    expected.append((str(staged), "required field 'current_stage' is missing (MLflow writes a stage"))

    # An alias's version number with a newline and with a blank: MLflow's reader looks for the
    # folder 'version-1\n' (none), and the database would hold 1.
    aliases = [a for a in sorted(mlruns.glob("models/*/aliases/*"))
               if a.parent.parent not in (version.parent.parent, staged.parent.parent)][:2]
    for alias, text in zip(aliases, ("{}\n", " {}")):
        shown = text.format(alias.read_text())
        alias.write_text(shown)
        expected.append((str(alias), f"alias must hold a version number as MLflow writes it (digits, no blank, "
                                     f"newline or leading zero), found {shown!r}"))

    # A run folder renamed, its run_id with it, to an id MLflow's reader refuses to look up.
    renamed = run()
    odd = renamed.parent / "a:b"
    renamed.rename(odd)
    _edit(odd / "meta.yaml", run_id="a:b")
    expected.append((str(odd / "meta.yaml"), "run_id 'a:b' is no run id MLflow's reader takes"))

    # Null where MLflow's RunInfo refuses None (its reader fails on the run; exit 1 before).
    for key in ("start_time", "user_id"):
        meta = run() / "meta.yaml"
        text = meta.read_text()
        meta.write_text(text.replace(next(line for line in text.splitlines() if line.startswith(f"{key}:")),
                                     f"{key}: ~"))
        expected.append((str(meta), f"'{key}' must be integer" if key == "start_time" else f"'{key}' must be text"))

    # Keys given twice, the second value no enum MLflow knows; an input tag that is a number.
    run_input = _dataset_input(t["with_inputs"][0])
    with open(run_input, "a") as f:
        f.write("destination_type: RUN-dup\n")
    expected.append((str(run_input), "key 'destination_type' is given twice"))
    info = traces[1] / "trace_info.yaml"
    with open(info, "a") as f:
        f.write("state: ERROR-dup\n")
    expected.append((str(info), "key 'state' is given twice"))
    tagged = _dataset_input(t["with_inputs"][1])
    _edit(tagged, tags={"fx.count": 0})
    expected.append((str(tagged), "input tag 'fx.count': 0: tag keys and values must be text"))
    return expected


@pytest.fixture(scope="module")
def damaged(base, tmp_path_factory):
    mlruns = tmp_path_factory.mktemp("damaged") / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    expected = damage(mlruns)
    yield mlruns, expected, fingerprint(mlruns)
    # pytest's own clean-up of old temporary folders recurses once per level: it would fail
    # on the 1,300 levels in a later session.
    remove_tree(mlruns)


def _found(lines: list[str], where: str, reason: str) -> bool:
    return any(f"- {where}" in line and reason in line for line in lines)


def test_strict_names_every_damage_and_writes_nothing(damaged, tmp_path):
    mlruns, expected, before = damaged
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db", "--report", str(report))
    assert result.returncode == 3, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    for where, reason in expected:
        assert _found(lines, where, reason), (where, reason, result.stderr[-5000:])
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    problems = json.loads(report.read_text(encoding="utf-8"))["problems"]
    assert {_shown(p) for p, _ in expected if "\\x" in _shown(p)} <= {p["path"] for p in problems}
    assert fingerprint(mlruns) == before


def test_skip_invalid_migrates_the_rest_and_lists_what_it_left_out(damaged, tmp_path):
    mlruns, expected, before = damaged
    db = tmp_path / "mlflow.db"
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid", "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("SKIPPED ") for line in lines)
    for where, reason in expected:
        assert _found(lines, where, reason), (where, reason)
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["verification"]["status"] == "SUCCESS"
    assert data["exit_status"] == 0
    conn = sqlite3.connect(db)
    try:
        (runs,) = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        bad_tags = conn.execute("SELECT key FROM tags WHERE key LIKE 'mlflow.runName_%'").fetchall()
    finally:
        conn.close()
    assert runs > 0 and bad_tags == []
    assert not [p for p in os.listdir(tmp_path) if ".staging-" in p or p.endswith(".lock")]
    assert fingerprint(mlruns) == before


def test_links_out_of_the_tree_and_special_files_are_warnings_and_migrate_as_mlflow_reads_them(base, tmp_path):
    """A param file linked to a file elsewhere and a logged model's tags/ linked to a folder
    elsewhere are read, as MLflow's reader reads them, and named as warnings; a named pipe
    beside the runs is never opened; a link to a folder inside a key folder is not followed
    (MLflow's reader does not follow it). An assessment source without source_id is migrated
    as 'default', which MLflow's reader shows."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    t = _layout(mlruns)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "param.txt").write_text("a value from elsewhere")
    with_param = next(r for r in t["runs"] if any((r / "params").iterdir()))
    param = next((with_param / "params").iterdir())
    param.unlink()
    param.symlink_to(outside / "param.txt")
    model_tags = next((t["main"] / "models").iterdir()) / "tags"
    shutil.move(model_tags, outside / "tags")
    model_tags.symlink_to(outside / "tags", target_is_directory=True)
    pipe = t["main"] / "a-pipe"
    os.mkfifo(pipe)
    other = next(r for r in t["runs"] if r != with_param)
    inner = other / "tags" / "linked"
    inner.symlink_to(other / "params", target_is_directory=True)
    assessment = next(p for p in sorted(mlruns.glob("*/traces/*/assessments/*.yaml"))
                      if "source_id" in yaml.safe_load(p.read_text())["source"])
    data = yaml.safe_load(assessment.read_text())
    del data["source"]["source_id"]
    assessment.write_text(yaml.safe_dump(data, allow_unicode=True))
    before = fingerprint(mlruns)

    db = tmp_path / "mlflow.db"
    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    warnings = {w["path"]: w["reason"] for w in json.loads(report.read_text())["census"]["warnings"]}
    rel = lambda p: os.path.relpath(p, mlruns)  # noqa: E731
    assert "symlink out of the tree" in warnings[rel(param)]
    assert "symlink out of the tree" in warnings[rel(model_tags) + "/"]
    assert "named pipe" in warnings[rel(pipe)]
    assert "NOT migrated" in warnings[rel(inner) + "/"]
    assert fingerprint(mlruns) == before

    src, dst = file_client(mlruns), sql_client(db)
    cc.compare_runs(src, dst)
    cc.compare_logged_models(src, dst)
    cc.compare_traces(src, dst)
    source = next(a.source for t_ in dst.search_traces(locations=[assessment.parts[-5]])
                  for a in dst.get_trace(t_.info.trace_id).info.assessments
                  if a.assessment_id == assessment.stem) if hasattr(dst, "search_traces") else None
    assert source is not None and source.source_id == "default"


def test_a_report_path_that_cannot_be_written_is_refused_before_the_run(base, tmp_path):
    result = run_cli("--source", str(base), "--target", f"sqlite:///{tmp_path}/mlflow.db",
                     "--report", str(tmp_path / "no-such-folder" / "report.json"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["models", ".trash"])
def test_a_layout_folder_that_links_to_itself_is_a_problem_named_before_the_load(base, tmp_path, folder):
    """The registry's folder or the trash as a symlink to itself: the folder listing before the
    load (for the progress total) met it first and ended in exit 4; the census names it."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    loop = mlruns / folder
    if loop.exists():
        shutil.rmtree(loop)
    os.symlink(folder, loop)
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    assert _found(result.stderr.splitlines(), str(loop), "symlink loop"), result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()


def test_an_experiment_copied_into_the_trash_is_named_with_every_id_it_repeats(base, tmp_path):
    """An experiment folder copied into .trash/ (its id both active and deleted): its runs,
    traces and logged models repeat ids the target keys across the tree. Each is named by its
    copy in .trash/ (the traces' ids ended in exit 4, a UNIQUE constraint the checks missed);
    --skip-invalid leaves both copies out and migrates the rest."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    main = _layout(mlruns)["main"]
    copy = mlruns / ".trash" / main.name
    shutil.copytree(main, copy, symlinks=True)
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert _found(lines, str(copy), "the experiment id appears twice")
    for kind, reason in (("traces", "the same id is also the folder"), ("models", "the same id is also the folder")):
        for entity in (main / kind).iterdir():
            assert _found(lines, str(copy / kind / entity.name), f"{reason} {entity}"), (kind, result.stderr[-3000:])
    run = next(r.parent for r in sorted(main.glob("*/meta.yaml")))
    assert _found(lines, str(copy / run.name), f"the run id is also {run}")
    assert not (tmp_path / "mlflow.db").exists()

    db = tmp_path / "skip" / "mlflow.db"
    db.parent.mkdir()
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{db}", "--skip-invalid")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM experiments WHERE experiment_id = ?", (int(main.name),)).fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0
    finally:
        conn.close()


def test_an_experiment_folder_mlflow_lists_under_an_id_no_database_holds_is_invalid_input(base, tmp_path):
    """A leading zero ('0123', which the database would give back as '123'), or a final newline
    (MLflow's id rule is a re.match ending in '$', which takes one): MLflow's reader shows the
    experiment under that id, the database cannot. They ended in exit 1 (verification), the
    folder counted a stray; now each is named, and --skip-invalid leaves it out."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    t = _layout(mlruns)
    renamed = []
    for folder, new in ((t["plain"], f"0{t['plain'].name}"), (t["trash"], f"{t['trash'].name}\n")):
        target = folder.parent / new
        folder.rename(target)
        _edit(target / "meta.yaml", experiment_id=new)
        for run in target.glob("*/meta.yaml"):
            _edit(run, experiment_id=new)
        renamed.append(target)
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    for target in renamed:
        assert f"- {target}: an experiment folder (it holds a meta.yaml) whose name is no experiment id" \
            in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/skip.db", "--skip-invalid")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_an_experiment_folder_the_user_may_not_enter_is_invalid_input(base, tmp_path):
    """An experiment folder without read and search permission, met by a user (root reads it
    anyway: the run drops root's override of permissions, as tests/mutations.py does): its
    listing ended in exit 4 ('Permission denied'); now the folder is named, and --skip-invalid
    migrates the rest."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    prepare()  # the environment the harness's forked CLI runs in
    hidden = _layout(mlruns)["plain"]
    hidden.chmod(0)
    try:
        code, text = run_cli_forked(["--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db"],
                                    str(tmp_path / "strict.txt"), as_user=True)
        assert code == 3, text[-3000:]
        assert f"- {hidden}: cannot list folder: Permission denied" in text, text[-3000:]
        assert not (tmp_path / "mlflow.db").exists()
        code, text = run_cli_forked(["--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/skip.db",
                                     "--skip-invalid"], str(tmp_path / "skip.txt"), as_user=True)
        assert code == 0 and "Status: SUCCESS" in text, text[-3000:]
    finally:
        hidden.chmod(0o755)


def test_a_file_in_place_of_a_run_input_or_output_folder_is_invalid_input(base, tmp_path):
    """A file under the name of an input's (or output's) folder is that input lost, and MLflow's
    reader cannot read the run: invalid input naming it. A note beside them stays a stray."""
    mlruns = tmp_path / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    output = sorted(mlruns.glob("*/*/outputs/m-*"))[0]
    run_input = next(p for p in sorted(mlruns.glob("*/*/inputs/*")) if p.parent.parent != output.parent.parent)
    for folder in (output, run_input):
        shutil.rmtree(folder)
        folder.write_text("")
    (run_input.parent / "NOTES.txt").write_text("who logged this?\n")
    result = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 3, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    for path, what in ((output, "run output"), (run_input, "run input")):
        assert _found(lines, str(path), f"a file where FileStore writes a {what}'s folder"), result.stderr[-3000:]
    assert "NOTES.txt" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    skipped = run_cli("--source", str(mlruns), "--target", f"sqlite:///{tmp_path}/mlflow.db", "--skip-invalid")
    assert skipped.returncode == 0, skipped.stdout[-3000:] + skipped.stderr[-3000:]
    conn = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        left = {r for (r,) in conn.execute("SELECT run_uuid FROM runs")}
    finally:
        conn.close()
    assert not {output.parent.parent.name, run_input.parent.parent.name} & left
