"""The SQLite target: a database file, staged in a file beside it and promoted over it.

    schema.py    MLflow's schema, built by its migrations once per release, copied into the staging file
    scratch.py   the producers' half of the writer: run-keyed rows bound into scratch files
    writer.py    the single writer: scratch files copied in with INSERT ... SELECT, the other rows
                 with executemany; no journal, no fsync
    staging.py   the target's lock, the staging file, a promotion that never clobbers;
                 SqliteTarget and SqliteStaging, the shapes etl.sink.target describes
"""
