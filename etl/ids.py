"""Experiment ids held in values, where the target numbers experiments anew.

The load and the verifier both use this: the verifier to know what the target should hold, from
what MLflow's reader shows and the ids the migration claims (``etl.verify.claims``), the load to
write it. A prompt's linked experiments are the one such value MLflow keeps.
"""

from __future__ import annotations

# mlflow.prompt.constants.PROMPT_EXPERIMENT_IDS_TAG_KEY: a prompt's tag naming the experiments it
# is linked to, ",1,2,", which search_prompts(filter_string='experiment_id = "1"') matches with
# LIKE '%,1,%'. Renumbered experiments are renumbered in it too, or the prompt links to others.
LINKED_EXPERIMENTS_TAG = "_mlflow_experiment_ids"


def linked_ids(value: str) -> list[str]:
    """The experiment ids of a linked-experiments tag, as MLflow's client splits them."""
    return [i.strip() for i in value.split(",") if i.strip()]


def relinked(value: str, renumbered: dict[str, str], more: tuple[str, ...] | list[str] = ()) -> str:
    """A linked-experiments tag with the target's ids (and ``more`` of them, already the
    target's); the file's text where that changes nothing."""
    ids = linked_ids(value)
    new = list(dict.fromkeys([renumbered.get(i, i) for i in ids] + list(more)))
    return value if new == ids else f",{','.join(new)},"
