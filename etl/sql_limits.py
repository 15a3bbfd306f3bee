"""What MLflow's SQL schema cannot hold as written, shared by the loader and the verifier.

FLOAT_MAX is a plain constant, not a function: the loader (etl/source) and the verifier
(etl/verify) each apply it with their own code, so a slip in one cannot pass the other's check.

Everything else the target refuses (a step beyond 64 bits, a missing required field, a status its
CHECK constraint does not list, a name longer than its VARCHAR) is a problem of the source file
it came from, reported like any other invalid input, not a database error halfway through the
load. The target supplies the table: ``Limits`` maps (table, column) to a ``ColumnLimit``, read
from the target's own schema (``etl.sink.sqlite.schema.sqlite_limits`` for SQLite: 64-bit integers, no
lengths; a PostgreSQL target narrows the same table with ``dataclasses.replace``: VARCHAR
lengths, 32-bit INTEGER columns, no NUL in text; a MySQL target adds TEXT's byte limits).
``check_rows`` runs in the producer processes: plain Python only.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from operator import itemgetter

from etl.rows import COLUMNS

# MLflow's SQL store writes +-Inf as the largest finite double of that sign
# (SqlAlchemyStore.sanitize_metric_value); SQL REAL columns cannot hold IEEE infinities.
FLOAT_MAX = 1.7976931348623157e308

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT16 = (-(2**15), 2**15 - 1)
_RANGE_NAMES = {INT64: "64-bit", INT32: "32-bit", INT16: "16-bit"}

# Tables whose values have their column's Python type by construction (parsed with int() and
# float(), keys and ids taken from file and folder names, is_nan computed): only ranges and
# lengths can be exceeded there, so only those are checked, which keeps the check cheap on the
# millions of rows these tables get.
TYPED_TABLES = frozenset({"metrics", "latest_metrics", "logged_model_metrics"})

# Rows computed from other rows of the same entity (the latest point of each metric): whatever
# they could exceed, the rows they come from exceed first, and those name the line.
DERIVED_TABLES = frozenset({"latest_metrics"})

_NUMBER = (int, float)


def _encodable(text: str) -> bool:
    """Whether text is valid Unicode for UTF-8 (YAML's "\\ud800" escape gives a lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@dataclass(frozen=True)
class ColumnLimit:
    """One column's constraints: kind is "integer", "real", "boolean" or "text"."""

    kind: str
    nullable: bool = True
    int_range: tuple[int, int] | None = None
    max_length: int | None = None
    # MySQL's TEXT types count UTF-8 bytes, not characters (TEXT: 65,535; MEDIUMTEXT: 16 MiB).
    max_bytes: int | None = None
    nul_allowed: bool = True  # PostgreSQL text cannot hold "\x00"
    choices: frozenset | None = None  # CHECK (column IN (...))

    def violation(self, column: str, value) -> str | None:
        """Why the target would refuse value, or None."""
        if value is None:
            return None if self.nullable else f"{column} is missing (the target requires a value)"
        if isinstance(value, (datetime.date, datetime.time)):
            return f"{column} must be a {self._noun()}, found the date/time {value!s}"
        if self.kind == "integer":
            # bool is an int to Python but no number to MLflow: never stored as 0 or 1.
            if type(value) is not int:
                return f"{column} must be an integer, found {_shown(value)}"
            low, high = self.int_range or INT64
            if not low <= value <= high:
                return f"{column} {value} is beyond the target's {self._range()} integer range"
        elif self.kind == "real":
            if type(value) not in _NUMBER:
                return f"{column} must be a number, found {_shown(value)}"
        elif self.kind == "boolean":
            if not (isinstance(value, bool) or (type(value) is int and value in (0, 1))):
                return f"{column} must be a boolean, found {_shown(value)}"
        elif not isinstance(value, str):
            # Never coerced: a number where MLflow writes text is not the text it would show.
            return f"{column} must be text, found {_shown(value)}"
        elif self.max_length is not None and len(value) > self.max_length:
            return (f"{column} is {len(value)} characters long; the target holds at most "
                    f"{self.max_length}")
        elif self.max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > self.max_bytes:
            return (f"{column} is {len(value.encode('utf-8', 'surrogatepass')):,} bytes long in UTF-8; "
                    f"the target holds at most {self.max_bytes:,}")
        elif not self.nul_allowed and "\x00" in value:
            return f"{column} holds a NUL character, which the target cannot store"
        elif not _encodable(value):
            return f"{column} holds a lone surrogate ({_shown(value)}), which is no UTF-8"
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(c) for c in sorted(self.choices, key=str))
            return f"{column} {value!r} is not a value the target accepts ({allowed})"
        return None

    def _noun(self) -> str:
        return {"integer": "integer", "real": "number", "boolean": "boolean"}.get(self.kind, "text")

    def _range(self) -> str:
        low, high = self.int_range or INT64
        return _RANGE_NAMES.get((low, high), f"[{low}, {high}]")


