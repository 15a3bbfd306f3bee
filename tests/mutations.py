"""Single damages to a real FileStore tree, and the invariants every migration of one must keep.

Used by the property-based test (tests/faults/test_mutations.py, hypothesis draws the damage)
and by a long campaign run by hand, which counts every outcome instead of stopping at the first
failure:

    .venv/bin/python -m tests.mutations --tree DIR/mlruns --cases 300 --seed 7 [--seed 8 ...] [--kind K ...]

Every case copies the tree, applies one damage (``KINDS``), runs etl-migrate on it and checks:
exit 0 or 3 and no traceback; on exit 3 the problems name the damaged path, the target does not
exist, no staging file or lock is left, and ``--skip-invalid`` migrates the rest (exit 0,
verified); on exit 0 the target holds what MLflow's own reader shows of the damaged tree; the
source is byte-identical afterwards in every case.

The CLI runs in a forked child of a process that has imported it already: the same ``main`` a
user's ``etl-migrate`` runs, without the seconds of imports per case a new interpreter costs.
The child gets its own process group, so a hang ends in a kill of everything it started, and
is counted as a failure, never waited out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# No case takes more than seconds; a child still running after this hangs (a FIFO opened
# blocking, a loop followed forever) and is killed: a failure, reported as such.
HANG_SECONDS = 300
# The surrogate escape of a byte sequence that is no UTF-8: os functions give such names back
# as str holding lone surrogates, which UTF-8 encoders refuse.
BAD_NAME_SUFFIXES = (b"\xed\xa0\x80x", b"\xff", b"\xc3(", b"\x80abc")
KEY_FOLDERS = ("tags", "params", "metrics", "request_metadata", "aliases")


@dataclass
class Damage:
    kind: str
    path: str  # the damaged path: a problem of an exit 3 must name it (or a path in or above it)
    detail: str = ""
    # An id the damage took away (a folder renamed): a problem of a file that still refers to it
    # ("input refers to dataset <id>, which does not exist") names the damage too.
    referred: str = ""


@dataclass
class Outcome:
    damage: Damage
    code: int | None = None
    skip_code: int | None = None
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


class NotApplicable(Exception):
    """The drawn damage has nothing to act on in this tree; draw another."""


# --- what the tree holds ------------------------------------------------------------------------


def walk(root: Path):
    """Every entry under root as (path, lstat), links not followed; iterative, since os.walk
    recurses once per level and a damaged tree may be nested 1,800 deep."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            found = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:  # the permissions kind, met by a harness that is not root
            continue
        for entry in found:
            st = entry.stat(follow_symlinks=False)
            yield entry.path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)


def entries(root: Path) -> tuple[list[str], list[str]]:
    """(files, folders) under root, root itself left out: a link or FIFO counts as a file."""
    files, folders = [], []
    for path, st in walk(root):
        (folders if stat.S_ISDIR(st.st_mode) else files).append(path)
    return sorted(files), sorted(folders)


def remove_tree(path: Path) -> None:
    """shutil.rmtree recurses once per level too. Permissions taken away (the permissions
    kind) are given back first: a user who is not root removes nothing under a folder it
    cannot enter."""
    if os.path.lexists(path) and os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], check=False, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def _regular(root: Path) -> list[str]:
    return [f for f in entries(root)[0] if os.path.isfile(f) and not os.path.islink(f)]


def _is_yaml(path: str) -> bool:
    return path.endswith(".yaml") and "/artifacts/" not in path


def _in_key_folder(path: str) -> bool:
    return any(f"/{k}/" in path for k in KEY_FOLDERS) and "/artifacts/" not in path


def _pick(rng: random.Random, items: list):
    if not items:
        raise NotApplicable()
    return items[rng.randrange(len(items))]


# --- the damages ----------------------------------------------------------------------------------


def flip_byte(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in _regular(root) if os.path.getsize(f) > 0])
    data = bytearray(Path(path).read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    Path(path).write_bytes(bytes(data))
    return Damage("flip_byte", path, f"byte {i}")


def insert_bytes(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, entries(root)[0])
    data = Path(path).read_bytes()
    i = rng.randrange(len(data) + 1)
    junk = rng.choice([b"\x00", b"\n", b": ", b"- ", b"\t", b"{", b"'", b"#", b"&a ", b"*a", b"!!",
                       b" 99999999999999999999999", b"\r\n", bytes(rng.randrange(256) for _ in range(4))])
    Path(path).write_bytes(data[:i] + junk + data[i:])
    return Damage("insert_bytes", path, f"{junk!r} at {i}")


def remove_bytes(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in _regular(root) if os.path.getsize(f) > 0])
    data = Path(path).read_bytes()
    i = rng.randrange(len(data))
    n = rng.randint(1, min(16, len(data) - i))
    Path(path).write_bytes(data[:i] + data[i + n:])
    return Damage("remove_bytes", path, f"{n} at {i}")


def truncate(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in _regular(root) if os.path.getsize(f) > 0])
    size = os.path.getsize(path)
    keep = rng.choice([0, rng.randrange(size)])
    os.truncate(path, keep)
    return Damage("truncate", path, f"to {keep} of {size}")


def bad_utf8_content(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in entries(root)[0] if "/artifacts/" not in f])
    data = Path(path).read_bytes()
    i = rng.randrange(len(data) + 1)
    Path(path).write_bytes(data[:i] + rng.choice(BAD_NAME_SUFFIXES) + data[i:])
    return Damage("bad_utf8_content", path)


def nul_or_crlf(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in entries(root)[0] if "/artifacts/" not in f])
    data = Path(path).read_bytes()
    how = rng.choice(["crlf", "bom", "nul"])
    data = {"crlf": data.replace(b"\n", b"\r\n"), "bom": b"\xef\xbb\xbf" + data, "nul": data + b"\x00"}[how]
    Path(path).write_bytes(data)
    return Damage("nul_or_crlf", path, how)


