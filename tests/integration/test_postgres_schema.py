"""The PostgreSQL schema replayed from its recording (etl.sink.postgres.schema) is the schema
MLflow's migrations build: every catalog entry and every row alike. (`mlflow server` opening a
migration staged in a replayed schema: test_postgres_target.py.)"""

from __future__ import annotations

import json

import psycopg
import pytest

from etl.sink.postgres import schema as postgres_schema
from etl.sink.target import open_target
from tests.conftest import run_cli

CATALOG = {
    "relations": "SELECT c.relname, c.relkind, c.relpersistence, c.reloptions::text FROM pg_class c "
                 "WHERE c.relnamespace = %(schema)s::regnamespace",
    "columns": "SELECT table_name, column_name, ordinal_position, column_default, is_nullable, "
               "data_type, character_maximum_length, numeric_precision, numeric_scale, "
               "datetime_precision, udt_name, collation_name, is_identity, identity_generation, "
               "identity_start, identity_increment, is_generated, generation_expression "
               "FROM information_schema.columns WHERE table_schema = %(schema)s",
    "constraints": "SELECT t.relname, c.conname, c.contype, c.condeferrable, c.condeferred, "
                   "c.convalidated, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                   "JOIN pg_class t ON t.oid = c.conrelid WHERE c.connamespace = %(schema)s::regnamespace",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %(schema)s",
    "sequences": "SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, "
                 "cycle, cache_size, last_value FROM pg_sequences WHERE schemaname = %(schema)s",
    "sequence owners": "SELECT s.relname, t.relname, a.attname, d.deptype FROM pg_depend d "
                       "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
                       "JOIN pg_class t ON t.oid = d.refobjid "
                       "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
                       "WHERE s.relnamespace = %(schema)s::regnamespace",
    # Internal triggers (a foreign key's, named by oid) come with the constraints above.
    "triggers": "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c "
                "ON c.oid = t.tgrelid WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal",
    "functions": "SELECT proname, pg_get_function_identity_arguments(oid), prosrc FROM pg_proc "
                 "WHERE pronamespace = %(schema)s::regnamespace",
    "types": "SELECT t.typname, t.typtype, e.enumlabel FROM pg_type t LEFT JOIN pg_enum e "
             "ON e.enumtypid = t.oid WHERE t.typnamespace = %(schema)s::regnamespace",
    "comments": "SELECT c.relname, d.objsubid, d.description FROM pg_description d "
                "JOIN pg_class c ON c.oid = d.objoid WHERE c.relnamespace = %(schema)s::regnamespace",
}


def new_schemas(uri: str, *names: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')


def warm_recording(pg_server) -> None:
    """Make sure the session's cache holds a recording: the next run replays it."""
    uri = pg_server.create_database("etl_schema_recording")
    new_schemas(uri, "etl_warm_build")
    postgres_schema.create_schema(open_target(uri), "etl_warm_build")
    pg_server.drop_database("etl_schema_recording")


def catalog(uri: str, schema: str) -> dict:
    """What PostgreSQL's catalogs say about one schema, and every row of its tables; the schema's
    own name is written <schema> wherever it shows."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{schema}"')
        found = {name: sorted(conn.execute(query, {"schema": schema}).fetchall(), key=repr)
                 for name, query in CATALOG.items()}  # fmt: skip
        tables = sorted(r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)))
        found["rows"] = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    return json.loads(json.dumps(found, default=str).replace(schema, "<schema>"))


@pytest.fixture
def recording_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ETL_MIGRATE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_replayed_schema_equals_the_migrated_one(pg_uri, recording_cache):
    target = open_target(pg_uri)
    new_schemas(pg_uri, "etl_by_migrations", "etl_by_replay")
    assert postgres_schema.create_schema(target, "etl_by_migrations") == "migrated"
    assert [p.name for p in recording_cache.glob("postgres-schema-*.json")]
    assert postgres_schema.create_schema(target, "etl_by_replay") == "replayed"

    built, replayed = catalog(pg_uri, "etl_by_migrations"), catalog(pg_uri, "etl_by_replay")
    assert built["rows"]["alembic_version"] and built["sequences"] and built["indexes"]
    for part in built:
        assert replayed[part] == built[part], part


def test_a_damaged_recording_is_replaced_by_the_migrations(pg_uri, recording_cache):
    """A recording that does not replay is removed, the migrations run, and a good one is saved."""
    target = open_target(pg_uri)
    new_schemas(pg_uri, "etl_first_build", "etl_second_build")
    assert postgres_schema.create_schema(target, "etl_first_build") == "migrated"
    (path,) = recording_cache.glob("postgres-schema-*.json")
    data = json.loads(path.read_text())
    data["content"].insert(len(data["content"]) // 2, ["CREATE TABLE runs (broken int)", None, False])
    path.write_text(json.dumps(data))
    assert postgres_schema.create_schema(target, "etl_second_build") == "migrated"
    assert catalog(pg_uri, "etl_second_build") == catalog(pg_uri, "etl_first_build")
    assert json.loads(path.read_text())["content"] != data["content"]


def test_a_migrated_database_keeps_every_index_and_constraint(pg_uri, tmp_path):
    """The writer takes foreign keys, unique keys and indexes off for the load: after a run, the
    schema MLflow's tables live in is, catalog by catalog, the one MLflow's migrations make."""
    from tests.trees import build_core_tree

    tree = tmp_path / "mlruns"
    build_core_tree(tree)
    new_schemas(pg_uri, "etl_loaded", "etl_fresh")
    result = run_cli("--source", str(tree), "--target", f"{pg_uri}?options=-csearch_path%3Detl_loaded",
                     "--no-verify", "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    postgres_schema.create_schema(open_target(pg_uri), "etl_fresh")

    loaded, fresh = catalog(pg_uri, "etl_loaded"), catalog(pg_uri, "etl_fresh")
    assert loaded["rows"]["runs"] and loaded["constraints"] and loaded["indexes"]
    for part in set(CATALOG) - {"sequences"}:  # sequences: last_value moved past the ids
        assert loaded[part] == fresh[part], part
    assert [s[:-1] for s in loaded["sequences"]] == [s[:-1] for s in fresh["sequences"]]
