"""etl.source.merge's pure parts: the renumbering every target and every merge shares, the
sources' labels, and what makes an artifact location worth a warning."""

from __future__ import annotations

import os
from pathlib import Path

from etl.source.merge import artifact_problem, labels, renumber

BIG = 900_000_000_000_000_000  # an 18-digit FileStore id


def test_an_id_is_kept_by_the_first_that_holds_it_and_the_rest_follow_creation_time():
    ids = [(("a", 0), 0), (("a", 1), 1), (("b", 0), 0), (("b", 1), 1), (("b", 7), 7), (("c", BIG), BIG)]
    created = {("b", 0): 30, ("b", 1): 10, ("c", BIG): 20}
    new = renumber(ids, 2**31 - 1, created.get)
    # 0, 1 and 7 are kept; the others above 7, by creation time: b's 1 (10), c's (20), b's 0 (30).
    assert new == {("b", 1): 8, ("c", BIG): 9, ("b", 0): 10}
    assert renumber(ids, 2**31 - 1, created.get) == new  # the same input maps the same way


def test_one_tree_renumbers_only_what_the_target_cannot_hold():
    """As a PostgreSQL target always has: ids that fit keep theirs; the others follow the largest
    kept one, by creation time (unknown last), then old id."""
    ids = [(i, i) for i in (0, 5, BIG, BIG + 1, BIG + 2)]
    created = {BIG: 3, BIG + 1: 1}
    assert renumber(ids, 2**31 - 1, created.get) == {BIG + 1: 6, BIG: 7, BIG + 2: 8}
    assert renumber(ids, 2**63 - 1, created.get) == {}


def test_an_id_beyond_64_bits_is_left_for_the_load_to_report():
    assert renumber([(1, 2**64)], 2**31 - 1, lambda key: None) == {}


def test_labels_name_the_folder_holding_mlruns_and_tell_equal_ones_apart():
    trees = [Path("/home/a/proj/mlruns"), Path("/home/b/proj/mlruns"), Path("/data/tree-c")]
    assert labels(trees) == ["proj-1", "proj-2", "tree-c"]


def test_artifact_locations_worth_a_warning(tmp_path):
    mlruns = tmp_path / "mlruns"
    (mlruns / "1").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert artifact_problem((mlruns / "1").as_uri(), mlruns, os.path.exists) is None
    assert artifact_problem("s3://bucket/1", mlruns, os.path.exists) is None
    assert artifact_problem(str(elsewhere), mlruns, os.path.exists) is None
    assert artifact_problem("file:///C:/Users/me/mlruns/1", mlruns, os.path.exists) is None
    assert "is relative" in artifact_problem("./mlruns/1", mlruns, os.path.exists)
    assert "does not exist (the tree moved?)" in artifact_problem(
        (tmp_path / "old" / "mlruns" / "1").as_uri(), mlruns, os.path.exists)
