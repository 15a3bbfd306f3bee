"""Reading FileStore files: YAML meta files, key/value folders and metric lines.

Pure functions over paths. Every failure becomes a ``SourceError`` that names the file (and the
line, for metric files) and the reason, so a caller can collect them instead of stopping at the
first one.
"""

from __future__ import annotations

import errno
import math
import os
import posixpath
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import yaml

from etl.rows import Census, Stray, printable
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
        # Printable: a name that is no UTF-8 is itself a problem, and must still be named.
        path, reason = printable(path), printable(reason)
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
        if e.errno == errno.ELOOP:
            raise SourceError(path, "symlink loop: the link resolves to itself") from None
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
    _unique_keys(text, path)
    return data


def _unique_keys(text: str, path: str) -> None:
    """A key given twice: YAML keeps the last value without a word, so which one MLflow meant
    is unknown. MLflow writes each key once, at the start of a line (values it wraps are
    indented), so the top-level keys are the lines that start with neither space nor '#'."""
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line[0] in " \t#-" or ":" not in line or line.startswith(("...", "---")):
            continue
        key = line.split(":", 1)[0]
        first = seen.setdefault(key, number)
        if first != number:
            raise SourceError(path, f"key {key!r} is given twice (lines {first} and {number})", number)


# What a meta file field may hold: the kinds of value MLflow writes there.
TEXT, INTEGER, NUMBER, BOOLEAN, MAPPING, LIST, NULL = "text", "integer", "number", "boolean", "mapping", "list", "null"
_IS = {
    TEXT: lambda v: isinstance(v, str),
    INTEGER: lambda v: type(v) is int,  # bool is an int to Python, never to MLflow
    NUMBER: lambda v: type(v) in (int, float),
    BOOLEAN: lambda v: isinstance(v, bool),
    MAPPING: lambda v: isinstance(v, dict),
    LIST: lambda v: isinstance(v, list),
    NULL: lambda v: v is None,
}


@dataclass(frozen=True)
class Fields:
    """The fields of one kind of meta file: those MLflow's reader cannot do without (it fails
    on a file without them, or shows another value than the database would hold), and the
    kinds of value each may hold. A value of another kind is never coerced: it is reported."""

    required: tuple[str, ...] = ()
    kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # field -> the values MLflow's reader accepts there (an enum's names)
    choices: dict[str, frozenset] = field(default_factory=dict)
    # field -> why it is required or of its kinds, where MLflow's FileStore reader alone would
    # take the file (said with every problem of the field)
    why: dict[str, str] = field(default_factory=dict)

    def check(self, meta: dict, path: str, where: str = "") -> None:
        """Every missing field and every value of the wrong kind, as SourceErrors."""
        errors = [SourceError(path, f"required field '{where}{key}' is missing{self._why(key)}")
                  for key in self.required if key not in meta]
        wrong = set()
        for key, kinds in self.kinds.items():
            if key in meta and not any(_IS[k](meta[key]) for k in kinds):
                wrong.add(key)
                errors.append(SourceError(path, f"'{where}{key}' must be {' or '.join(kinds)}, found "
                                          f"{_shown(meta[key])}{self._why(key)}"))
        for key, allowed in self.choices.items():
            value = meta.get(key)
            if key in meta and key not in wrong and value not in allowed:
                names = ", ".join(sorted(map(str, allowed)))
                errors.append(SourceError(path, f"'{where}{key}' is {value!r}, not one of {names}"))
        if errors:
            raise SourceErrors(errors)

    def _why(self, key: str) -> str:
        return f" ({self.why[key]})" if key in self.why else ""


def _shown(value) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "text", dict: "mapping",
            list: "list", type(None): "null"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:60]}{'...' if len(text) > 60 else ''}"


def bad_name(name: str) -> bool:
    """Whether a file or folder name is not valid UTF-8 (no database column can hold it)."""
    try:
        name.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


BAD_NAME = "its name is not valid UTF-8"

# A key of depth d has at least 2d - 1 characters; MLflow writes keys of at most 250
# (MAX_ENTITY_KEY_LENGTH), so deeper key folders are not MLflow's. Its own reader walks them
# recursively and fails far below what a damaged tree can nest (1,000 levels).
MAX_KEY_DEPTH = 125


