"""What a kind of target database provides, and the choice of one by URI scheme.

The pipeline talks to a target only through these two shapes, so a new kind of database (MySQL,
say) is one new module here, not an ``if`` in every function:

``Target``: the database a ``--target`` URI names (a SQLite file, a PostgreSQL schema).
    check_free()          refuse a target that holds data (before anything is created)
    expected_limits()     what its columns hold (etl.sql_limits), without staging anything:
                          for a dry run
    staging(keep_failed)  a context manager: lock the target against other runs, remove what a
                          killed run left behind, yield a ``Staging``; on exit remove the
                          staging area unless it was promoted (or kept by --keep-failed)
    existing()            the locator of the target itself, for ``etl-migrate verify``
    counts(locator)       rows per migrated table of a database, for the summary
    display, server_uri   how the target is shown (never with a password)
    max_experiment_id     the largest experiment id its schema can hold

``Staging``: where rows go before promotion.
    create_schema()       MLflow's own empty schema, at its alembic head
    column_limits()       what the staged schema's columns hold (etl.sql_limits.Limits)
    writer(batch_size)    the single writer: write(batch) / finish() / abort() /
                          delete_entities(ids) / prune_orphans()
    locator               what the verifier connects to (etl.verify.connect), read-only
    promote(verified)     make the staged database the target, atomically, after re-checking
                          under lock that the target still holds no data
    kept                  how to name the staging area when --keep-failed kept it
"""

from __future__ import annotations

import re

from etl.errors import TargetError

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def open_target(uri: str):
    """The Target a --target URI names; a URI of no supported kind is a TargetError."""
    scheme = scheme_of(uri)
    if scheme in SQLITE_SCHEMES:
        from etl.sink.sqlite import SqliteTarget

        return SqliteTarget(uri)
    if scheme in POSTGRES_SCHEMES:
        from etl.sink.postgres import PostgresTarget

        return PostgresTarget(uri)
    raise TargetError(
        f"target {redact(uri)!r} is not a supported database URI; use sqlite:///path/to/mlflow.db "
        "or postgresql://user@host:5432/database"
    )


def redact(text: str) -> str:
    """A URI (or a message that holds one) fit to print: every password, in a URI's user part or
    a libpq ``password=`` parameter, replaced by ***."""
    text = re.sub(r"(password=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^\s/]*@", r"\1:***@", text)
