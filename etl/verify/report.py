"""VerificationReport: per-entity pass counts and every mismatch, as text or JSON."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

# Report order, and per entity: its name, what one check counts where that is not one of the
# entity itself (params are checked a run's at a time), and how a failed one is named.
ENTITIES = {
    "experiments": ("Experiments", "", "experiment {}"),
    "runs": ("Runs", "", "run {}"),
    "params": ("Params", "runs", "params of run {}"),
    "tags": ("Tags", "runs", "tags of run {}"),
    "metrics": ("Metric histories", "series", "metric series {}"),
    "latest_metrics": ("Latest metric values", "runs", "latest metric values of run {}"),
    "datasets": ("Datasets", "", "dataset {}"),
    "inputs": ("Run inputs and outputs", "runs", "inputs and outputs of run {}"),
    "traces": ("Traces", "", "trace {}"),
    "assessments": ("Assessments", "", "assessment {}"),
    "logged_models": ("Logged models", "", "logged model {}"),
    "registered_models": ("Registered models", "", "registered model {}"),
    "model_versions": ("Model versions", "", "model version {}"),
}


@dataclass(frozen=True)
class Mismatch:
    entity: str
    id: str
    field: str
    source: object
    target: object


@dataclass
class EntityResult:
    checked: int = 0
    failed_ids: set = field(default_factory=set)
    skipped: int = 0  # left out with --skip-invalid: listed as problems, not compared

    @property
    def passed(self) -> int:
        return self.checked - len(self.failed_ids)


@dataclass
class VerificationReport:
    results: dict[str, EntityResult] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    # (table, owner id, metric key, "NaN" | "+Inf" | "-Inf") -> points in the files that MLflow's
    # SQL store cannot hold as written (etl.summary names them).
    lossy: Counter = field(default_factory=Counter)
    # (table, owner id, metric key, exact) -> points the files hold that the database holds once
    # (etl.rows.DuplicateKey), as the verifier finds them.
    duplicates: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def checked(self, entity: str, n: int = 1) -> None:
        self.results.setdefault(entity, EntityResult()).checked += n

    def skip(self, entity: str, n: int = 1) -> None:
        self.results.setdefault(entity, EntityResult()).skipped += n

    def mismatch(self, entity: str, id_: str, field_: str, source, target) -> None:
        self.results.setdefault(entity, EntityResult()).failed_ids.add(id_)
        self.mismatches.append(Mismatch(entity, str(id_), field_, source, target))

    def count_unrepresentable(self, table: str, id_: str, key: str, values) -> None:
        """The values of one metric series MLflow's SQL store cannot hold as written: +-Inf (held
        as +-max), and NaN in logged_model_metrics (held as 0: it has no NaN flag)."""
        for value in values:
            if math.isinf(value):
                self.lossy[(table, id_, key, "+Inf" if value > 0 else "-Inf")] += 1
            elif value != value and table == "logged_model_metrics":
                self.lossy[(table, id_, key, "NaN")] += 1

    def count_duplicates(self, table: str, id_: str, key: str, n: int, exact: bool = True) -> None:
        if n:
            self.duplicates[(table, id_, key, exact)] += n

    def merge(self, other: VerificationReport) -> None:
        for entity, result in other.results.items():
            mine = self.results.setdefault(entity, EntityResult())
            mine.checked += result.checked
            mine.failed_ids |= result.failed_ids
            mine.skipped += result.skipped
        self.mismatches.extend(other.mismatches)
        self.lossy.update(other.lossy)
        self.duplicates.update(other.duplicates)

    def name_source(self, label: str, entities=("experiments", "datasets")) -> None:
        """Append the source's label to the ids of ``entities``, which only one source's folders
        make unique (an experiment id), when several sources were compared."""
        for entity in entities:
            if entity in self.results:
                result = self.results[entity]
                result.failed_ids = {f"{i} ({label})" for i in result.failed_ids}
        self.mismatches = [
            Mismatch(m.entity, f"{m.id} ({label})", m.field, m.source, m.target) if m.entity in entities else m
            for m in self.mismatches
        ]

    def _ordered(self):
        known = [e for e in ENTITIES if e in self.results]
        other = sorted(e for e in self.results if e not in ENTITIES)
        return [(e, self.results[e]) for e in known + other]

    def to_text(self) -> str:
        lines = ["Migration Verification Report", "============================="]
        for entity, result in self._ordered():
            if not result.checked and not result.skipped:
                continue  # none in the tree, none in the database: nothing to say
            name, unit, _ = ENTITIES.get(entity, (entity, "", ""))
            skipped = f" ({result.skipped:,} skipped as invalid)" if result.skipped else ""
            lines.append(f"{name}: {result.passed:,}/{result.checked:,} {unit + ' ' if unit else ''}passed{skipped}")
        by_entity: dict[tuple[str, str], list[Mismatch]] = {}
        for m in self.mismatches:
            by_entity.setdefault((m.entity, m.id), []).append(m)
        for (entity, id_), items in by_entity.items():
            failed = ENTITIES[entity][2] if entity in ENTITIES else entity + " {}"
            lines.append(f"FAILED: {failed.format(id_)}")
            for m in items:
                lines.append(f"  - Field '{m.field}': source={m.source!r}, target={m.target!r}")
        lines.append(f"Status: {'SUCCESS' if self.ok else 'FAILED'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "status": "SUCCESS" if self.ok else "FAILED",
            "entities": {
                entity: {"checked": r.checked, "passed": r.passed, "skipped": r.skipped,
                         "unit": ENTITIES[entity][1] or entity if entity in ENTITIES else entity}
                for entity, r in self._ordered()
            },
            "mismatches": [
                {
                    "entity": m.entity,
                    "id": m.id,
                    "field": m.field,
                    "source": _jsonable(m.source),
                    "target": _jsonable(m.target),
                }
                for m in self.mismatches
            ],
        }


def _jsonable(value):
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    return repr(value)
