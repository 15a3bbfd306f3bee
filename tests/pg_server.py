"""A real PostgreSQL server for the tests: Debian's binaries, a temporary data folder, a free
loopback port, stopped at the end of the session.

pytest-postgresql does the same but cannot start the server when the tests run as root (CI here
does): PostgreSQL refuses to run as root, so the data folder belongs to the ``postgres`` user and
the server runs as that user. Connections use TCP with a password, as a user's would.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
PASSWORD = "s3cret-etl-pw"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    folder: Path
    port: int
    bindir: Path
    as_user: str | None
    # PostgreSQL's own durability settings (fsync at commit), as a user's server runs: for timing.
    durable: bool = False

    def uri(self, database: str, user: str = SUPERUSER, password: str | None = PASSWORD,
            scheme: str = "postgresql") -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"{scheme}://{auth}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(self.uri(database), autocommit=True)

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)

    def start(self) -> None:
        data = self.folder / "data"
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, *_ids(self.as_user))
        init = self._run(self.bindir / "initdb", "-D", data, "-U", SUPERUSER, "--pwfile", pwfile,
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                         "--locale=C.UTF-8")
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not self.durable:
            # fsync off: a test server's data may be lost in a machine crash, and it is faster.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        started = self._run(self.bindir / "pg_ctl", "-D", data, "-o", options,
                            "-l", self.folder / "server.log", "-w", "-t", "60", "start")
        if started.returncode:
            log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {started.stderr[-2000:]} {log}")

    def stop(self) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.folder / "data", "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def _ids(user: str) -> tuple[int, int]:
    import pwd  # POSIX only; on Windows no server binaries are found and the tests skip

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def start_server(durable: bool = False) -> PgServer:
    bindir = bin_dir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb) found")
    as_user = None
    # PostgreSQL refuses to run as root; the postgres user owns the data folder instead.
    folder = Path(tempfile.mkdtemp(prefix="etl-pg-"))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        as_user = "postgres"
        os.chown(folder, *_ids(as_user))
    for attempt in range(3):
        server = PgServer(folder, _free_port(), bindir, as_user, durable)
        try:
            server.start()
            return server
        except RuntimeError:
            # Another process may have taken the port between the probe and the start.
            if attempt == 2:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            shutil.rmtree(folder / "data", ignore_errors=True)
            time.sleep(0.5)
    raise AssertionError("unreachable")