# Values of every type YAML can hold, and the ones that break ids, enums and integer columns.
WRONG_VALUES = [
    0, 1, -1, 1.5, -0.0, True, False, "", "x", "0", "1.5", "True", "no", "null", [], [1], {}, {"a": 1},
    2**63, -(2**63) - 1, 2**64 + 1, 10**30, "2024-01-01", "2024-01-01T00:00:00Z", "nan", "inf", "ERROR-dup",
    "RUN-dup", "x" * 5000, "\u00e9\U0001F600", "line\nbreak", " padded ",
]
YAML_SPECIALS = [
    "!!binary aGVsbG8=", "!!timestamp 2020-01-01", "2020-01-01", "2020-01-01 10:00:00", ".nan", ".inf",
    "-.inf", "!!set {a, b}", "!!python/object:os.system x", "&anchor 5", "0x1F", "0o17", "1_000",
    "!!float 1", "!!str 5", "~", "[unclosed", "{a: [b}", "'quoted\\ntext'", '"\\ud800"', "|\n  block\n",
]


def _yaml_target(root: Path, rng: random.Random) -> tuple[str, dict, list]:
    path = _pick(rng, [f for f in entries(root)[0] if _is_yaml(f)])
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not data:
        raise NotApplicable()
    # A key of the mapping, or of a mapping nested in it (an assessment's source, feedback...).
    keys = [[k] for k in data] + [[k, j] for k, v in data.items() if isinstance(v, dict) for j in v]
    return path, data, _pick(rng, keys)


def _set(data: dict, keys: list, value=..., delete=False) -> None:
    holder = data
    for k in keys[:-1]:
        holder = holder[k]
    if delete:
        del holder[keys[-1]]
    else:
        holder[keys[-1]] = value


def yaml_wrong_type(root: Path, rng: random.Random) -> Damage:
    path, data, keys = _yaml_target(root, rng)
    value = rng.choice(WRONG_VALUES)
    _set(data, keys, value)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("yaml_wrong_type", path, f"{'.'.join(map(str, keys))} = {value!r:.60}")


def yaml_delete_key(root: Path, rng: random.Random) -> Damage:
    path, data, keys = _yaml_target(root, rng)
    _set(data, keys, delete=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("yaml_delete_key", path, ".".join(map(str, keys)))


def yaml_duplicate_key(root: Path, rng: random.Random) -> Damage:
    """A top-level key given a second time, last line wins in YAML loaders: a value of another
    type, or the first one with a suffix (``state: ERROR-dup``)."""
    path, data, keys = _yaml_target(root, rng)
    key = keys[0]
    old = data[key]
    value = rng.choice([f"{old}-dup" if not isinstance(old, (dict, list)) else "dup", *WRONG_VALUES[:20]])
    text = Path(path).read_text()
    line = yaml.safe_dump({key: value}, allow_unicode=True, width=10**6)
    Path(path).write_text(text + ("" if text.endswith("\n") else "\n") + line)
    return Damage("yaml_duplicate_key", path, f"{key}: {value!r:.60}")


def yaml_special(root: Path, rng: random.Random) -> Damage:
    """A value written in YAML syntax MLflow never writes: tags, dates, anchors, bad escapes."""
    path = _pick(rng, [f for f in entries(root)[0] if _is_yaml(f)])
    lines = Path(path).read_text().split("\n")
    top = [i for i, line in enumerate(lines) if line and not line[0].isspace() and ":" in line]
    i = _pick(rng, top)
    key = lines[i].split(":", 1)[0]
    special = rng.choice(YAML_SPECIALS)
    lines[i] = f"{key}: {special}"
    Path(path).write_text("\n".join(lines))
    return Damage("yaml_special", path, f"{key}: {special}")


def _rename(path: str, new: bytes | str) -> str:
    parent = os.path.dirname(path)
    target = os.path.join(os.fsencode(parent), new) if isinstance(new, bytes) else os.path.join(parent, new)
    os.rename(path, target)
    return os.fsdecode(target)


def bad_utf8_name(root: Path, rng: random.Random) -> Damage:
    files, folders = entries(root)
    path = _pick(rng, [p for p in files + folders if "/artifacts/" not in p])
    suffix = rng.choice(BAD_NAME_SUFFIXES)
    new = _rename(path, os.fsencode(os.path.basename(path)) + suffix)
    return Damage("bad_utf8_name", new, f"renamed from {os.path.basename(path)}")


def key_folder_bad_name(root: Path, rng: random.Random) -> Damage:
    """The name of a run's (or any entity's) tags/ or params/ folder itself made non-UTF-8."""
    folder = _pick(rng, [d for d in entries(root)[1] if os.path.basename(d) in KEY_FOLDERS])
    new = _rename(folder, os.fsencode(os.path.basename(folder)) + rng.choice(BAD_NAME_SUFFIXES))
    return Damage("key_folder_bad_name", new)


def file_to_folder(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, entries(root)[0])
    os.unlink(path)
    os.mkdir(path)
    if rng.random() < 0.5:
        Path(path, "inner").write_text("x")
    return Damage("file_to_folder", path)


def folder_to_file(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, entries(root)[1])
    shutil.rmtree(path)
    Path(path).write_text(rng.choice(["", "x", "a: 1\n"]))
    return Damage("folder_to_file", path)


def self_symlink(root: Path, rng: random.Random) -> Damage:
    files, folders = entries(root)
    path = _pick(rng, files + folders)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    os.symlink(os.path.basename(path), path)
    return Damage("self_symlink", path)


def symlink_cycle(root: Path, rng: random.Random) -> Damage:
    folder = _pick(rng, entries(root)[1])
    how = rng.choice(["pair", "ancestor", "parent"])
    if how == "pair":
        a, b = os.path.join(folder, "loop_a"), os.path.join(folder, "loop_b")
        os.symlink("loop_b", a)
        os.symlink("loop_a", b)
        return Damage("symlink_cycle", a, how)
    link = os.path.join(folder, "loop")
    os.symlink(".." if how == "parent" else str(root), link, target_is_directory=True)
    return Damage("symlink_cycle", link, how)


def symlink_out(root: Path, rng: random.Random) -> Damage:
    """An entry replaced by a link to data outside the tree (a file, or a copy of the folder)."""
    files, folders = entries(root)
    path = _pick(rng, files + folders)
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    copy = outside / f"{len(os.listdir(outside))}-{os.path.basename(path)}"
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.move(path, copy)
    else:
        shutil.move(path, copy)
    os.symlink(copy, path)
    return Damage("symlink_out", path)


def fifo(root: Path, rng: random.Random) -> Damage:
    files, folders = entries(root)
    if rng.random() < 0.5:
        path = _pick(rng, files)
        os.unlink(path)
    else:
        path = os.path.join(_pick(rng, folders), rng.choice(["fifo", "meta.yaml", "x.yaml"]))
        if os.path.lexists(path):
            raise NotApplicable()
    os.mkfifo(path)
    return Damage("fifo", path)


def deep_nesting(root: Path, rng: random.Random) -> Damage:
    folder = _pick(rng, [d for d in entries(root)[1] if os.path.basename(d) in KEY_FOLDERS])
    depth = rng.randint(1100, 1800)
    # One-letter names: 1,800 levels fit the 4,096 bytes of a path the kernel takes.
    deep = os.path.join(folder, *["d"] * depth)
    if len(os.fsencode(deep)) > 4000:
        raise NotApplicable()
    current = folder
    for _ in range(depth):  # os.makedirs recurses once per level
        current = os.path.join(current, "d")
        os.mkdir(current)
    Path(deep, "leaf").write_text("v")
    return Damage("deep_nesting", os.path.join(folder, "d"), f"{depth} deep")


def _entity_dirs(root: Path) -> dict[str, list[str]]:
    import glob

    g = lambda pattern: sorted(glob.glob(str(root / pattern)))  # noqa: E731
    return {
        "run": [p for p in g("[0-9]*/*") + g(".trash/*/*")
                if os.path.isfile(os.path.join(p, "meta.yaml")) and len(os.path.basename(p)) == 32],
        "trace": g("[0-9]*/traces/*") + g(".trash/*/traces/*"),
        "model": g("[0-9]*/models/*") + g(".trash/*/models/*"),
        "experiment": [p for p in g("[0-9]*") + g(".trash/[0-9]*") if os.path.isdir(p)],
        "dataset": g("[0-9]*/datasets/*"),
        "registered_model": g("models/*"),
        "version": g("models/*/version-*"),
        "assessment": g("[0-9]*/traces/*/assessments/*.yaml"),
        "input": g("[0-9]*/*/inputs/*") + g("[0-9]*/*/outputs/*"),
    }


def copy_entity(root: Path, rng: random.Random) -> Damage:
    """An entity folder copied by hand: into another experiment (same id twice), or under a new
    name (the id inside disagrees with its folder)."""
    dirs = _entity_dirs(root)
    kind = _pick(rng, [k for k, v in dirs.items() if v])
    src = _pick(rng, dirs[kind])
    parent = os.path.dirname(src)
    if kind in ("run", "trace", "model") and rng.random() < 0.6:
        exp = _pick(rng, [e for e in dirs["experiment"] if e != os.path.dirname(parent if kind != "run" else src)])
        sub = {"run": "", "trace": "traces", "model": "models"}[kind]
        dst = os.path.join(exp, sub, os.path.basename(src))
    elif kind == "experiment":
        dst = os.path.join(root, ".trash", os.path.basename(src)) if ".trash" not in src \
            else os.path.join(root, os.path.basename(src))
    elif kind == "version":
        dst = os.path.join(parent, f"version-{rng.randint(3, 99)}")
    elif kind == "assessment":
        dst = os.path.join(_pick(rng, [os.path.join(t, "assessments") for t in dirs["trace"]]),
                           os.path.basename(src) if rng.random() < 0.5 else "a-copy.yaml")
    else:
        name = os.path.basename(src)
        dst = os.path.join(parent, "f" * 32 if kind == "run" else name[:-4] + "copy")
    if os.path.lexists(dst):
        raise NotApplicable()
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)
    return Damage("copy_entity", dst, f"{kind} copied from {src}")


