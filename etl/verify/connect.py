"""A read-only connection to the database under verification, whatever its kind.

The verifier's queries are plain SQL with ``?`` placeholders and identifiers in double quotes
where a database reserves the word ("key"), run through ``execute`` as on a sqlite3 connection.
A target is named by a locator: a SQLite file's path, a PostgreSQL URL (``postgresql+psycopg://
...``, whose options set the search_path to the schema to read and make every transaction
read-only), or a MySQL URL (``mysql+pymysql://.../database``), as ``etl.sink`` gives it.

How a MySQL URL becomes PyMySQL's connection options (``mysql_options``) lives here, beside the
verifier's reader, and the MySQL target connects through it too: both sides find the password and
TLS files the same way.
"""

from __future__ import annotations

import os
import re
import sqlite3

POSTGRES_PREFIXES = ("postgresql://", "postgresql+psycopg://")
MYSQL_PREFIXES = ("mysql://", "mysql+pymysql://")


def is_postgres(locator: str) -> bool:
    return locator.startswith(POSTGRES_PREFIXES)


def is_mysql(locator: str) -> bool:
    return locator.startswith(MYSQL_PREFIXES)


def connect(locator: str):
    if is_postgres(locator):
        return PostgresReader(locator)
    if is_mysql(locator):
        return MysqlReader(locator)
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


# The query parameters a mysql:// URI may carry: PyMySQL's own connection options, which
# SQLAlchemy's pymysql dialect (MLflow's engine) passes on as they are; value -> PyMySQL's type.
MYSQL_QUERY_OPTIONS = {
    "charset": str, "read_default_file": str, "read_default_group": str, "unix_socket": str,
    "ssl_ca": str, "ssl_cert": str, "ssl_key": str, "ssl_verify_cert": bool,
    "ssl_verify_identity": bool, "connect_timeout": int,
}
# MLflow's engine hands these to PyMySQL as ssl_ca / ssl_cert / ssl_key, over what the URI's query
# says (mlflow.store.db.utils.create_sqlalchemy_engine: its connect_args win over the URL's).
MLFLOW_MYSQL_SSL = {"ssl_ca": "MLFLOW_MYSQL_SSL_CA", "ssl_cert": "MLFLOW_MYSQL_SSL_CERT",
                    "ssl_key": "MLFLOW_MYSQL_SSL_KEY"}
# Where the MySQL client programs find a user's password when none is given.
MY_CNF = "~/.my.cnf"


def mysql_options(locator: str) -> dict:
    """PyMySQL's connection options for a mysql:// or mysql+pymysql:// URL; ValueError names an
    option it does not know.

    The password comes from the URL, else MYSQL_PWD, else an option file: the one the URL names
    (read_default_file=...), else ~/.my.cnf when it exists (its [client] group), as the mysql
    client reads them. The connection's character set is always utf8mb4: anything narrower would
    mangle 4-byte UTF-8 (emoji) on the way in or out.
    """
    from sqlalchemy.engine import make_url

    url = make_url(locator)
    options: dict = {"host": url.host or "localhost", "port": url.port or 3306, "database": url.database,
                     "charset": "utf8mb4"}
    if url.username:
        options["user"] = url.username
    for key, value in url.query.items():
        kind = MYSQL_QUERY_OPTIONS.get(key)
        if kind is None or isinstance(value, tuple):
            raise ValueError(f"unknown connection option {key!r} (known: {', '.join(sorted(MYSQL_QUERY_OPTIONS))})")
        if key == "charset" and value.lower() != "utf8mb4":
            raise ValueError(f"charset={value} cannot carry 4-byte UTF-8 (emoji); leave it out or use charset=utf8mb4")
        options[key] = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
    password = url.password if url.password else os.environ.get("MYSQL_PWD")
    if password:
        options["password"] = password
    elif "read_default_file" not in options and os.path.isfile(os.path.expanduser(MY_CNF)):
        options["read_default_file"] = MY_CNF
    for key, variable in MLFLOW_MYSQL_SSL.items():
        if os.environ.get(variable):
            options[key] = os.environ[variable]
    if options.get("read_default_file"):
        options["read_default_file"] = os.path.expanduser(options["read_default_file"])
    return options


class MysqlReader:
    """The part of sqlite3.Connection the verifier uses, on PyMySQL: execute() and close().

    The session is read-only, and reads double-quoted names as names (ANSI_QUOTES), as SQLite
    and PostgreSQL do."""

    def __init__(self, locator: str):
        import pymysql

        self._conn = pymysql.connect(**mysql_options(locator), autocommit=True)
        with self._conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',ANSI_QUOTES')")

    def execute(self, query: str, params=()):
        cursor = self._conn.cursor()
        if params:
            cursor.execute(_placeholders(query), tuple(params))
        else:
            cursor.execute(query)
        return cursor

    def close(self) -> None:
        self._conn.close()
