"""The PostgreSQL target: MLflow's tables in one schema of a database, staged in a schema of their
own and moved in by one transaction.

    schema.py    MLflow's schema: its migrations' SQL recorded once per release, replayed after
    writer.py    the single writer: binary COPY, indexes built once after the load
    staging.py   connection, locks, the staging schema, limits and promotion; PostgresTarget and
                 PostgresStaging, the shapes etl.sink.target describes
"""