ID_KEYS = ("run_id", "run_uuid", "experiment_id", "model_id", "trace_id", "request_id", "name", "version",
           "assessment_id", "source_run_id", "destination_id", "source_id")


def mismatch_id(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in entries(root)[0] if _is_yaml(f)])
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise NotApplicable()
    key = _pick(rng, [k for k in ID_KEYS if k in data])
    old = data[key]
    data[key] = rng.choice([f"{old}0", str(old)[:-1] + ("0" if str(old)[-1:] != "0" else "1"), "0",
                            "ffffffffffffffffffffffffffffffff"])
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("mismatch_id", path, f"{key}: {old!r} -> {data[key]!r}")


def delete_entry(root: Path, rng: random.Random) -> Damage:
    files, folders = entries(root)
    path = _pick(rng, files + folders)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return Damage("delete_entry", path)


def add_stray(root: Path, rng: random.Random) -> Damage:
    folder = _pick(rng, [str(root)] + entries(root)[1])
    name = rng.choice(["notes.txt", "extra.yaml", "scratch", "meta.yml", ".hidden", "123", "0" * 32])
    path = os.path.join(folder, name)
    if os.path.lexists(path):
        raise NotApplicable()
    if rng.random() < 0.5:
        os.mkdir(path)
        Path(path, rng.choice(["meta.yaml", "x"])).write_text("a: 1\n")
    else:
        Path(path).write_text(rng.choice(["a: 1\n", "hello", ""]))
    return Damage("add_stray", path)


def metric_line(root: Path, rng: random.Random) -> Damage:
    path = _pick(rng, [f for f in entries(root)[0] if "/metrics/" in f and "/artifacts/" not in f])
    line = rng.choice([
        "1 2 3", "1 nan 2", "1 inf 3", "1 -inf 3", "1 1e400 0", f"{2**64} 1 0", f"1 1 {2**63}",
        f"1 1 {-(2**63) - 1}", "1 1 1 1", "1  1 1", " 1 1 1 ", "1.5 1 1", "1 1 1.5", "", "x y z",
        "1 1 1 run extra", "1 0x10 1", "1 1_0 1", "١ 1 1", "1 1 ²", "1 NaN 1", "1 Infinity 1", "-1 -1 -1",
        # blanks of other kinds, and too many
        "1\t1\t1", "1 1\t1", "1 1 1\t", "\t1 1 1", "1 1 1\r", "1 1 1\x0c", "1\u00a01 1", "1 1  1", "1  1",
        # NaN and infinity as other writers spell them, and the edges of a double
        "1 nan 1", "1 NAN 1", "1 -nan 1", "1 +nan 1", "1 +inf 1", "1 INF 1", "1 infinity 1", "1 -Infinity 1",
        "1 1e309 1", "1 -1e309 1", "1 1e-400 1", "1 4.9e-324 1", "1 1.7976931348623157e308 1", "1 -0 1",
        "1 1. 1", "1 .5 1", "1 +1 1", "+1 1 1", "1 1 +1", "01 1 01", "1 ∞ 1", "1 1_000 1",
        f"{2**63 - 1} 1 {2**63 - 1}", f"{-(2**63)} 1 {-(2**63)}",
        # the fields of a logged model's lines (4 and 6) and of none
        "1 1 1 run", "1 1 1 run ds digest", "1 1 1 run ds digest x", "1 1 1 a", "1 1 1 a b c",
    ])
    data = Path(path).read_bytes()
    Path(path).write_bytes(data + ("" if data.endswith(b"\n") or not data else "\n").encode()
                           + line.encode() + rng.choice([b"\n", b""]))
    return Damage("metric_line", path, repr(line))


