"""MySQL's limits as input checks, on a real MariaDB server: keys the target's collation holds as
one (case, accents, trailing spaces, characters beyond the BMP), and a value longer in UTF-8
bytes than its TEXT column holds, are found before anything is written and named with their files
(exit 3); --skip-invalid leaves them out and the rest verifies.

Which keys are one depends on the collation the tables have, read from the server: MariaDB's
Debian default utf8mb4_general_ci (PAD SPACE: ``a`` = ``a ``; every emoji alike), and, standing in
for MySQL 8's utf8mb4_0900_ai_ci (NO PAD, accent- and case-insensitive, which MariaDB does not
have), MariaDB's utf8mb4_uca1400_nopad_ai_ci, which compares the same way on these keys.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.conftest import mysql_client, run_cli
from tests.integration.test_mysql_target import database_of, snapshot
from tests.trees import build_collation_tree, file_client

MYSQL8_LIKE = "utf8mb4_uca1400_nopad_ai_ci"


@pytest.fixture(scope="module")
def clashing(tmp_path_factory) -> tuple[Path, dict]:
    mlruns = tmp_path_factory.mktemp("collation") / "mlruns"
    return mlruns, build_collation_tree(mlruns)


def folder(mlruns: Path, exp_id: str) -> Path:
    return mlruns / exp_id


def problem_lines(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def test_general_ci_keys_are_invalid_input_then_skipped(clashing, mysql_server, mysql_uri, tmp_path):
    """utf8mb4_general_ci: case, accents, trailing spaces and emoji. Nothing is written; every
    clash is named with both files; then --skip-invalid migrates the rest, verified."""
    mlruns, ids = clashing
    database = database_of(mysql_uri)
    before = snapshot(mysql_server, database)
    result = run_cli("--source", str(mlruns), "--target", mysql_uri)
    assert result.returncode == 3, result.stderr[-3000:]
    err = result.stderr
    run = folder(mlruns, ids["Churn"]) / ids["case_params"]
    assert problem_lines(err, f"{run}/params/lr: param 'lr' and 'LR' ({run}/params/LR) are one key",
                         "utf8mb4_general_ci ignores case")
    space = folder(mlruns, ids["plain"]) / ids["space_tags"]
    assert problem_lines(err, f"{space}/tags/a : tag 'a ' and 'a' ({space}/tags/a)", "trailing spaces")
    accent = folder(mlruns, ids["plain"]) / ids["accent_tags"]
    assert problem_lines(err, f"tag 'café' and 'cafe' ({accent}/tags/cafe)")
    churn = sorted([ids["Churn"], ids["churn"]], key=int)
    assert problem_lines(err, f"{mlruns / churn[1]}/meta.yaml: experiment name",
                         f"({mlruns / churn[0]}/meta.yaml)", "the later one is left out")
    emoji = sorted([ids["emoji_a"], ids["emoji_b"]], key=int)
    assert problem_lines(err, f"{mlruns / emoji[1]}/meta.yaml: experiment name")
    assert problem_lines(err, "models/big prompt/version-1/tags/template: model_version_tags.value is "
                              "90,000 bytes long in UTF-8; the target holds at most 65,535")
    assert snapshot(mysql_server, database) == before

    report = tmp_path / "report.json"
    skipped = run_cli("--source", str(mlruns), "--target", mysql_uri, "--skip-invalid", "--report", str(report))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "Status: SUCCESS" in skipped.stdout
    left_out = {s["path"] for s in json.loads(report.read_text())["skipped"]}
    assert f"{mlruns / churn[1]}/meta.yaml" in left_out
    client = mysql_client(mysql_uri)
    names = {e.name for e in client.search_experiments(view_type=3)}
    assert {"Churn", "churn"} & names and not {"Churn", "churn"} <= names
    assert len(names & {"emoji 😀", "emoji 🎉"}) == 1
    id_map = json.loads(report.read_text())["experiment_id_map"]
    runs = client.search_runs([id_map.get(ids["plain"], ids["plain"])])
    assert [r.info.run_name for r in runs] == ["clean ✓"]
    assert [m.name for m in client.search_registered_models()] == ["small prompt"]
    assert client.get_model_version("small prompt", "1").tags == {"template": "数" * 100}


def test_mysql8_like_collation_keeps_trailing_spaces_and_emoji_apart(clashing, mysql_server, tmp_path):
    """A NO PAD, accent-insensitive collation (as MySQL 8's default): ``a`` and ``a `` are two
    keys and both arrive, and so do two experiments that differ in an emoji; case, accents and the
    byte limit are still found (here by a dry run, which writes nothing)."""
    mlruns, ids = clashing
    uri = mysql_server.create_database(f"etl_nopad_{tmp_path.name[-20:]}".lower(), collation=MYSQL8_LIKE)
    dry = run_cli("--source", str(mlruns), "--target", uri, "--dry-run")
    assert dry.returncode == 3, dry.stderr[-3000:]
    assert problem_lines(dry.stderr, "param 'lr' and 'LR'", f"{MYSQL8_LIKE} ignores case and accents")
    assert problem_lines(dry.stderr, "tag 'café' and 'cafe'")
    assert problem_lines(dry.stderr, "model_version_tags.value is 90,000 bytes long")
    assert not problem_lines(dry.stderr, "tag 'a ' and 'a'")
    assert not problem_lines(dry.stderr, "emoji")
    assert mysql_server.databases("etl_migrate_") == []

    report = tmp_path / "report.json"
    result = run_cli("--source", str(mlruns), "--target", uri, "--skip-invalid", "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    client = mysql_client(uri)
    assert client.get_run(ids["space_tags"]).data.tags == {**file_client(mlruns).get_run(ids["space_tags"]).data.tags}
    assert {"a", "a "} <= set(client.get_run(ids["space_tags"]).data.tags)
    names = {e.name for e in client.search_experiments(view_type=3)}
    assert {"emoji 😀", "emoji 🎉"} <= names


TRICKY = ["a", "A", "a ", "A  ", " a", "café", "cafe", "CAFÉ", "cafe\u0301", "ß", "ss", "s", "Straße", "STRASSE",
          "😀", "🎉", "x😀", "x🎉", "ﬁ", "fi", "I", "i", "ı", "İ", "a\u00a0", "a\t", "", " ", "lr", "LR",
          "a\x00", "a \x00", "Ä", "AE", "ae", "Å", "aa"]
COLLATIONS = ["utf8mb4_general_ci", "utf8mb4_unicode_ci", "utf8mb4_unicode_520_ci", "utf8mb4_bin",
              "utf8mb4_nopad_bin", "utf8mb4_general_nopad_ci", "utf8mb4_uca1400_ai_ci", MYSQL8_LIKE,
              "utf8mb4_turkish_ci", "utf8mb4_danish_ci"]


@pytest.mark.parametrize("collation", COLLATIONS)
def test_key_folding_agrees_with_the_server(collation, mysql_server, mysql_uri):
    """Two texts fold alike exactly when the server holds them equal, pair by pair, whether the
    folding is done here (plain ASCII) or by the server's weights."""
    from etl.sink.mysql.collation import KeyFolding
    from etl.sink.mysql.staging import MysqlTarget

    folding = KeyFolding(MysqlTarget(mysql_uri), {})
    try:
        by_server, used = folding.folds(collation, TRICKY)
        assert used
        ascii_only = [t for t in TRICKY if t.isascii() and t.isprintable()]
        here, used = folding.folds(collation, ascii_only)
        assert not used or not folding.rules(collation).ascii_ok
        pairs = list(itertools.combinations(TRICKY, 2))
        conn = mysql_server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT " + ", ".join(
                    [f"CONVERT(%s USING utf8mb4) = CONVERT(%s USING utf8mb4) COLLATE {collation}"] * len(pairs)),
                    [t for pair in pairs for t in pair])
                equal = cur.fetchone()
        finally:
            conn.close()
        for (a, b), same in zip(pairs, equal):
            assert (by_server[a] == by_server[b]) == bool(same), (collation, a, b)
            if a in here and b in here:
                assert (here[a] == here[b]) == bool(same), (collation, a, b)
    finally:
        folding.close()


