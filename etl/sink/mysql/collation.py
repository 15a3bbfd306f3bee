"""How a MySQL target compares the text of MLflow's keys: each key column's collation, and a
folding of text such that two keys fold alike exactly when the server holds them equal (etl.keys
uses it to find keys the target would merge).

MLflow's migrations give no collation: every table takes the database's default. For utf8mb4
that is utf8mb4_general_ci on MariaDB (Debian's packages; MariaDB 11.5+ itself defaults to
utf8mb4_uca1400_ai_ci), and utf8mb4_0900_ai_ci on MySQL 8. They differ where it matters here:
general_ci ignores trailing spaces (PAD SPACE: ``a`` = ``a ``), 0900_ai_ci does not (NO PAD) but
ignores accents (``e`` = ``é``), as general_ci also mostly does; both ignore case; general_ci
holds every character beyond the Basic Multilingual Plane (every emoji) equal to every other.
Nothing here assumes which: the rules come from the server, per collation:

- plain ASCII (printable, no control characters), the case of nearly every key: folded here,
  lower-cased when the server says 'a' = 'A', trailing spaces cut when it says 'a' = 'a ',
  once the server's weights for the 95 printable characters have shown that those two rules are
  all it applies to them (a Turkish collation, where 'I' is not 'i', fails that and goes below);
- anything else: the server's own sort weights, WEIGHT_STRING(text COLLATE c), asked once per
  distinct text (trailing weights of a space cut when the collation pads). A group of keys is
  folded one way or the other as a whole, so an ASCII key and an accented one compare by weights.
"""

from __future__ import annotations

import re

from etl.errors import TargetError

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# Texts per WEIGHT_STRING query.
CHUNK = 200
_NAME = re.compile(r"^\w+$")


def plain_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


class Rules:
    """What a collation does, as the server answers."""

    def __init__(self, ignores_case: bool, pads: bool, ignores_accents: bool, ascii_ok: bool, space: bytes):
        self.ignores_case = ignores_case
        self.pads = pads
        self.ignores_accents = ignores_accents
        # The ASCII folding above gives exactly the server's equality on printable ASCII.
        self.ascii_ok = ascii_ok
        self.space = space  # the weight of one space


class KeyFolding:
    """Folds keys as the target's collations compare them (see the module's summary). One
    connection to the server, opened on the first question, in the process that checks keys."""

    def __init__(self, target, collations: dict[tuple[str, str], str | None]):
        self.target = target
        # (table, column) -> collation, for the key columns that have one (text).
        self.collations = {key: c for key, c in collations.items() if c}
        self._rules: dict[str, Rules] = {}
        self._weights: dict[tuple[str, str], bytes] = {}
        self._conn = None

    def _query(self, sql: str, params=()) -> tuple:
        if self._conn is None:
            self._conn = self.target.connect()
        with self._conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchone()

    def rules(self, collation: str) -> Rules:
        rules = self._rules.get(collation)
        if rules is None:
            if not _NAME.match(collation):
                raise TargetError(f"unexpected collation name {collation!r}")
            c = collation
            case, pad, accent, space = self._query(
                f"SELECT _utf8mb4'a' = _utf8mb4'A' COLLATE {c}, _utf8mb4'a' = _utf8mb4'a ' COLLATE {c}, "
                f"_utf8mb4'e' = CONVERT(%s USING utf8mb4) COLLATE {c}, WEIGHT_STRING(_utf8mb4' ' COLLATE {c})",
                ("\u00e9",))
            weights = self._server_weights(c, list(PRINTABLE), bool(pad), bytes(space))
            by_weight: dict[bytes, set[str]] = {}
            for ch in PRINTABLE:
                by_weight.setdefault(weights[ch], set()).add(ch.lower() if case else ch)
            ascii_ok = all(len(group) == 1 for group in by_weight.values()) and \
                len(by_weight) == len({(ch.lower() if case else ch) for ch in PRINTABLE})
            rules = self._rules[collation] = Rules(bool(case), bool(pad), bool(accent), ascii_ok, bytes(space))
        return rules

    def describe(self, collation: str) -> str:
        rules = self.rules(collation)
        what = [w for w, on in (("case", rules.ignores_case), ("accents", rules.ignores_accents)) if on]
        text = f"{collation} ignores {' and '.join(what)}" if what else f"{collation} compares case and accents"
        return text + (", and trailing spaces" if rules.pads else "")

    def folds(self, collation: str, values, by_server: bool = False) -> tuple[dict, bool]:
        """{value: folded} for the values, and whether the server's weights folded them (always
        when ``by_server``; else only when a value is not plain ASCII)."""
        rules = self.rules(collation)
        values = list(values)
        if not by_server and rules.ascii_ok and all(map(plain_ascii, values)):
            out = {}
            for v in values:
                f = v.lower() if rules.ignores_case else v
                out[v] = f.rstrip(" ") if rules.pads else f
            return out, False
        return self._server_weights(collation, values, rules.pads, rules.space), True

    def _server_weights(self, collation: str, values: list[str], pads: bool, space: bytes) -> dict:
        missing = [v for v in dict.fromkeys(values) if (collation, v) not in self._weights]
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            row = self._query("SELECT " + ", ".join(
                [f"WEIGHT_STRING(CONVERT(%s USING utf8mb4) COLLATE {collation})"] * len(chunk)), chunk)
            for value, weight in zip(chunk, row):
                weight = bytes(weight)
                # PAD SPACE: the server compares as if the shorter text went on in spaces.
                while pads and space and weight.endswith(space):
                    weight = weight[: -len(space)]
                self._weights[(collation, value)] = weight
        return {v: self._weights[(collation, v)] for v in values}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
