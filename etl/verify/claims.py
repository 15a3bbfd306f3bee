"""What a migration says each source became in the target: claims the verifier checks.

With one source, the only claim is the experiment id map of a target that cannot hold the
FileStore's ids. Several sources into one database add names (renamed experiments, registered
models and prompts), merged experiments and models, version numbers, and copies (an id several
sources hold with byte-identical files, migrated once). None of it is taken on trust:

- an id map is only a way to find which folder a target row must equal; a wrong one makes rows
  differ from their files, and a target experiment no source's folder maps to is reported;
- a renamed name must be the folder's name with the source named after it, ``name (label)``
  (a prompt: ``name.label``), and equal the target's;
- experiments that share a target id (merged; an empty Default kept once) must share their name,
  and the target must hold exactly what the rule makes of their files (``etl.verify.merged``);
- a copy must be a folder of the same id in an earlier source, byte for byte.

The claims come from ``etl.source.merge`` through the pipeline, as plain data: this module, like
all of etl/verify, imports nothing of etl/source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A folder id is what FileStore's experiment id rule allows (mlflow.utils.validation); a key
# holding a space can be none, so a target experiment of another source gets one (``view``).
FOREIGN = " (not of this source)"


@dataclass(frozen=True)
class Claims:
    root: str  # the source's mlruns folder
    label: str = ""  # how renamed names name the source
    experiment_ids: dict[str, str] = field(default_factory=dict)  # folder id -> target id, where they differ
    experiment_names: dict[str, str] = field(default_factory=dict)  # folder id -> target name, where renamed
    model_names: dict[str, str] = field(default_factory=dict)  # folder name -> target name, where renamed
    model_offsets: dict[str, int] = field(default_factory=dict)  # merged model folder -> added to its versions
    copies: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # kind -> {id: (its folder, the one migrated)}
    skipped: dict[str, set[str]] = field(default_factory=dict)  # kind -> ids left out as invalid


def renamed_from(name: str, claimed: str, prompt: bool = False) -> bool:
    """Whether ``claimed`` is ``name`` with a source named after it: ``name (label)``, or for a
    prompt, whose name allows no spaces, ``name.label``."""
    if prompt:
        return claimed.startswith(name + ".") and re.fullmatch(r"[A-Za-z0-9_.-]+", claimed[len(name) + 1:]) is not None
    return claimed.startswith(name + " (") and claimed.endswith(")") and len(claimed) > len(name) + 3


def view(folder_targets: dict[str, str], target_ids: set[str]) -> dict[str, str]:
    """One source's id map for the checks that take one (old -> new): its folders' target ids,
    and every other target experiment under a key no folder can have, so that a row of another
    source's experiment never reads as one of this source's folders."""
    ids = dict(folder_targets)
    mine = set(folder_targets.values())
    ids.update({f"{t}{FOREIGN}": t for t in target_ids - mine})
    return ids


def foreign(key: str) -> bool:
    return key.endswith(FOREIGN)
