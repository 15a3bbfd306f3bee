"""The floor: a plain single-threaded FileStore -> SQLite copy, to compare etl-migrate against.

Same files, same parsing, same rows as etl-migrate, written with sqlite3 executemany into a copy
of MLflow's schema: no pipeline, no verification, no atomic promote, no error reporting.

    python bench/reference_migrate.py --source mlruns --target sqlite:///ref.db
"""

import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
import time

import yaml

from etl.sink.sqlite.schema import template_path

STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
SOURCE = {1: "NOTEBOOK", 2: "JOB", 3: "PROJECT", 4: "LOCAL", 5: "UNKNOWN"}
NOT_RUNS = {"tags", "datasets", "traces", "models"}
# The same load settings as etl-migrate's writer: a scratch file, no journal, no fsync.
PRAGMAS = ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE", "cache_size=-32768")
COLUMNS = {  # the rows we fill, parents first
    "experiments": "experiment_id name artifact_location lifecycle_stage creation_time "
    "last_update_time",
    "experiment_tags": "experiment_id key value",
    "runs": "run_uuid name source_type source_name entry_point_name user_id status start_time "
    "end_time deleted_time source_version lifecycle_stage artifact_uri experiment_id",
    **dict.fromkeys(("params", "tags"), "run_uuid key value"),
    **dict.fromkeys(("metrics", "latest_metrics"), "run_uuid key timestamp step value is_nan"),
    "registered_models": "name creation_time last_updated_time description",
    "registered_model_tags": "name key value",
    "registered_model_aliases": "name alias version",
    "model_versions": "name version creation_time last_updated_time description user_id "
    "current_stage source run_id status status_message run_link storage_location",
    "model_version_tags": "name version key value",
}
SQL = {  # exact duplicate metric points collapse to one row, as in MLflow's SQL store
    t: f"INSERT {'OR IGNORE ' * (t == 'metrics')}INTO {t} ({', '.join(c.split())}) "
    f"VALUES ({', '.join('?' * len(c.split()))})"
    for t, c in COLUMNS.items()
}


def text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def meta(folder):
    return yaml.load(text(os.path.join(folder, "meta.yaml")), Loader=yaml.CSafeLoader)


def key_files(folder):
    """{key: path} of a params/, tags/, metrics/ or aliases/ folder (keys may hold '/')."""
    out = {}
    for root, _, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        out.update({n if rel == "." else f"{rel}/{n}": os.path.join(root, n) for n in files})
    return out


def key_values(folder):
    return {k: text(p) for k, p in key_files(folder).items()}


def metric_points(path):
    for line in text(path).splitlines():  # "timestamp value [step [dataset digest]]"
        parts = line.strip().split(" ")
        value, is_nan = float(parts[1]), 0
        if value != value:
            value, is_nan = 0.0, 1
        elif math.isinf(value):
            value = math.copysign(sys.float_info.max, value)
        yield int(parts[0]), int(parts[2]) if len(parts) > 2 else 0, value, is_nan


class Sink:
    """Rows buffered per table, written with one executemany per table every FLUSH_AT rows."""

    FLUSH_AT = 50_000

    def __init__(self, conn):
        self.conn, self.rows, self.pending, self.total = conn, {t: [] for t in SQL}, 0, 0

    def add(self, table, rows):
        self.rows[table].extend(rows)
        self.pending += len(rows)
        if self.pending >= self.FLUSH_AT:
            self.flush()

    def flush(self):
        for table, rows in self.rows.items():
            if rows:
                self.conn.executemany(SQL[table], rows)
                self.total += len(rows)
                rows.clear()
        self.pending = 0