def huge_integer(root: Path, rng: random.Random) -> Damage:
    path, data, keys = _yaml_target(root, rng)
    value = rng.choice([2**63, -(2**63) - 1, 2**64, 10**40, -(10**40)])
    text = Path(path).read_text()
    _set(data, keys, value)
    new = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if new == text:
        raise NotApplicable()
    Path(path).write_text(new)
    return Damage("huge_integer", path, f"{'.'.join(map(str, keys))} = {value}")


def odd_key_name(root: Path, rng: random.Random) -> Damage:
    """A key file whose name MLflow's validators would refuse, or hard to spell: the file
    store's reader shows it anyway."""
    folder = _pick(rng, [d for d in entries(root)[1] if os.path.basename(d) in KEY_FOLDERS])
    name = rng.choice(["has space", "new\nline", "..dots", "x" * 250, "ü", "CAPS", "-", "tab\tkey", "a:b"])
    path = os.path.join(folder, name)
    if os.path.lexists(path):
        raise NotApplicable()
    content = "1 1 0\n" if os.path.basename(folder) == "metrics" else "1" if os.path.basename(folder) == "aliases" else "v"
    Path(path).write_text(content)
    return Damage("odd_key_name", path)


def empty_file(root: Path, rng: random.Random) -> Damage:
    """A file of any kind left empty (a disk full mid-write, a copy cut short)."""
    path = _pick(rng, [f for f in _regular(root) if os.path.getsize(f) > 0])
    os.truncate(path, 0)
    return Damage("empty_file", path)


def line_ends(root: Path, rng: random.Random) -> Damage:
    """Bytes that editors, other systems and copies leave: lone CRs, a BOM inside or at the
    start, UTF-16, a NUL inside, trailing blanks, tabs, form feeds and Unicode line separators
    (which Python's splitlines, used by MLflow's line reader, takes for line ends)."""
    path = _pick(rng, [f for f in _regular(root) if "/artifacts/" not in f])
    data = Path(path).read_bytes()
    i = rng.randrange(len(data) + 1)
    how = rng.choice(["cr", "crlf_last", "bom_inside", "utf16", "nul_inside", "trailing_blanks", "tab_indent",
                      "form_feed", "line_separator", "next_line", "vertical_tab", "no_final_newline",
                      "extra_final_newlines"])
    if how == "cr":
        data = data.replace(b"\n", b"\r")
    elif how == "crlf_last":
        data = data.rstrip(b"\n") + b"\r\n"
    elif how == "bom_inside":
        data = data[:i] + b"\xef\xbb\xbf" + data[i:]
    elif how == "utf16":
        try:
            data = data.decode("utf-8").encode("utf-16")
        except UnicodeDecodeError:
            raise NotApplicable() from None
    elif how == "nul_inside":
        data = data[:i] + b"\x00" + data[i:]
    elif how == "trailing_blanks":
        data = data.replace(b"\n", rng.choice([b" \n", b"\t\n", b"  \n"]))
    elif how == "tab_indent":
        data = data.replace(b"\n  ", b"\n\t")
    else:
        sep = {"form_feed": b"\x0c", "line_separator": "\u2028".encode(), "next_line": "\x85".encode(),
               "vertical_tab": b"\x0b", "no_final_newline": b"", "extra_final_newlines": b"\n\n"}[how]
        if how == "no_final_newline":
            data = data.rstrip(b"\n")
        elif how == "extra_final_newlines":
            data += sep
        else:
            data = data[:i] + sep + data[i:] if rng.random() < 0.5 else data.replace(b"\n", sep + b"\n", 1)
    if data == Path(path).read_bytes():
        raise NotApplicable()
    Path(path).write_bytes(data)
    return Damage("line_ends", path, how)


def _laughs(levels: int) -> str:
    """A YAML value of aliases nested ``levels`` deep, 10 wide: 10**levels strings once expanded."""
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels + 1):
        lines.append(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]")
    return "\n".join(lines)


def yaml_document(root: Path, rng: random.Random) -> Damage:
    """A YAML file whose document is not the mapping MLflow writes, or is one written with YAML
    features MLflow never uses: a list, a scalar, several documents, anchors and aliases (also
    nested, the "billion laughs"), merge keys, Python tags, keys that are no strings."""
    path = _pick(rng, [f for f in _regular(root) if _is_yaml(f)])
    text = Path(path).read_text(errors="replace")
    lines = text.rstrip("\n").split("\n")
    top = [n for n, line in enumerate(lines) if line and not line[0].isspace() and ": " in line]
    how = rng.choice(["list", "scalar", "number", "null", "documents", "document_end", "alias_value",
                      "alias_mapping", "merge_key", "python_object", "python_name", "set", "omap",
                      "int_key", "null_key", "bool_key", "complex_key", "laughs", "flow_mapping"])
    if how == "list":
        new = "".join(f"- {line}\n" for line in lines)
    elif how in ("scalar", "number", "null"):
        new = {"scalar": "just text\n", "number": "42\n", "null": "~\n"}[how]
    elif how == "documents":
        new = f"---\n{text}---\n{text}"
    elif how == "document_end":
        new = f"%YAML 1.1\n---\n{text}...\n"
    elif how in ("alias_value", "alias_mapping"):
        # One field's value anchored, another's replaced by the alias: still plain YAML.
        if len(top) < 2:
            raise NotApplicable()
        a, b = rng.sample(top, 2)
        key_a, value_a = lines[a].split(": ", 1)
        key_b = lines[b].split(": ", 1)[0]
        lines[a] = f"{key_a}: &anchor {value_a}"
        lines[b] = f"{key_b}: *anchor"
        if how == "alias_mapping":
            lines.append("extra_mapping: &m {a: 1}\nother_mapping: *m")
        new = "\n".join(lines) + "\n"
    elif how == "merge_key":
        new = text + ("" if text.endswith("\n") else "\n") + "<<: {injected: 1}\n"
    elif how in ("python_object", "python_name", "set", "omap"):
        if not top:
            raise NotApplicable()
        n = _pick(rng, top)
        key = lines[n].split(": ", 1)[0]
        lines[n] = key + ": " + {"python_object": "!!python/object/apply:os.system ['true']",
                                 "python_name": "!!python/name:os.system", "set": "!!set {a, b}",
                                 "omap": "!!omap [a: 1, b: 2]"}[how]
        new = "\n".join(lines) + "\n"
    elif how in ("int_key", "null_key", "bool_key", "complex_key"):
        key = {"int_key": "1", "null_key": "null", "bool_key": "true", "complex_key": "? [a, b]\n"}[how]
        new = text + ("" if text.endswith("\n") else "\n") + f"{key}: x\n"
    elif how == "laughs":
        new = text + ("" if text.endswith("\n") else "\n") + _laughs(rng.randint(3, 6)) + "\n"
    else:  # the whole mapping in flow style, on one line
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise NotApplicable() from None
        new = yaml.safe_dump(data, default_flow_style=True, width=10**9, allow_unicode=True)
    Path(path).write_text(new)
    return Damage("yaml_document", path, how)