def test_dry_run_limits_are_those_of_a_staged_schema(mysql_uri, tmp_path, monkeypatch):
    """The dry run reads MySQL's limits from the recording of MLflow's schema a first run made:
    the staged schema's, column by column. Before any run recorded one (an empty cache), it
    reads them from MLflow's declarations, which are never laxer."""
    from etl.sink.mysql.staging import MysqlTarget

    target = MysqlTarget(mysql_uri)
    monkeypatch.setenv("ETL_MIGRATE_CACHE_DIR", str(tmp_path / "empty-cache"))
    declared = target.expected_limits()
    monkeypatch.undo()
    with target.staging() as area:
        area.create_schema()
        staged = area.column_limits()
    expected = target.expected_limits()
    assert {k for k, v in staged.items() if v.max_bytes} and staged.keys() == expected.keys() == declared.keys()
    for key, limit in staged.items():
        assert expected[key] == limit, key
        stricter = declared[key]
        for field in ("max_length", "max_bytes"):
            if getattr(limit, field) is not None:
                assert getattr(stricter, field) <= getattr(limit, field), key


def test_keys_of_two_sources_the_collation_holds_as_one(mysql_server, mysql_uri, tmp_path):
    """Several --source trees: names that differ only in case are no clash to the merge rules
    (their bytes differ) but are one key to the target. The problem names both trees' files; with
    --skip-invalid the later source's experiment is left out, and a run tag clash within one run
    of the later source is found as in one tree."""
    first, second = tmp_path / "proj-a" / "mlruns", tmp_path / "proj-b" / "mlruns"
    a, b = file_client(first), file_client(second)
    churn_a = a.create_experiment("Churn")
    a.set_terminated(a.create_run(churn_a, run_name="a's run").info.run_id)
    churn_b = b.create_experiment("churn")
    b.set_terminated(b.create_run(churn_b, run_name="b's run").info.run_id)
    other = b.create_experiment("other")
    run = b.create_run(other, run_name="case tags").info.run_id
    b.set_tag(run, "Team", "x")
    b.set_tag(run, "team", "y")
    b.set_terminated(run)

    result = run_cli("--source", str(first), "--source", str(second), "--target", mysql_uri)
    assert result.returncode == 3, result.stderr[-3000:]
    assert problem_lines(result.stderr, f"{second / churn_b}/meta.yaml: experiment name 'churn' and 'Churn' "
                                        f"({first / churn_a}/meta.yaml)", "the later one is left out")
    assert problem_lines(result.stderr, f"{second / other / run}/tags/team: tag 'team' and 'Team'")

    report = tmp_path / "report.json"
    skipped = run_cli("--source", str(first), "--source", str(second), "--target", mysql_uri, "--skip-invalid",
                      "--report", str(report))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    client = mysql_client(mysql_uri)
    names = {e.name for e in client.search_experiments(view_type=3)}
    assert "Churn" in names and "churn" not in names and "other" in names
    assert [r.info.run_name for r in client.search_runs([client.get_experiment_by_name("Churn").experiment_id])] \
        == ["a's run"]
    assert {s["path"] for s in json.loads(report.read_text())["skipped"]} >= {
        f"{second / churn_b}/meta.yaml", f"{second / other / run}/tags/team"}