def link_problem(path: str) -> str | None:
    """Why the symlink at path cannot be read as data: a loop (it resolves to itself or to a
    folder holding it), or a dangling link; None for a link that can be read."""
    try:
        target = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop: the link resolves to itself"
        return f"cannot read file: broken symlink ({e.strerror or e})"
    if stat.S_ISDIR(target.st_mode):
        real = os.path.realpath(path)
        holder = os.path.realpath(os.path.dirname(path))
        if holder == real or holder.startswith(real.rstrip(os.sep) + os.sep):
            return f"symlink loop: the link points at {printable(real)}, a folder that holds it"
    return None


def outside(path: str, root: str | None) -> str | None:
    """The real path a link leads to when that is outside the tree at root, else None."""
    if root is None or not os.path.islink(path):
        return None
    real = os.path.realpath(path)
    root = os.path.realpath(root)
    return None if real == root or real.startswith(root.rstrip(os.sep) + os.sep) else real


def key_files(folder: str, errors: list[SourceError], census: Census | None = None,
              root: str | None = None, keys: bool = True) -> list[tuple[str, str]]:
    """(key, path) of every file of a key folder (params/, tags/, metrics/, ...), keys with '/'
    being nested files, as MLflow's reader lists them: ``os.walk`` without following links to
    folders. A missing folder has no keys.

    What MLflow's reader cannot read, or reads differently than it was written, goes into
    ``errors`` (the key left out): a name that is not valid UTF-8, a symlink loop or a dangling
    link, nesting deeper than any key MLflow writes, and (``keys``: the files are keys of params,
    tags or metrics) a key name MLflow's reader refuses. A link out of the tree (``root``) is read,
    and a link to a folder inside it is not (MLflow does not follow it): ``census`` names both,
    flagged and as a stray. Iterative: no depth of nesting exhausts the stack.
    """
    found: list[tuple[str, str]] = []
    if (problem := _link_trouble(folder)) is not None:
        errors.append(SourceError(folder, problem))
        return found
    _note_outside(folder, root, census)
    stack = [(folder, "", 1)]
    while stack:
        current, prefix, depth = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            errors.append(SourceError(current, "a file where MLflow keeps a folder"))
            continue
        except OSError as e:
            errors.append(SourceError(current, f"cannot list folder: {e.strerror or e}"))
            continue
        for entry in entries:
            if bad_name(entry.name):
                errors.append(SourceError(entry.path, BAD_NAME))
                continue
            if entry.is_symlink():
                problem = link_problem(entry.path)
                if problem is not None:
                    errors.append(SourceError(entry.path, problem))
                    continue
                if os.path.isdir(entry.path):
                    if census is not None:
                        census.strays.append(Stray(entry.path, True, LINKED_FOLDER_WARNING))
                    continue
                _note_outside(entry.path, root, census)
                _found(found, errors, prefix + entry.name, entry.path, keys)
            elif entry.is_dir(follow_symlinks=False):
                if not keys:  # assessments/ and aliases/ hold files only
                    errors.append(SourceError(entry.path, "a folder where MLflow writes a file"))
                    continue
                if depth >= MAX_KEY_DEPTH:
                    errors.append(SourceError(entry.path, f"key folders nested more than "
                                              f"{MAX_KEY_DEPTH} deep: no MLflow key is that long"))
                    continue
                stack.append((entry.path, f"{prefix}{entry.name}/", depth + 1))
            else:
                _found(found, errors, prefix + entry.name, entry.path, keys)
    return found


# MLflow's reader validates each key it reads (mlflow/utils/validation.py:
# validate_param_and_metric_name, path_not_unique) and fails on any other: such a key is no key
# MLflow ever wrote, and no run, trace or model holding one can be read back.
_KEY = re.compile(r"[/\w.\- ]*" if os.name == "nt" else r"[/\w.\- :]*")


def key_refused(key: str) -> bool:
    norm = posixpath.normpath(key)
    return not _KEY.fullmatch(key) or norm != key or norm == "." or norm.startswith(("..", "/"))


def _found(found: list, errors: list, key: str, path: str, keys: bool) -> None:
    if keys and key_refused(key):
        errors.append(SourceError(path, f"MLflow's reader refuses the key {key!r}: keys hold only letters, "
                                  "digits, '_', '-', '.', ' ', ':' and '/', and name no other path"))
    else:
        found.append((key, path))


def _link_trouble(folder: str) -> str | None:
    return link_problem(folder) if os.path.islink(folder) else None


LINKED_FOLDER_WARNING = ("is a symlink to a folder inside a key folder: MLflow's reader does not "
                         "follow it, so it was NOT migrated")


