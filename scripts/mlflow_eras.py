#!/usr/bin/env python
"""Fixture trees of each MLflow era: which releases, on which Python, with which pins.

Standard library only. scripts/ci_matrix.sh and the tests (tests/conftest.py) both get their
trees here, so an era's recipe is written once:

    python scripts/mlflow_eras.py tree ERA OUT [--size full]   # the tree of ERA into OUT
    python scripts/mlflow_eras.py ci                            # the eras CI makes trees of

ERA is a release (``3.17.2``) or a release whose tree a later one upgraded (``1.20.2+2.9.2``:
MLflow 1.20.2 makes the tree, then MLflow 2.9.2 adds its model registry to it with the
generator's --upgrade, as a user who upgraded has). Each MLflow runs through ``uv run --with
mlflow==X`` on the Python its era supports: 1.x needs an old interpreter (found under
/root/.pyenv/versions/ where it is, else asked of uv by version) and old pins.

A tree is made once per (generator, era, size) and kept in ETL_MIGRATE_FIXTURE_CACHE (default
~/.cache/etl-migrate/fixture-trees), keyed by a hash of the generator and the recipe: a changed
generator or recipe makes a new tree. OUT gets a copy. ETL_MIGRATE_FIXTURE_CACHE=off makes it
every time.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

GENERATOR = Path(__file__).resolve().parent / "generate_migration_fixtures.py"

# The old pins that the release needs to import and run (found by trying: newer protobuf,
# SQLAlchemy 2, NumPy >= 1.24 and pandas 2 break MLflow 1.x), and the Pythons it runs on, in
# order of preference (None: uv's default). MLflow 1.0 supported up to 3.7 and runs on 3.8
# too, a Python uv can fetch for more platforms. MLflow 2.22.5 and 3.2.0 silently write no
# traces with opentelemetry >= 1.45 (the generator fails loudly if so), and 3.2.0 is noisy
# below 1.41.
RELEASES = {
    "1.0.0": (("3.7", "3.8"), ["protobuf<4", "sqlalchemy<2", "numpy<1.22", "pandas<1.4"]),
    "1.20.2": ("3.8", ["protobuf<4", "sqlalchemy<2", "numpy<1.24", "pandas<2"]),
    "1.30.1": ("3.8", ["protobuf<4", "sqlalchemy<2", "numpy<1.24", "pandas<2"]),
    "2.1.1": ("3.8", []),
    "2.9.2": ("3.8", []),
    "2.22.5": (None, ["opentelemetry-sdk<1.45", "opentelemetry-api<1.45"]),
    "3.2.0": (None, ["opentelemetry-sdk<1.41", "opentelemetry-api<1.41"]),
    "3.17.2": (None, []),
}
# What CI migrates and reads back: the oldest release, one at or before 1.28 (runs without a
# name) upgraded by 2.9 (registry with aliases, deleted versions kept), 1.30 upgraded by 2.1
# (the first file-store registry: no aliases, deleted versions' folders removed), then one
# release of each later era.
CI_ERAS = ["1.0.0", "1.20.2+2.9.2", "1.30.1+2.1.1", "2.22.5", "3.2.0", "3.17.2"]
# The size a tree of the era is made at unless told: full, but small for MLflow 1.0, whose
# FileStore reads the whole run back for every value logged (a full tree takes it ~70 s, a small
# one ~15 s; the forms it writes are the same).
DEFAULT_SIZE = {"1.0.0": "small"}


def log(msg: str) -> None:
    print(f"[eras] {msg}", file=sys.stderr, flush=True)


def python_for(versions) -> list[str]:
    """uv's --python for the first Python version pyenv has on this machine, else the last one
    for uv to find or fetch."""
    if versions is None:
        return []
    versions = (versions,) if isinstance(versions, str) else versions
    for version in versions:
        found = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python"))
        if found:
            return ["--python", found[-1]]
    return ["--python", versions[-1]]


def uv_command(release: str) -> list[str]:
    if release not in RELEASES:
        raise SystemExit(f"unknown MLflow release {release!r}; known: {', '.join(RELEASES)}")
    py, pins = RELEASES[release]
    cmd = ["uv", "run", "--quiet", "--no-project", *python_for(py), "--with", f"mlflow=={release}"]
    for pin in pins:
        cmd += ["--with", pin]
    return cmd + ["python", "-I", str(GENERATOR)]


def recipe_key(era: str, size: str) -> str:
    spec = json.dumps([era, size, [RELEASES.get(r) for r in era.split("+")]])
    digest = hashlib.sha256(GENERATOR.read_bytes() + spec.encode()).hexdigest()[:16]
    return f"{era}-{size}-{digest}"


def cache_root() -> Path | None:
    setting = os.environ.get("ETL_MIGRATE_FIXTURE_CACHE", "")
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "etl-migrate" / "fixture-trees"


def generate(era: str, out: Path, size: str) -> None:
    """Make the tree of ``era`` in ``out`` (absent); MLflow's output goes to OUT.log beside it."""
    releases = era.split("+")
    log_path = out.parent / f"{out.name}.log"
    with open(log_path, "w", encoding="utf-8") as log_file:
        for i, release in enumerate(releases):
            args = ["--output", str(out)] + (["--upgrade"] if i else ["--size", size])
            log_file.write(f"== MLflow {release}: {' '.join(uv_command(release) + args)}\n")
            log_file.flush()
            result = subprocess.run(uv_command(release) + args, stdout=subprocess.DEVNULL,
                                    stderr=log_file, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                log_file.close()
                tail = log_path.read_text(encoding="utf-8").splitlines()[-40:]
                raise SystemExit("\n".join(tail) + f"\nfixture generation failed: MLflow {release} "
                                 f"(era {era}), exit {result.returncode}")


def tree(era: str, out: Path, size: str | None = None) -> Path:
    """The tree of ``era`` in ``out`` (which must not exist), made or copied from the cache."""
    size = size or DEFAULT_SIZE.get(era.split("+")[0], "full")
    t0 = time.monotonic()
    root = cache_root()
    if root is None:
        generate(era, out, size)
        log(f"MLflow {era}: generated in {time.monotonic() - t0:.1f} s (no cache)")
        return out
    key = recipe_key(era, size)
    cached, done = root / key, root / f"{key}.done"
    root.mkdir(parents=True, exist_ok=True)
    # Made where it stays: a trace's artifact location (a tag of the trace) names the folder the
    # tree was made in, and MLflow's reader reads the spans from there. The lock keeps two
    # processes (two test sessions on one machine) from making the same tree at once.
    with locked(root / f"{key}.lock"):
        if done.exists():
            log(f"MLflow {era}: from the cache, {cached}")
        else:
            shutil.rmtree(cached, ignore_errors=True)  # what a killed run left
            try:
                generate(era, cached, size)
            except BaseException:
                shutil.rmtree(cached, ignore_errors=True)
                raise
            done.touch()
            log(f"MLflow {era}: generated in {time.monotonic() - t0:.1f} s, kept in {cached}")
    shutil.copytree(cached, out, symlinks=True)
    return out


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path`` for the block (none on Windows, where CI runs one job)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fixture trees of each MLflow era")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tree", help="the tree of ERA into OUT")
    t.add_argument("era")
    t.add_argument("out", type=Path)
    t.add_argument("--size", choices=["small", "full"], help="default: full (small for 1.0.0)")
    sub.add_parser("ci", help="print the eras CI makes trees of")
    args = ap.parse_args(argv)
    if args.command == "ci":
        print(" ".join(CI_ERAS))
        return 0
    if args.out.exists():
        print(f"error: {args.out} exists", file=sys.stderr)
        return 2
    tree(args.era, args.out, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