def _retyped(value, rng: random.Random):
    """The same value as another type: numbers as strings and strings as numbers."""
    if isinstance(value, bool):
        return rng.choice([str(value).lower(), int(value), str(int(value))])
    if isinstance(value, int):
        return rng.choice([str(value), float(value), f"{value}.0", hex(value)])
    if isinstance(value, float):
        return rng.choice([str(value), int(value) if value == value and abs(value) < 1e18 else "nan"])
    if value is None:
        return rng.choice(["None", "null", "", "~", 0])
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            pass
        return rng.choice([0, 1.0, True, None, [value], {value: value}])
    if isinstance(value, (list, dict)):
        return rng.choice([str(value), len(value), None])
    raise NotApplicable()


def yaml_retype(root: Path, rng: random.Random) -> Damage:
    """One field's value as another type (a number as a string, a string as a number, a
    boolean as text...): what a hand edit or another tool's writer leaves."""
    path, data, keys = _yaml_target(root, rng)
    holder = data
    for k in keys[:-1]:
        holder = holder[k]
    old = holder[keys[-1]]
    new = _retyped(old, rng)
    if type(new) is type(old) and new == old:
        raise NotApplicable()
    _set(data, keys, new)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("yaml_retype", path, f"{'.'.join(map(str, keys))}: {old!r:.40} -> {new!r:.40}")


TIME_KEYS = ("creation_time", "last_update_time", "start_time", "end_time", "deleted_time", "creation_timestamp",
             "last_updated_timestamp", "timestamp_ms", "execution_time_ms", "execution_duration_ms", "step")
ISO_KEYS = ("request_time", "create_time", "last_update_time")
TIMES = [-1, 0, -(2**63), 2**63 - 1, 2**53 + 1, 10**13, 253402300800000, -62135596800001, 1]
ISO_TIMES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59Z", "2024-02-30T00:00:00Z",
             "2024-01-01T00:00:00+14:00", "2024-01-01T00:00:00.1234567890Z", "2024-01-01 00:00:00",
             "2024-01-01T00:00:00", "2024-01-01T24:00:00Z", "2024-01-01T00:00:60Z", "10000-01-01T00:00:00Z",
             "2024-01-01T00:00:00.5-00:30", "2024-01-01t00:00:00z", "2024-01-01T00:00:00,5Z", "1e3"]


def timestamps(root: Path, rng: random.Random) -> Damage:
    """A time of a meta file (or a metric line's) negative, zero, at or beyond 64 bits, or an ISO
    time at the edges of what protobuf reads (year 1 and 9999, a leap second, no zone...)."""
    files = [f for f in _regular(root) if _is_yaml(f) or ("/metrics/" in f and "/artifacts/" not in f)]
    path = _pick(rng, files)
    if "/metrics/" in path and not path.endswith(".yaml"):
        lines = Path(path).read_bytes().split(b"\n")
        n = rng.randrange(len(lines))
        parts = lines[n].split(b" ")
        if len(parts) < 2:
            raise NotApplicable()
        field_ = rng.choice([0, 2] if len(parts) > 2 else [0])
        parts[field_] = str(rng.choice(TIMES)).encode()
        lines[n] = b" ".join(parts)
        Path(path).write_bytes(b"\n".join(lines))
        return Damage("timestamps", path, f"line {n + 1} field {field_}: {parts[field_]!r}")
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise NotApplicable()
    holders = [(data, k) for k in data] + [(v, k) for v in data.values() if isinstance(v, dict) for k in v]
    holder, key = _pick(rng, [(h, k) for h, k in holders if k in TIME_KEYS or k in ISO_KEYS])
    iso = isinstance(holder[key], str)
    holder[key] = rng.choice(ISO_TIMES) if iso else rng.choice(TIMES)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("timestamps", path, f"{key}: {holder[key]!r}")


def permissions(root: Path, rng: random.Random) -> Damage:
    """A file or folder without read (or search) permission. Root reads it anyway, as MLflow's
    reader run by root does: the case then runs etl-migrate as a user without root's override
    of file permissions (see ``_as_user``), so it meets the permission as a user would."""
    files, folders = entries(root)
    path = _pick(rng, [p for p in files + folders if not os.path.islink(p)])
    mode = rng.choice([0o000, 0o200, 0o100] if os.path.isfile(path) else [0o000, 0o300, 0o500, 0o600])
    os.chmod(path, mode)
    # Root's reading of it is a case too: the hidden data must then be migrated as MLflow's
    # reader (run by root) shows it.
    who = "as a user" if rng.random() < 0.75 else "as root"
    return Damage("permissions", path, f"{oct(mode)} {who}")


def hard_link(root: Path, rng: random.Random) -> Damage:
    """A file replaced by a hard link to another file of the tree (a copy tool's deduplication,
    or a hand 'fix'): the same bytes under two names, no link to see."""
    files = _regular(root)
    path = _pick(rng, files)
    other = _pick(rng, [f for f in files if f != path and os.path.basename(f) == os.path.basename(path)]
                  or [f for f in files if f != path])
    os.unlink(path)
    os.link(other, path)
    return Damage("hard_link", path, f"to {other}")