def run(sink, run_dir, exp_id, run_id):
    m = meta(run_dir)
    params, tags = key_values(f"{run_dir}/params"), key_values(f"{run_dir}/tags")
    name = m.get("run_name") or tags.get("mlflow.runName") or m.get("run_name")  # None: unnamed (<= 1.28)
    status, source = m.get("status", 1), m.get("source_type", 4)
    sink.add("runs", [(
        run_id, name, SOURCE.get(source, source), m.get("source_name", ""),
        m.get("entry_point_name", ""), m.get("user_id"), STATUS.get(status, status),
        m.get("start_time"), m.get("end_time"), m.get("deleted_time"), m.get("source_version", ""),
        m.get("lifecycle_stage") or "active", m.get("artifact_uri"), exp_id,
    )])  # fmt: skip
    sink.add("params", [(run_id, k, v) for k, v in params.items()])
    sink.add("tags", [(run_id, k, v) for k, v in tags.items()])
    for key, path in key_files(f"{run_dir}/metrics").items():
        points = list(metric_points(path))
        sink.add("metrics", [(run_id, key, *p) for p in points])
        latest = max(points, key=lambda p: (p[1], p[0], p[2]))  # by step, timestamp, value
        sink.add("latest_metrics", [(run_id, key, *latest)])


def experiment(sink, exp_dir, deleted):
    m = meta(exp_dir)
    exp_id = int(m["experiment_id"])
    stage = m.get("lifecycle_stage") or ("deleted" if deleted else "active")
    times = m.get("creation_time"), m.get("last_update_time")
    sink.add("experiments", [(exp_id, m["name"], m.get("artifact_location"), stage, *times)])
    tags = key_values(f"{exp_dir}/tags")
    sink.add("experiment_tags", [(exp_id, k, v) for k, v in tags.items()])
    for e in sorted(os.scandir(exp_dir), key=lambda e: e.name):
        if e.is_dir() and e.name not in NOT_RUNS and os.path.isfile(f"{e.path}/meta.yaml"):
            run(sink, e.path, exp_id, e.name)


def registered_model(sink, model_dir):
    m = meta(model_dir)
    name, times = m["name"], (m.get("creation_timestamp"), m.get("last_updated_timestamp"))
    sink.add("registered_models", [(name, *times, m.get("description"))])
    tags = key_values(f"{model_dir}/tags")
    sink.add("registered_model_tags", [(name, k, v) for k, v in tags.items()])
    for e in sorted(os.scandir(model_dir), key=lambda e: e.name):
        if e.is_dir() and e.name.startswith("version-"):
            v = meta(e.path)
            version, g = int(v["version"]), v.get
            sink.add("model_versions", [(
                name, version, g("creation_timestamp"), g("last_updated_timestamp"),
                g("description"), g("user_id"), g("current_stage", "None"), g("source"),
                g("run_id"), g("status", "READY"), g("status_message"), g("run_link"),
                g("storage_location"),
            )])  # fmt: skip
            tags = key_values(f"{e.path}/tags")
            sink.add("model_version_tags", [(name, version, k, t) for k, t in tags.items()])
    aliases = key_values(f"{model_dir}/aliases")
    sink.add("registered_model_aliases", [(name, a, int(v.strip())) for a, v in aliases.items()])


def migrate(mlruns, db):
    shutil.copyfile(template_path(), db)
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("BEGIN")
    sink = Sink(conn)
    for parent, deleted in ((mlruns, False), (f"{mlruns}/.trash", True)):
        for e in sorted(os.scandir(parent), key=lambda e: e.name) if os.path.isdir(parent) else ():
            if e.is_dir() and e.name.isdigit() and os.path.isfile(f"{e.path}/meta.yaml"):
                experiment(sink, e.path, deleted)
    models = f"{mlruns}/models"
    for e in sorted(os.scandir(models), key=lambda e: e.name) if os.path.isdir(models) else ():
        if e.is_dir():
            registered_model(sink, e.path)
    sink.flush()
    conn.execute("COMMIT")
    conn.close()
    return sink.total


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="the mlruns folder")
    p.add_argument("--target", required=True, help="sqlite:///PATH or PATH; must not exist")
    args = p.parse_args()
    db = args.target.removeprefix("sqlite:///")
    if os.path.exists(db):
        p.error(f"{db} exists")
    started = time.perf_counter()
    rows = migrate(os.path.abspath(args.source), db)
    print(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - started, 3)}))
