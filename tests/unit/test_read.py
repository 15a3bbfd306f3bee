"""The file readers on the inputs MLflow writes and on damaged ones.

Damaged files cannot be made through MLflow's API, so these tests write them by hand.
"""

from __future__ import annotations

import math
import os

import pytest

from etl.source import read
from etl.source.read import (
    SourceError,
    SourceErrors,
    parse_metric_lines,
    read_key_folder,
    read_text,
    read_yaml,
)
from etl.sql_limits import FLOAT_MAX


def write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def test_metric_lines_two_three_and_five_fields(tmp_path):
    path = write(tmp_path / "m", "100 1.5\n101 2.5 7\n102 3.5 9 train abc123\n")
    assert parse_metric_lines(path) == [(100, 0, 1.5, 0), (101, 7, 2.5, 0), (102, 9, 3.5, 0)]


def test_metric_special_values_stored_like_the_sql_store(tmp_path):
    path = write(tmp_path / "m", "1 nan 0\n2 inf 0\n3 -inf 0\n")
    assert parse_metric_lines(path) == [(1, 0, 0.0, 1), (2, 0, FLOAT_MAX, 0), (3, 0, -FLOAT_MAX, 0)]
    assert not math.isinf(FLOAT_MAX)


@pytest.mark.parametrize(
    "content, line",
    [
        ("100\n", 1),  # one field
        ("100 abc 0\n", 1),  # non-numeric value
        ("1.5e3 1.0 0\n", 1),  # non-integer timestamp
        ("100 1.0 0\n\n101 1.0 1\n", 2),  # empty line inside
        ("100 1.0 0 garbage\n", 1),  # four fields
        ("100 1.0 0\n1017", 2),  # truncated last line
    ],
)
def test_malformed_metric_lines_name_file_and_line(tmp_path, content, line):
    path = write(tmp_path / "metrics" / "loss", content)
    with pytest.raises(SourceError) as info:
        parse_metric_lines(path)
    assert info.value.path == path
    assert info.value.line == line
    assert path in str(info.value)


def _mlflow_points(path) -> list | None:
    """A run metric file's points (ts, step, value) as MLflow's reader reads them, None if it
    cannot."""
    from mlflow.store.tracking.file_store import FileStore
    from mlflow.utils.file_utils import read_file_lines

    try:
        metrics = [FileStore._get_metric_from_line("r", "m", line, "0")
                   for line in read_file_lines(os.path.dirname(path), os.path.basename(path))]
    except Exception:  # noqa: BLE001 - MLflow's reader fails on it, whichever way
        return None
    return [(m.timestamp, m.step, m.value) for m in metrics] or None


@pytest.mark.parametrize("end", ["\r", "\r\n", "\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029", " "])
@pytest.mark.parametrize("shape", ["{0} 1.5 0{e}101 2.5 1{e}", "100 1.5 0{e}\n", "100 1.5 0\n{e}", "100 1.5{e}0\n"])
def test_metric_lines_end_where_mlflow_s_reader_ends_them(tmp_path, end, shape):
    """MLflow reads a metric file with a codecs reader's readlines, which is str.splitlines: a
    CR, a form feed, U+2028... end a line as a newline does. Read the same way, a file gives the
    points MLflow's reader gives, or is refused where MLflow's reader fails on it."""
    path = write(tmp_path / "m", shape.format(100, e=end))
    try:
        ours = [(ts, step, value) for ts, step, value, _ in parse_metric_lines(path)]
    except SourceError:
        ours = None
    assert ours == _mlflow_points(path)


def test_text_values_are_exact_bytes(tmp_path):
    assert read_text(write(tmp_path / "v", "a\r\nb\n")) == "a\r\nb\n"
    assert read_text(write(tmp_path / "e", "")) == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX: os.mkfifo makes the named pipe")
