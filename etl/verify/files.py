"""The source tree's raw bytes, read without MLflow, for the verifier's fast path.

The fast path renders the target into what the FileStore writes and compares it with these bytes;
whatever it cannot prove equal goes to MLflow's own reader (``etl.verify.oracle``). So everything
here may refuse (return None) freely: a refusal costs time, never correctness. Importing MLflow
costs each process ~200 MB and seconds of CPU; this module imports only PyYAML.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import stat

import yaml

# MLflow's read_yaml uses PyYAML's C loader when libyaml is present (yaml_utils.YamlSafeLoader).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Enum numbers as MLflow's FileStore writes them into a run's meta.yaml and its reader reads them
# (mlflow.entities.RunStatus, SourceType; tests/integration/test_verify_bytes.py checks them
# against the installed MLflow). A number not here sends the run to MLflow's reader.
RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
SOURCE_TYPE = {1: "NOTEBOOK", 2: "JOB", 3: "PROJECT", 4: "LOCAL", 5: "UNKNOWN"}

# How many bytes one read asks for; larger files take more reads.
_CHUNK = 1 << 16


def read_bytes(path: str, regular: bool = False) -> bytes | None:
    """A regular file's bytes; None if it is absent, not a regular file, or unreadable.
    ``regular``: the caller knows it is one (from its folder listing), which saves a stat."""
    try:
        # O_NONBLOCK: a named pipe must not hang verification on open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not regular and not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:  # a regular file reads short only at its end
            return data
        parts = [data]
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_meta(folder: str) -> dict | None:
    """``folder/meta.yaml`` as MLflow's read_yaml parses it; None if absent, unreadable or not
    a mapping."""
    data = read_bytes(os.path.join(folder, "meta.yaml"))
    return None if data is None else parse_meta(data)


def parse_meta(data: bytes) -> dict | None:
    try:
        meta = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


# A string PyYAML writes bare in a block mapping: no space, quote, '#' or other indicator, no
# trailing ':'. Whether it then reads back as a string (not 12, 1e3, yes, null, 2024-01-01...)
# is for PyYAML's own resolver to say.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./@+:-]*")
_resolver = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"


def yaml_scalar(value) -> str | None:
    """``value`` as PyYAML's safe dumper writes it in a block mapping, where that is certain
    (None otherwise): exactly the text that reads back as ``value``."""
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if type(value) is not str:
        return None
    if value == "":
        return "''"
    if not _PLAIN.fullmatch(value) or value.endswith(":"):
        return None
    if _resolver.resolve(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    return f"'{value}'"  # bare, it would read back as a number, a bool, a date...


def key_files(folder: str) -> dict[str, bytes] | None:
    """{key: bytes} of a params/, tags/ or metrics/ folder (keys with '/' are nested files), {}
    if the folder is absent. None for anything but plain folders and regular files (a symlink,
    a pipe, an unreadable file): MLflow's reader decides those."""
    out: dict[str, bytes] = {}
    try:
        return out if _collect(folder, "", out) else None
    except FileNotFoundError:
        return out if not os.path.lexists(folder) else None
    except OSError:
        return None


def _collect(folder: str, prefix: str, out: dict[str, bytes]) -> bool:
    with os.scandir(folder) as entries:
        for entry in entries:
            # Without following links: a symlink is neither, and goes to MLflow's reader.
            if entry.is_file(follow_symlinks=False):
                data = read_bytes(entry.path, regular=True)
                if data is None:
                    return False
                out[prefix + entry.name] = data
            elif entry.is_dir(follow_symlinks=False):
                if not _collect(entry.path, f"{prefix}{entry.name}/", out):
                    return False
            else:
                return False
    return True


def same_values(files: dict[str, bytes], values: dict[str, str]) -> bool:
    """A key folder's files hold exactly these values (a param or tag file is its value's
    UTF-8 bytes: FileStore writes the value as it is and reads it without newline translation)."""
    if files.keys() != values.keys():
        return False
    try:
        return all(files[k] == v.encode("utf-8") for k, v in values.items())
    except (AttributeError, UnicodeEncodeError):  # a NULL, or text no file can hold
        return False


def file_lines(data: bytes) -> list[str] | None:
    """A metric file's lines (each written with a final newline), None if it is not UTF-8."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if lines[-1] == "":
        lines.pop()
    return lines


def same_folders(parent: str, values: dict[str, dict[str, str]]) -> bool:
    """Each key folder named in ``values`` (params, tags...) under ``parent`` holds exactly its
    values (``same_values``)."""
    for name, expected in values.items():
        files = key_files(os.path.join(parent, name))
        if files is None or not same_values(files, expected):
            return False
    return True


def subfolders(folder: str) -> list[str] | None:
    """Names of the folders directly in folder, sorted; [] if absent, None if unreadable."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except FileNotFoundError:
        return []
    except OSError:
        return None


def read_yaml(path: str) -> dict | None:
    """A YAML file as MLflow's read_yaml parses it; None if absent, unreadable or not a mapping."""
    data = read_bytes(path)
    return None if data is None else parse_meta(data)


_EPOCH = datetime.datetime(1970, 1, 1)


def iso_millis(ms) -> str | None:
    """Milliseconds since the epoch as protobuf's ``Timestamp.ToJsonString`` writes them, the
    form FileStore keeps a trace's request time and an assessment's times in: whole seconds,
    or three digits of fraction, then Z. None for what is not a plain int."""
    if type(ms) is not int:
        return None
    seconds, millis = divmod(ms, 1000)
    try:
        text = (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()
    except OverflowError:
        return None
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def same(a, b) -> bool:
    """Equal and of the same types all the way down: YAML's 1, 1.0, true and JSON's are not
    interchangeable here (Python says 1 == 1.0 == True), and NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b