ODD_NAMES = ["x" * 255, "é" * 127, "..", "...", "a..b", "new\nline", " lead", "trail ", "-", "a\\b", "%41",
             "a:b", "0" * 40, "CON", "\t", "名前", "v1", "version-", "version-01", "version-1.0", "version--1",
             "version-٣", ".hidden", "meta.yaml"]


def odd_entity_name(root: Path, rng: random.Random) -> Damage:
    """An entity folder renamed (an experiment, run, trace, logged model, registered model,
    version, dataset, input): a leading zero, '..', a newline, 255 bytes... and sometimes the id
    in its meta.yaml renamed with it, so the two agree."""
    dirs = _entity_dirs(root)
    kind = _pick(rng, [k for k in dirs if dirs[k] and k != "assessment"])
    path = _pick(rng, dirs[kind])
    old = os.path.basename(path)
    new = rng.choice(ODD_NAMES + [f"0{old}", f"{old} ", old.upper(), f"{old}\n", old[:-1]])
    if kind == "version" and rng.random() < 0.5:
        new = rng.choice(["version-01", "version-1.0", "version--1", "version-٣", "version- 1", "version-0",
                          f"version-{2**63}"])
    target = os.path.join(os.path.dirname(path), new)
    if new in (".", "..") or os.path.lexists(target):
        raise NotApplicable()
    os.rename(path, target)
    meta = os.path.join(target, "meta.yaml")
    id_key = {"experiment": "experiment_id", "run": "run_id", "model": "model_id", "registered_model": "name",
              "version": "version"}.get(kind)
    detail = f"{kind} {old!r} -> {new!r}"
    if id_key and os.path.isfile(meta) and rng.random() < 0.5:
        data = yaml.safe_load(Path(meta).read_text())
        if isinstance(data, dict):
            data[id_key] = new[len("version-"):] if kind == "version" else new
            if kind == "run":
                data.pop("run_uuid", None)
            Path(meta).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
            detail += f", {id_key} too"
    # Only ids too long to turn up in a reason by chance (run, dataset, trace and model ids), and
    # a version as an alias pointing at it says it ("alias points at version 2, which ...").
    referred = old if len(old) >= 16 else f"at version {old[len('version-'):]}, " if kind == "version" else ""
    return Damage("odd_entity_name", target, detail, referred=referred)


def registry_refs(root: Path, rng: random.Random) -> Damage:
    """The registry's references broken: an alias to a version that is missing or deleted, or
    with odd text; versions whose registered model lost its meta.yaml; a version naming a run
    that is not there; a registered model folder holding only versions."""
    models = sorted(glob_(root, "models/*"))
    model = _pick(rng, models)
    versions = sorted(glob_(Path(model), "version-*"))
    how = rng.choice(["alias_missing", "alias_text", "alias_deleted", "no_model_meta", "versions_only",
                      "version_run_missing", "version_of_other_model"])
    if how.startswith("alias"):
        os.makedirs(os.path.join(model, "aliases"), exist_ok=True)
        path = os.path.join(model, "aliases", rng.choice(["champion", "fresh", "Prod"]))
        if how == "alias_missing":
            text = str(rng.choice([99, 0, 10**20]))
        elif how == "alias_text":
            text = rng.choice([" 1", "1\n", "01", "-1", "1.0", "", "one", "+1", "١"])
        else:
            deleted = [v for v in versions if "Deleted_Internal" in Path(v, "meta.yaml").read_text(errors="replace")]
            text = _pick(rng, deleted).rsplit("-", 1)[1]
        Path(path).write_text(text)
        return Damage("registry_refs", path, f"{how}: {text!r}")
    if how == "no_model_meta":
        path = os.path.join(model, "meta.yaml")
        os.unlink(path)
        return Damage("registry_refs", path, how)
    if how == "versions_only":
        for entry in os.listdir(model):
            if not entry.startswith("version-"):
                full = os.path.join(model, entry)
                shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
        return Damage("registry_refs", os.path.join(model, "meta.yaml"), how)
    version = _pick(rng, versions)
    path = os.path.join(version, "meta.yaml")
    data = yaml.safe_load(Path(path).read_text())
    if how == "version_run_missing":
        data["run_id"] = "0" * 32
    else:
        other = _pick(rng, [m for m in models if m != model])
        data["name"] = os.path.basename(other)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return Damage("registry_refs", path, how)


def glob_(root: Path, pattern: str) -> list[str]:
    import glob

    return glob.glob(str(root / pattern))