def outside_warning(real: str) -> str:
    return (f"is a symlink out of the tree, to {printable(real)}: migrated as MLflow's reader "
            "reads it (judge whether that data belongs here)")


def _note_outside(path: str, root: str | None, census: Census | None) -> None:
    real = outside(path, root)
    if real is not None and census is not None:
        census.flagged.append(Stray(path, os.path.isdir(path), outside_warning(real)))


def read_key_folder(folder: str, census: Census | None = None, root: str | None = None) -> dict[str, str]:
    """A params/ or tags/ folder as {key: value}; keys containing '/' are nested files.

    A missing folder is an empty mapping (a run with no params has no params folder). Every bad
    file is reported (SourceErrors), not only the first.
    """
    result: dict[str, str] = {}
    errors: list[SourceError] = []
    for key, path in key_files(folder, errors, census, root):
        try:
            result[key] = read_text(path)
        except SourceError as e:
            errors.append(e)
    if errors:
        raise SourceErrors(errors)
    return result


def list_files(folder: str, census: Census | None = None, root: str | None = None, keys: bool = True) -> list[str]:
    """Keys of the files of a key folder (metrics/, assessments/, aliases/), [] if it is absent;
    a file MLflow's reader cannot list makes it SourceErrors (see key_files). ``keys``: the
    names are keys MLflow validates, nested in folders (not assessment or alias files)."""
    errors: list[SourceError] = []
    found = [key for key, _ in key_files(folder, errors, census, root, keys)]
    if errors:
        raise SourceErrors(errors)
    return found


def metric_db_value(value: float) -> tuple[float, int]:
    """(value, is_nan) the way MLflow's SQL store stores a metric value."""
    if value != value:  # NaN; cheaper than math.isnan on the hot path
        return 0.0, 1
    if math.isinf(value):
        return (FLOAT_MAX if value > 0 else -FLOAT_MAX), 0
    return value, 0


def parse_metric_lines(path: str, infinities: Counter | None = None) -> list[tuple[int, int, float, int]]:
    """A run metric file as [(timestamp, step, db_value, is_nan), ...] in file order."""
    return list(zip(*metric_columns(path, infinities)))


def metric_columns(path: str, infinities: Counter | None = None) -> tuple[list, list, list, list]:
    """A run metric file as columns: (timestamps, steps, db values, is_nan flags), in file order.

    Lines are ``timestamp value [step [dataset_name dataset_digest]]``, split as MLflow's reader
    splits them (``readlines`` of a codecs reader: ``str.splitlines``, which also ends a line at
    a CR, a form feed, U+2028...). The step of a 5-field
    line is the third field: the file holds it, even though MLflow's FileStore reader reports 0.
    ``infinities`` counts the "+Inf"/"-Inf" values, which the database holds as +-FLOAT_MAX
    (a NaN keeps its is_nan flag, so it is not lost).
    """
    text = read_text(path)
    columns = _plain_metric_columns(text)
    if columns is not None:
        return columns
    points = _metric_points(path, text, infinities)
    if not points:
        return [], [], [], []
    ts, steps, values, nans = zip(*points)
    return list(ts), list(steps), list(values), list(nans)


def _plain_metric_columns(text: str) -> tuple[list, list, list, list] | None:
    """The columns of a file that holds only what MLflow writes for a run metric: every line
    'timestamp value step', every value finite. Read a column at a time (the parsing of a deep
    tree is mostly this; line by line costs ~4x as much). None for anything else, which
    _metric_points reads line by line, naming the first bad line.

    The tokens are those of the line-by-line reading (lines split on single spaces): leading
    and trailing whitespace of a line, which that reading strips first, is whitespace that
    int() and float() strip alike, and a line with other than two spaces goes line by line."""
    lines = text.splitlines()
    if not lines or set(map(str.count, lines, repeat(" "))) != {2}:
        return None
    tokens = " ".join(lines).split(" ")
    try:
        ts, values, steps = list(map(int, tokens[0::3])), list(map(float, tokens[1::3])), list(map(int, tokens[2::3]))
    except ValueError:  # an empty field (two spaces in a row), or not a number: line by line
        return None
    if not math.isfinite(sum(values)):  # a NaN or an infinity (or a sum that overflows)
        return None
    return ts, steps, values, [0] * len(ts)


def _metric_points(path: str, text: str, infinities: Counter | None) -> list[tuple[int, int, float, int]]:
    points = []
    for number, line in enumerate(text.splitlines(), 1):
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
