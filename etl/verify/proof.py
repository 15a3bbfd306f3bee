"""What the byte checks of runs, traces and logged models share (etl/verify/runs.py, traces.py,
models.py): the target's rows for a chunk of folders, and one verdict per folder, "proven" or
"not sure". What is not sure goes to MLflow's reader, which reports."""

from __future__ import annotations

import os
from collections.abc import Callable

from etl.verify.compare import _connect, _source_ids
from etl.verify.report import VerificationReport


def target_rows(staging: str, names: list[str], read: Callable, entity_rows: str,
                id_map: dict[str, str] | None) -> dict:
    """``read(conn, names)`` on the target; the rows under ``entity_rows`` get their experiment id
    as the source names it (renumbered ids go back through ``id_map``, old -> new)."""
    conn = _connect(staging)
    try:
        target = read(conn, names)
    finally:
        conn.close()
    back = _source_ids(id_map)
    for row in target[entity_rows].values():
        row["experiment_id"] = back.get(str(row["experiment_id"]), str(row["experiment_id"]))
    return target


def prove_each(staging: str, names: list[str], read: Callable, entity_rows: str, matches: Callable,
               id_map: dict[str, str] | None) -> tuple[VerificationReport, list[str]]:
    """(what was proven, the names it could not prove): ``matches(report, name, target)`` proves
    one folder, counting it in the report, or says it is not sure."""
    report = VerificationReport()
    if not names:
        return report, []
    target = target_rows(staging, names, read, entity_rows, id_map)
    return report, [name for name in names if not matches(report, name, target)]


def unreadable(report, entity: str, id_: str, path: str, row: dict | None, experiment_id: str) -> bool:
    """The verdict on a folder whose main file (``path``) could not be read: not sure if the file
    is there. Else MLflow's reader skips the folder, it is no entity, and the target must not have
    it either (a mismatch reported here)."""
    if os.path.lexists(path):
        return False
    if row is not None and row["experiment_id"] == experiment_id:
        report.checked(entity)
        report.mismatch(entity, id_, "presence", False, True)
    return True