def huge_value(root: Path, rng: random.Random) -> Damage:
    """A value far beyond what MLflow writes: a tag or param of megabytes, a meta field of a
    megabyte on one line, a metric file of 200,000 points, a key of 250+ characters."""
    files = [f for f in _regular(root) if "/artifacts/" not in f]
    how = rng.choice(["key_file", "yaml_field", "metric_points", "long_key"])
    if how == "key_file":
        path = _pick(rng, [f for f in files if _in_key_folder(f) and "/metrics/" not in f and "/aliases/" not in f])
        Path(path).write_text(rng.choice(["v", "é", "\n"]) * rng.choice([8001, 2**20, 5 * 2**20]))
    elif how == "yaml_field":
        path, data, keys = _yaml_target(root, rng)
        _set(data, keys, "x" * rng.choice([5000, 2**20]))
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**9))
    elif how == "metric_points":
        path = _pick(rng, [f for f in files if "/metrics/" in f])
        data = Path(path).read_bytes()
        lines = data.rstrip(b"\n").split(b"\n")
        Path(path).write_bytes(b"\n".join(lines * (200_000 // max(len(lines), 1))) + b"\n")
    else:
        folder = _pick(rng, [d for d in entries(root)[1] if os.path.basename(d) in ("tags", "params", "metrics")])
        path = os.path.join(folder, "k" * rng.choice([251, 255]))
        Path(path).write_text("1 1 0\n" if folder.endswith("metrics") else "v")
    return Damage("huge_value", path, how)


def special_file(root: Path, rng: random.Random) -> Damage:
    """A device or a socket where a file is, or beside the files (never opened: /dev/zero would
    never end)."""
    files, folders = entries(root)
    if rng.random() < 0.5:
        path = _pick(rng, [f for f in files if not os.path.islink(f)])
        os.unlink(path)
    else:
        path = os.path.join(_pick(rng, folders), rng.choice(["dev", "meta.yaml", "sock"]))
        if os.path.lexists(path):
            raise NotApplicable()
    how = rng.choice(["zero", "null", "socket"])
    if how == "socket":
        import socket

        if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes
            raise NotApplicable()
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
    else:
        try:
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5 if how == "zero" else 3))
        except PermissionError:  # no CAP_MKNOD (a user, or a container): a socket is drawn instead
            raise NotApplicable() from None
    return Damage("special_file", path, how)


KINDS = {f.__name__: f for f in (
    flip_byte, insert_bytes, remove_bytes, truncate, bad_utf8_content, nul_or_crlf, yaml_wrong_type,
    yaml_delete_key, yaml_duplicate_key, yaml_special, bad_utf8_name, key_folder_bad_name,
    file_to_folder, folder_to_file, self_symlink, symlink_cycle, symlink_out, fifo, deep_nesting,
    copy_entity, mismatch_id, delete_entry, add_stray, metric_line, huge_integer, odd_key_name,
    empty_file, line_ends, yaml_document, yaml_retype, timestamps, permissions, hard_link,
    odd_entity_name, registry_refs, huge_value, special_file,
)}


def apply(root: Path, kind: str, seed: int, tries: int = 50) -> Damage:
    """One damage of ``kind`` to the tree at root, drawn from ``seed``."""
    rng = random.Random(seed)
    for _ in range(tries):
        try:
            return KINDS[kind](root, rng)
        except NotApplicable:
            continue
    raise NotApplicable(kind)


# --- running the CLI and MLflow's reader, forked ----------------------------------------------------


def forked(func, *args, timeout: float = HANG_SECONDS, output: str | None = None):
    """func(*args) in a forked child in a process group of its own: (exit code, its result or
    the traceback text). A child still running after ``timeout`` is killed with its group (-9)."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.setpgid(0, 0)
        os.close(read)
        code, result = 0, None
        try:
            if output is not None:
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                # As a user's etl-migrate writes them (a test runner may have replaced them):
                # UTF-8, strict, so an unprintable name fails here as it would there.
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            result = func(*args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            code, result = 99, traceback.format_exc()
        with open(write, "wb") as pipe:
            pickle.dump(result, pipe)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
    os.close(write)
    deadline = time.monotonic() + timeout
    chunks = []
    os.set_blocking(read, False)
    while True:
        try:
            chunk = os.read(read, 1 << 16)
            if chunk:
                chunks.append(chunk)
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return None, f"hung: killed after {timeout:.0f}s"
        time.sleep(0.02)
    os.set_blocking(read, True)
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    try:
        os.killpg(pid, signal.SIGKILL)  # anything the child left running
    except ProcessLookupError:
        pass
    result = pickle.loads(b"".join(chunks)) if chunks else None
    return os.waitstatus_to_exitcode(status), result


def _cli(args: list[str], as_user: bool = False) -> None:
    from etl.cli import main

    if as_user:
        _as_user()
    main.main(args, prog_name="etl-migrate")


# linux/capability.h
_CAP_VERSION_3, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 0x20080522, 1, 2


def _as_user() -> None:
    """This process meets file permissions as any user does: root (uid 0) drops the capabilities
    that let it read, list and enter what its permissions deny (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH). It stays root otherwise: the tree and the interpreter stay reachable."""
    if os.geteuid() != 0:
        return
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(_CAP_VERSION_3, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        data[0].effective &= ~(1 << cap)
        data[0].permitted &= ~(1 << cap)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def run_cli_forked(args: list[str], output: str, as_user: bool = False) -> tuple[int | None, str]:
    code, result = forked(_cli, args, as_user, output=output)
    text = Path(output).read_text(errors="replace") if os.path.exists(output) else ""
    if isinstance(result, str):  # a traceback, or the hang
        text += "\n" + result
    return code, text


# mlflow.utils.validation._EXPERIMENT_ID_REGEX: the folder names MLflow's experiment listing takes.
READER_EXPERIMENT_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,63}")


def reader_gap(damage: Damage, root: Path) -> bool:
    """A damage the user guide documents as migrated where MLflow's reader fails on the whole
    run or tree ("What MLflow's reader and etl-migrate read differently"), so there is no
    reader's view to compare with: a stray file in a run's inputs/ or outputs/ (the reader takes
    every entry there for an input's folder), a folder in mlruns/ or .trash/ under a name
    MLflow's experiment id rule refuses (its whole experiment listing fails on it). The census
    names both."""
    path = Path(damage.path)
    if path.parent.name in ("inputs", "outputs") and not path.is_dir():
        return True
    return (path.parent in (root, root / ".trash") and path.is_dir()
            and not READER_EXPERIMENT_ID.fullmatch(path.name))


def _compare(mlruns: str, db: str) -> list[str]:
    from tests import client_compare as cc
    from tests.trees import file_client, sql_client

    src, dst = file_client(Path(mlruns)), sql_client(Path(db))
    failures = []
    for name in ("compare_experiments", "compare_runs", "compare_registry", "compare_run_inputs_outputs",
                 "compare_traces", "compare_logged_models", "compare_prompts"):
        try:
            getattr(cc, name)(src, dst)
        except AssertionError as e:
            failures.append(f"{name}: {str(e)[:300]}")
        except Exception as e:  # MLflow's reader cannot read what was migrated
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
    return failures


def fingerprint(root: Path) -> dict:
    """Every entry under root by its lstat type, size, mtime, link target and content hash;
    FIFOs and devices are never opened, links never followed."""
    out = {}
    for path, st in walk(root):
        if True:
            item = [stat.S_IFMT(st.st_mode), st.st_mtime_ns, st.st_size]
            if stat.S_ISLNK(st.st_mode):
                item.append(os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                try:
                    item.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
                except PermissionError:  # as in walk
                    item.append("unreadable")
            out[path] = tuple(item)
    return out


def names(problem_path: str, damaged: str, root: str) -> bool:
    """The problem's path is the damaged path, an entry inside it, or a folder holding it (not
    the tree's root)."""
    from etl.rows import printable

    # Problems show a name that is no UTF-8 by the escapes of its bytes.
    p, d = os.path.normpath(problem_path), os.path.normpath(printable(damaged))
    if p == d or p.startswith(d + os.sep):
        return True
    return d.startswith(p + os.sep) and len(p) > len(os.path.normpath(root))


def check_case(base: Path, kind: str, seed: int, work: Path, compare: bool = True) -> Outcome:
    """One damage of ``kind`` to a copy of the tree ``base`` (an mlruns folder), migrated."""
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    mlruns = work / "src" / "mlruns"
    shutil.copytree(base, mlruns, symlinks=True)
    damage = apply(mlruns, kind, seed)
    outcome = Outcome(damage)
    fail = outcome.failures.append
    before = fingerprint(mlruns)
    out = work / "out"
    out.mkdir()
    report = out / "report.json"
    db = out / "mlflow.db"
    as_user = damage.detail.endswith("as a user")
    code, text = run_cli_forked(["--source", str(mlruns), "--target", f"sqlite:///{db}", "--report",
                                 str(report), "--quiet", "--workers", "2"], str(work / "strict.txt"), as_user)
    outcome.code = code
    if code not in (0, 3):
        fail(f"exit {code}: {text[-1500:]}")
    if "Traceback" in text:
        fail(f"traceback: {text[-1500:]}")
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        fail(f"report not written: {e}")
        data = {}
    if code != 0:
        left = sorted(p.name for p in out.iterdir() if p.name != "report.json")
        if left:
            fail(f"left in the target's folder: {left}")
    if code == 3:
        problems = data.get("problems", [])
        if not any(p["path"] and names(p["path"], damage.path, str(mlruns))
                   or damage.referred and damage.referred in (p.get("reason") or "") for p in problems):
            fail(f"no problem names {damage.path}: {[p['path'] for p in problems[:5]]}")
        skip = work / "skip"
        skip.mkdir()
        skip_code, skip_text = run_cli_forked(
            ["--source", str(mlruns), "--target", f"sqlite:///{skip}/mlflow.db", "--skip-invalid",
             "--report", str(skip / "report.json"), "--workers", "2"], str(work / "skip.txt"), as_user)
        outcome.skip_code = skip_code
        if skip_code != 0 or "Traceback" in skip_text or "SKIPPED" not in skip_text:
            fail(f"--skip-invalid: exit {skip_code}: {skip_text[-1500:]}")
        left = sorted(p.name for p in skip.iterdir() if p.name not in ("report.json", "mlflow.db"))
        if left:
            fail(f"--skip-invalid left in the target's folder: {left}")
    # Before the comparison: MLflow's registry reader, which it opens, creates a missing models/.
    if fingerprint(mlruns) != before:
        fail("the source tree changed")
    if code == 0 and compare and not reader_gap(damage, mlruns):
        ccode, diffs = forked(_compare, str(mlruns), str(db))
        if ccode != 0 or diffs:
            fail(f"exit 0 but the target differs from MLflow's reader: {diffs}")
    outcome.seconds = time.monotonic() - started
    return outcome


def prepare() -> None:
    """Import what every case needs once, before the first fork."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's registry reader looks a version's logged model up through a bare MlflowClient(),
    # on the default tracking URI: unset, a SQLite database in the current folder, made anew by
    # all of MLflow's migrations in every case (a minute on a busy machine). A scratch file store
    # answers the same (no such model).
    if "MLFLOW_TRACKING_URI" not in os.environ:
        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"etl-mutations-default-{os.getuid()}"
        scratch.mkdir(exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = scratch.as_uri()
    import mlflow  # noqa: F401
    import mlflow.store.db.utils as db_utils
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore  # noqa: F401
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as _  # noqa: F401

    # Every SQL store MLflow opens checks the database against the head of its migrations,
    # found by loading each migration script anew: once here, for every case's stores.
    head = db_utils._get_latest_schema_revision()
    db_utils._get_latest_schema_revision = lambda: head
    import etl.cli  # noqa: F401
    import etl.pipeline  # noqa: F401
    from etl.source.derived import _analytics

    _analytics()
    from tests import client_compare  # noqa: F401


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True, type=Path, help="an mlruns folder (repeatable)")
    ap.add_argument("--cases", type=int, default=100, help="cases per seed and tree")
    ap.add_argument("--seed", action="append", type=int, default=[])
    ap.add_argument("--kind", action="append", default=[], help="only these kinds")
    ap.add_argument("--work", type=Path, default=Path("/tmp/etl-mutations"))
    ap.add_argument("--log", type=Path, help="one JSON line per case")
    args = ap.parse_args(argv)
    prepare()
    kinds = args.kind or sorted(KINDS)
    outcomes: Counter = Counter()
    failed = []
    log = open(args.log, "a") if args.log else None
    for tree in args.tree:
        for seed in args.seed or [0]:
            rng = random.Random(seed)
            for n in range(args.cases):
                kind, case_seed = rng.choice(kinds), rng.randrange(2**32)
                work = args.work / f"{tree.parent.name}-{seed}-{n}"
                remove_tree(work)
                try:
                    o = check_case(tree, kind, case_seed, work)
                except NotApplicable:
                    continue
                key = (kind, o.code, "ok" if o.ok else "FAIL")
                outcomes[key] += 1
                line = {"tree": str(tree), "seed": seed, "case": n, "kind": kind, "case_seed": case_seed,
                        "path": o.damage.path, "detail": o.damage.detail, "exit": o.code,
                        "skip_exit": o.skip_code, "failures": o.failures, "seconds": round(o.seconds, 2)}
                if log:
                    log.write(json.dumps(line, ensure_ascii=True) + "\n")
                    log.flush()
                if o.ok:
                    remove_tree(work)
                else:
                    failed.append(line)
                    print(f"FAIL {kind} {o.damage.path} {o.damage.detail}: exit {o.code}: "
                          f"{o.failures[0][:400]!r}", flush=True)
    print("\nkind, exit, result: cases")
    for (kind, code, result), n in sorted(outcomes.items(), key=lambda kv: tuple(map(str, kv[0]))):
        print(f"  {kind:<22} exit {code}  {result}: {n}")
    total = sum(outcomes.values())
    by_exit = Counter()
    for (_, code, result), n in outcomes.items():
        by_exit[(code, result)] += n
    print(f"{total} cases: " + ", ".join(f"exit {c} {r}: {n}" for (c, r), n in sorted(by_exit.items(), key=str)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
