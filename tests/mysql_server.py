"""A real MariaDB server for the tests: Debian's mariadb-server binaries, a temporary data folder,
a free loopback port, stopped at the end of the session.

As with PostgreSQL (tests/pg_server.py), the server refuses to run as root, so when the tests
run as root (CI here does) the data folder belongs to the ``mysql`` user and the server runs as
that user. Connections use TCP with a password, as a user's would. The server's character set
and collation are Debian's package defaults (utf8mb4, utf8mb4_general_ci: case-insensitive,
trailing spaces ignored); tests that need another create their database with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg_server import _free_port

USER = "etl"
PASSWORD = "s3cret-etl-pw"
# Debian's /etc/mysql/mariadb.conf.d/50-server.cnf sets these; the tests start the server with
# --no-defaults (no system configuration is read), so they are given here.
CHARSET = "utf8mb4"
COLLATION = "utf8mb4_general_ci"


def binaries() -> tuple[Path, Path] | None:
    """(mariadbd, mariadb-install-db), or None when MariaDB's server is not installed."""
    server = next((Path(p) for p in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld") if Path(p).is_file()), None)
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    return (server, Path(install)) if server and install else None


@dataclass
class MysqlServer:
    folder: Path
    port: int
    server: Path
    install: Path
    as_user: str | None
    # InnoDB's own durability settings (flush and doublewrite at commit), as a user's server
    # runs: for timing.
    durable: bool = False
    proc: subprocess.Popen | None = None

    def uri(self, database: str, user: str = USER, password: str | None = PASSWORD,
            scheme: str = "mysql") -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"{scheme}://{auth}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str | None = None, user: str = "root", password: str | None = None):
        """A superuser connection over the server's socket (root needs no password there)."""
        import pymysql

        return pymysql.connect(unix_socket=str(self.folder / "sock"), user=user, password=password or "",
                               database=database, charset="utf8mb4", autocommit=True)

    def sql(self, *statements: str, database: str | None = None) -> list[tuple]:
        """Run statements as root; the rows of the last one."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str, charset: str = CHARSET, collation: str | None = COLLATION) -> str:
        """A new, empty database; its URI, as the tests' user (who may create databases, so
        etl-migrate can stage in one of its own)."""
        collate = f" COLLATE {collation}" if collation else ""
        self.sql(f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}` CHARACTER SET {charset}{collate}")
        return self.uri(name)

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def databases(self, prefix: str = "") -> list[str]:
        return sorted(r[0] for r in self.sql("SHOW DATABASES") if r[0].startswith(prefix))

    def _command(self, *args) -> list[str]:
        # As root, the server and the install script drop to the mysql user themselves.
        return [str(a) for a in args] + ([f"--user={self.as_user}"] if self.as_user else [])

    def start(self) -> None:
        data = self.folder / "data"
        init = subprocess.run(
            self._command(self.install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
                          "--auth-root-authentication-method=normal"),
            capture_output=True, text=True, timeout=180, cwd=self.folder,
        )
        if init.returncode:
            raise RuntimeError(f"mariadb-install-db failed: {init.stdout[-1500:]} {init.stderr[-1500:]}")
        log = self.folder / "server.log"
        self.proc = subprocess.Popen(
            self._command(
                self.server, "--no-defaults", f"--datadir={data}", f"--socket={self.folder / 'sock'}",
                f"--pid-file={self.folder / 'pid'}", f"--log-error={log}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--character-set-server={CHARSET}",
                f"--collation-server={COLLATION}", "--skip-log-bin", "--innodb-buffer-pool-size=128M",
                "--max-connections=200",
                # A test server's data may be lost in a machine crash: no flush at each commit.
                *(() if self.durable else ("--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0")),
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.folder,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.sql(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                         f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'")
                return
            except Exception as e:  # noqa: BLE001 - the server is still starting
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"mariadbd did not start: {e} {text}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the data is scratch: no clean shutdown needed
            self.proc.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server(durable: bool = False) -> MysqlServer:
    found = binaries()
    if found is None:
        raise FileNotFoundError("no MariaDB server binaries (mariadbd, mariadb-install-db) found")
    server, install = found
    folder = Path(tempfile.mkdtemp(prefix="etl-mariadb-"))
    as_user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd

        as_user = "mysql"
        entry = pwd.getpwnam(as_user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    for attempt in range(3):
        instance = MysqlServer(folder, _free_port(), server, install, as_user, durable)
        try:
            instance.start()
            return instance
        except RuntimeError:
            if instance.proc is not None and instance.proc.poll() is None:
                instance.proc.kill()
                instance.proc.wait(timeout=30)
            if attempt == 2:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            # Another process may have taken the port between the probe and the start.
            shutil.rmtree(folder / "data", ignore_errors=True)
            time.sleep(0.5)
    raise AssertionError("unreachable")