Limits = dict[tuple[str, str], ColumnLimit]


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


@dataclass(frozen=True)
class Violation:
    table: str
    index: int  # of the row in its table's list
    reason: str


def check_rows(rows: dict[str, list], limits: Limits) -> list[Violation]:
    """Every value in rows (table -> tuples in COLUMNS order, or dicts) the target would refuse."""
    found: list[Violation] = []
    # One entity repeats a value across its tables (its experiment id in every tag row): each
    # bad value is reported once, where it first appears.
    reported: set[tuple[str, str]] = set()
    for table, table_rows in rows.items():
        if not table_rows or table in DERIVED_TABLES:
            continue
        if isinstance(table_rows[0], dict):
            columns = sorted({c for row in table_rows for c in row})
            getters = [(c, lambda row, c=c: row.get(c)) for c in columns]
        else:
            getters = [(c, itemgetter(i)) for i, c in enumerate(COLUMNS[table])]
        for column, get in getters:
            limit = limits.get((table, column))
            if limit is None or _passes_quickly(table, limit, get, table_rows):
                continue
            for index, row in enumerate(table_rows):
                value = get(row)
                reason = limit.violation(f"{table}.{column}", value)
                if reason is not None and (column, repr(value)) not in reported:
                    reported.add((column, repr(value)))
                    found.append(Violation(table, index, reason))
    return found


def _passes_quickly(table: str, limit: ColumnLimit, get, rows: list) -> bool:
    """A whole-column check at C speed for the common case; False sends it row by row."""
    if limit.choices is not None and table not in TYPED_TABLES:
        return False
    if table not in TYPED_TABLES:
        types = set(map(type, map(get, rows)))
        allowed = {str} if limit.kind == "text" else {int}
        if limit.nullable:
            allowed.add(type(None))
        if not types <= allowed:
            return False
        if type(None) in types and limit.kind != "text":
            return False  # gaps, in nullable columns of meta files: few rows, one by one
    if limit.kind == "integer":
        low, high = limit.int_range or INT64
        return low <= min(map(get, rows)) and max(map(get, rows)) <= high
    if limit.kind != "text":
        return True
    # Typed tables hold None in nullable text columns (a logged-model metric without a dataset).
    texts = [v for v in map(get, rows) if v is not None]
    longest = max(map(len, texts), default=0)
    if limit.max_length is not None and longest > limit.max_length:
        return False
    # A character is at most 4 bytes in UTF-8: only a long value needs encoding to be measured.
    if limit.max_bytes is not None and longest * 4 > limit.max_bytes and any(
            len(t.encode("utf-8", "surrogatepass")) > limit.max_bytes for t in texts):
        return False
    joined = "".join(texts)
    if not limit.nul_allowed and "\x00" in joined:
        return False
    # Keys and values read from files are decoded strictly; only YAML values can hold a lone
    # surrogate (an escape such as "\ud800").
    return table in TYPED_TABLES or _encodable(joined)
