"""Property: one damage of any kind to a real tree never ends in exit 1, exit 4 or a traceback.

For every drawn case (a kind from tests/mutations.py's KINDS, and a seed that picks the file and
the change): exit 0 or 3; on exit 3 the problems name the damaged path, nothing is left in the
target's folder, and --skip-invalid migrates the rest; on exit 0 the database holds what MLflow's
own reader shows of the damaged tree; the source is byte-identical afterwards (tests/mutations.py
checks each; a hang is a failure, killed, never waited out).

Bounded for CI: one case per kind by default, the same cases in every run (derandomized).
A long run draws more, at random (or from ``--hypothesis-seed N``):

    ETL_MUTATION_CASES_PER_KIND=20 uv run --extra test pytest tests/faults/test_mutations.py

``python -m tests.mutations`` runs a campaign that counts every outcome instead of stopping at
the first failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import mutations
from tests.conftest import generate_fixture_tree, posix_only

CASES_PER_KIND = int(os.environ.get("ETL_MUTATION_CASES_PER_KIND", "1"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = generate_fixture_tree(tmp_path_factory.mktemp("mutations") / "tree") / "mlruns"
    mutations.prepare()
    return root


@posix_only("fork, symlinks and named pipes")
@pytest.mark.parametrize("kind", sorted(mutations.KINDS))
@settings(
    max_examples=CASES_PER_KIND,
    derandomize="ETL_MUTATION_CASES_PER_KIND" not in os.environ,
    deadline=None,  # nothing here is timed; a hang is caught by tests/mutations.py
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_one_damage_ends_in_exit_0_or_3_and_every_invariant_holds(tree, tmp_path_factory, kind, seed):
    work = tmp_path_factory.mktemp(f"{kind}-{seed}")
    try:
        outcome = mutations.check_case(tree, kind, seed, work)
    except mutations.NotApplicable:
        assume(False)
    finally:
        # pytest's own clean-up of old temporary folders recurses once per level: a tree nested
        # 1,800 deep would fail it in a later session. The failure below says what was damaged.
        mutations.remove_tree(work)
    damage = outcome.damage
    assert outcome.ok, (f"{kind} at {damage.path} ({damage.detail}): exit {outcome.code}\n"
                        + "\n".join(outcome.failures))
