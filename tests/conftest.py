"""Shared set-up: hermetic MLflow environment, the CLI as a user runs it, tree helpers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--fixtures-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="A fixture tree made by scripts/generate_migration_fixtures.py; integration tests "
        "marked 'fixtures' run on each one given (repeatable).",
    )


@pytest.fixture(scope="session", autouse=True)
def _hermetic_environment(tmp_path_factory):
    """File stores allowed, no stray mlflow.db, a private schema cache for this session."""
    cache = tmp_path_factory.mktemp("etl-cache")
    saved = dict(os.environ)
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    os.environ["ETL_MIGRATE_CACHE_DIR"] = str(cache)
    # A bare MlflowClient() inside MLflow must never land in the working folder.
    os.environ["MLFLOW_TRACKING_URI"] = (tmp_path_factory.mktemp("stray") / "mlruns").as_uri()
    yield
    os.environ.clear()
    os.environ.update(saved)


def posix_only(why: str):
    """Skip on Windows, saying which POSIX-only facility the test needs."""
    return pytest.mark.skipif(os.name != "posix", reason=f"needs POSIX: {why}")


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """etl-migrate as a user runs it: a separate process, its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def tree_fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: content hash and mtime, to prove a run did not write there."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            result[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                stat.st_mtime_ns,
            )
        elif path.is_dir():
            result[str(path.relative_to(root)) + "/"] = ("dir", path.stat().st_mtime_ns)
    return result


def pytest_generate_tests(metafunc):
    if "fixture_tree_dir" in metafunc.fixturenames:
        dirs = metafunc.config.getoption("--fixtures-dir") or ["<generated>"]
        metafunc.parametrize("fixture_tree_dir", dirs, scope="session", ids=[Path(d).name for d in dirs])


def generate_fixture_tree(out: Path, size: str = "small") -> Path:
    """A fixture tree made by the installed MLflow through scripts/generate_migration_fixtures.py."""
    result = subprocess.run(
        [sys.executable, "-I", str(REPO / "scripts" / "generate_migration_fixtures.py"),
         "--output", str(out), "--size", size],
        capture_output=True, text=True, timeout=600, cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def era_tree(era: str, out: Path) -> Path:
    """A fixture tree made by an older MLflow through scripts/mlflow_eras.py (uv, the era's
    Python and pins), e.g. ``1.20.2+2.9.2``. The same recipe as CI's, so made once per machine
    and generator: kept in ETL_MIGRATE_FIXTURE_CACHE (default ~/.cache/etl-migrate)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "mlflow_eras.py"), "tree", era, str(out)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the whole session (see tests/pg_server.py)."""
    from tests.pg_server import bin_dir, start_server

    if bin_dir() is None:
        pytest.skip("no PostgreSQL server on this machine (/usr/lib/postgresql/*/bin/initdb); "
                    "apt-get install postgresql to run the PostgreSQL target tests")
    server = start_server()
    yield server
    server.stop()


_databases = iter(range(1, 10**6))


@pytest.fixture
def pg_uri(pg_server) -> str:
    """A new, empty database on the session's server, as a postgresql:// URI with its password."""
    return pg_server.create_database(f"etl_test_{next(_databases)}")


def pg_client(uri: str):
    """MlflowClient on a PostgreSQL database (psycopg 3, the driver etl-migrate itself uses)."""
    from mlflow import MlflowClient

    uri = uri.replace("postgresql://", "postgresql+psycopg://", 1)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="session")
def mysql_server():
    """One real MariaDB server for the whole session (see tests/mysql_server.py)."""
    from tests.mysql_server import binaries, start_server

    if binaries() is None:
        pytest.skip("no MariaDB server on this machine (/usr/sbin/mariadbd, mariadb-install-db); "
                    "apt-get install mariadb-server to run the MySQL target tests")
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def mysql_uri(mysql_server) -> str:
    """A new, empty database (utf8mb4, Debian's default collation) on the session's server, as a
    mysql:// URI with its password."""
    return mysql_server.create_database(f"etl_test_{next(_databases)}")


def mysql_client(uri: str):
    """MlflowClient on a MySQL database (PyMySQL, the driver MLflow documents and etl-migrate uses)."""
    from mlflow import MlflowClient

    uri = uri.replace("mysql://", "mysql+pymysql://", 1)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
