"""Reading FileStore files: YAML meta files, key/value folders and metric lines.

Pure functions over paths. Every failure becomes a ``SourceError`` that names the file (and the
line, for metric files) and the reason, so a caller can collect them instead of stopping at the
first one.
"""

from __future__ import annotations

import math
import os
import stat
from collections import Counter
from typing import Any

import yaml

from etl.sql_limits import FLOAT_MAX

# MLflow's own reader uses the C loader when libyaml is present; it is ~10x faster than the
# pure-Python one and gives the same results for the plain mappings MLflow writes.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A named pipe (or device) in the tree must not hang the run on open. Windows has no such flag
# (read_text checks the file type first there).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# Windows opens descriptors in text mode unless told otherwise, which would turn CRLF into LF.
_BINARY = getattr(os, "O_BINARY", 0)


class SourceError(Exception):
    """A file of the source tree that cannot be migrated as it is."""

    def __init__(self, path: str, reason: str, line: int | None = None):
        super().__init__(f"{path}{'' if line is None else f':{line}'}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line


class SourceErrors(Exception):
    """Several bad files of one entity, all reported, so one run lists every problem it has."""

    def __init__(self, errors: list[SourceError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def read_text(path: str) -> str:
    """A param/tag/alias file's exact value.

    MLflow reads these with ``codecs.open`` (binary underneath), so no newline translation
    happens and the value is the file's bytes decoded as UTF-8, trailing newlines included.
    """
    try:
        if not _NONBLOCK and not stat.S_ISREG(os.stat(path).st_mode):
            # Without O_NONBLOCK (Windows) the type is checked before the open: a device name
            # such as CON would otherwise block the run reading the console.
            raise SourceError(path, "not a regular file")
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _BINARY)
    except OSError as e:
        raise SourceError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(path, "not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as e:
        raise SourceError(path, f"cannot read file: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(path, f"not valid UTF-8 (byte {e.start})") from None


def read_yaml(path: str) -> dict[str, Any]:
    """A meta file as a mapping; an empty, unreadable or non-mapping file is an error."""
    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SourceError(path, f"malformed YAML: {problem}", line) from None
    if data is None:
        raise SourceError(path, "empty file")
    if not isinstance(data, dict):
        raise SourceError(path, f"expected a YAML mapping, found {type(data).__name__}")
    return data


def read_key_folder(folder: str) -> dict[str, str]:
    """A params/ or tags/ folder as {key: value}; keys containing '/' are nested files.

    A missing folder is an empty mapping (a run with no params has no params folder). Every bad
    file is reported (SourceErrors), not only the first.
    """
    result: dict[str, str] = {}
    errors: list[SourceError] = []
    # The folder itself counts as visited: a link back to it is a loop at the link.
    _read_key_folder_into(folder, "", result, {os.path.realpath(folder)}, errors)
    if errors:
        raise SourceErrors(errors)
    return result


def _read_key_folder_into(folder: str, prefix: str, out: dict[str, str], seen: set, errors: list) -> None:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    except OSError as e:
        raise SourceError(folder, f"cannot list folder: {e.strerror or e}") from None
    for entry in entries:
        key = prefix + entry.name
        try:
            if entry.is_dir():
                real = os.path.realpath(entry.path)
                if real in seen:
                    raise SourceError(entry.path, "symlink loop")
                seen.add(real)
                _read_key_folder_into(entry.path, key + "/", out, seen, errors)
            else:
                out[key] = read_text(entry.path)
        except SourceError as e:
            errors.append(e)


def list_files(folder: str) -> list[str]:
    """Relative posix paths of the files under folder (nested keys), [] if it is absent."""
    out: list[str] = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        rel = os.path.relpath(root, folder)
        for name in files:
            out.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return out


def metric_db_value(value: float) -> tuple[float, int]:
    """(value, is_nan) the way MLflow's SQL store stores a metric value."""
    if value != value:  # NaN; cheaper than math.isnan on the hot path
        return 0.0, 1
    if math.isinf(value):
        return (FLOAT_MAX if value > 0 else -FLOAT_MAX), 0
    return value, 0


def parse_metric_lines(path: str, infinities: Counter | None = None) -> list[tuple[int, int, float, int]]:
    """A run metric file as [(timestamp, step, db_value, is_nan), ...] in file order.

    Lines are ``timestamp value [step [dataset_name dataset_digest]]``. The step of a 5-field
    line is the third field: the file holds it, even though MLflow's FileStore reader reports 0.
    ``infinities`` counts the "+Inf"/"-Inf" values, which the database holds as +-FLOAT_MAX
    (a NaN keeps its is_nan flag, so it is not lost).
    """
    text = read_text(path)
    points = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        # MLflow strips each line before splitting on single spaces; do the same so exactly the
        # lines it accepts are accepted.
        parts = line.strip().split(" ")
        n = len(parts)
        try:
            if n == 3:
                ts, raw, step = int(parts[0]), float(parts[1]), int(parts[2])
            elif n == 2:
                ts, raw, step = int(parts[0]), float(parts[1]), 0
            elif n == 5:
                ts, raw, step = int(parts[0]), float(parts[1]), int(parts[2])
            else:
                raise SourceError(
                    path, f"metric line has {n} fields, expected 2, 3 or 5: {line[:80]!r}", number
                )
        except ValueError:
            raise SourceError(
                path, f"metric line is not 'timestamp value [step]': {line[:80]!r}", number
            ) from None
        value, is_nan = metric_db_value(raw)
        if infinities is not None and value != raw and not is_nan:
            infinities["+Inf" if raw > 0 else "-Inf"] += 1
        points.append((ts, step, value, is_nan))
    return points
