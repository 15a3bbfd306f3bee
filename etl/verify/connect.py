"""A read-only connection to the database under verification, whatever its kind.

The verifier's queries are plain SQL with ``?`` placeholders, run through ``execute`` as on a
sqlite3 connection. A target is named by a locator: a SQLite file's path, or a PostgreSQL URL
(``postgresql+psycopg://...``, whose options set the search_path to the schema to read and make
every transaction read-only), as ``etl.sink`` gives it.
"""

from __future__ import annotations

import re
import sqlite3

POSTGRES_PREFIXES = ("postgresql://", "postgresql+psycopg://")


def is_postgres(locator: str) -> bool:
    return locator.startswith(POSTGRES_PREFIXES)


def connect(locator: str):
    if is_postgres(locator):
        return PostgresReader(locator)
    return sqlite3.connect(f"file:{locator}?mode=ro", uri=True)


# A quoted literal is kept as it is; a ? outside one is a placeholder.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\?")


def _placeholders(query: str) -> str:
    query = query.replace("%", "%%")
    return _TOKENS.sub(lambda m: "%s" if m.group() == "?" else m.group(), query)


class PostgresReader:
    """The part of sqlite3.Connection the verifier uses, on psycopg: execute() and close()."""

    def __init__(self, locator: str):
        import psycopg
        from sqlalchemy.engine import make_url

        # The query (options=...) goes as keywords: libpq would read a "+" in it as a plus sign.
        url = make_url(locator)
        base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        self._conn = psycopg.connect(base, autocommit=True, application_name="etl-migrate verify",
                                     **dict(url.query))

    def execute(self, query: str, params=()):
        if params:
            return self._conn.execute(_placeholders(query), tuple(params))
        return self._conn.execute(query)

    def close(self) -> None:
        self._conn.close()