@pytest.mark.parametrize("nonblock", [getattr(os, "O_NONBLOCK", 0), 0], ids=["O_NONBLOCK", "windows-way"])
def test_a_named_pipe_is_an_error_not_a_hang(tmp_path, monkeypatch, nonblock):
    """Both guards: the non-blocking open where the flag exists, the type check before the open
    where it does not (Windows), here forced on by clearing the flag."""
    monkeypatch.setattr(read, "_NONBLOCK", nonblock)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="not a regular file"):
        read_text(str(fifo))
    assert read_text(write(tmp_path / "plain", "a\r\n")) == "a\r\n"


def test_non_utf8_value_is_an_error(tmp_path):
    path = write(tmp_path / "tags" / "bad", b"\xff\xfe ok")
    with pytest.raises(SourceError, match="not valid UTF-8"):
        read_text(path)


def test_key_folder_nested_keys(tmp_path):
    write(tmp_path / "params" / "a", "1")
    write(tmp_path / "params" / "x" / "y" / "z", "2")
    assert read_key_folder(str(tmp_path / "params")) == {"a": "1", "x/y/z": "2"}
    assert read_key_folder(str(tmp_path / "absent")) == {}


def test_key_folder_symlink_loop_is_an_error(tmp_path):
    folder = tmp_path / "tags"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "loop").symlink_to(folder / "d", target_is_directory=True)
    with pytest.raises(SourceErrors, match="symlink loop"):
        read_key_folder(str(folder))


def test_key_folder_reports_every_bad_file(tmp_path):
    write(tmp_path / "tags" / "good", "ok")
    bad_one = write(tmp_path / "tags" / "bad1", b"\xff")
    bad_two = write(tmp_path / "tags" / "nested" / "bad2", b"\xfe")
    with pytest.raises(SourceErrors) as info:
        read_key_folder(str(tmp_path / "tags"))
    assert sorted(e.path for e in info.value.errors) == sorted([bad_one, bad_two])


@pytest.mark.parametrize(
    "content, reason",
    [("", "empty file"), ("name: [unclosed\n", "malformed YAML"), ("- a\n- b\n", "expected a YAML mapping")],
)
def test_bad_yaml_is_an_error(tmp_path, content, reason):
    path = write(tmp_path / "meta.yaml", content)
    with pytest.raises(SourceError, match=reason):
        read_yaml(path)


def test_run_enums_are_mlflows_own():
    """meta.yaml holds source_type as MLflow's enum number (UNKNOWN is 5, not 1000)."""
    from mlflow.entities import SourceType

    from etl.source.extract import SOURCE_TYPE

    assert SOURCE_TYPE == SourceType.SOURCETYPE_TO_STRING


# What MLflow writes (every line "timestamp value step", finite values) is read a column at a
# time; anything else line by line. Both readings must agree wherever the column one answers.
PLAIN = ["1 2.5 3\n4 5 6\n", "1 2.5 3\r\n4 5 6\r\n", "\t1 2 3\n", "1 2 3", "1 -0.0 0\n",
         "1 1_0 0\n", "1700000000000 0.30000000000000004 9\n", "1 1e308 0\n"]  # fmt: skip
NOT_PLAIN = ["1 nan 3\n", "1 inf 0\n", "1 1e308 0\n2 1e308 0\n", "1 2 3 a b\n", "1  2 3\n",
             "1 2\n", "", "1 2 3\n\n", " 1 2 3\n", "1 2 3 \n", "1 x 3\n",
             "1 2\x0c 3\n"]  # a form feed ends a line, as in MLflow's reader  # fmt: skip


@pytest.mark.parametrize("content", PLAIN)
def test_plain_metric_files_read_by_column_as_line_by_line(tmp_path, content):
    path = write(tmp_path / "m", content)
    columns = read._plain_metric_columns(content)
    assert columns is not None
    assert list(zip(*columns)) == read._metric_points(path, content, None) == parse_metric_lines(path)
    assert [repr(v) for v in columns[2]] == [repr(p[2]) for p in parse_metric_lines(path)]


@pytest.mark.parametrize("content", NOT_PLAIN)
def test_other_metric_files_are_read_line_by_line(tmp_path, content):
    assert read._plain_metric_columns(content) is None
