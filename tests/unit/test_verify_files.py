"""The verifier's MLflow-free file helpers (etl/verify/files.py)."""

from __future__ import annotations

import os

import pytest
import yaml

from etl.verify.files import key_files, read_bytes, yaml_scalar

TRICKY = [
    "0004bb0a04444e3bb9ce9655ba25d43a", "123", "1e3", "1.5", "yes", "No", "null", "~", "0x1f",
    "0b101", "2024-01-01", "a:b", "file:///mlruns/1/abc/artifacts", "1_000", "12:30", ".inf",
    "-1", "+1", "run name", "it's", "a#b", "trailing:", "", "ünïcode", "@at", "-dash", "x" * 200,
]


@pytest.mark.parametrize("value", TRICKY)
def test_a_rendered_scalar_reads_back_as_itself_and_is_what_pyyaml_writes(value):
    text = yaml_scalar(value)
    if text is None:
        return  # not certain: left to the parser
    assert yaml.safe_load(f"k: {text}\n") == {"k": value}
    assert yaml.safe_dump({"k": value}, default_flow_style=False, allow_unicode=True) == f"k: {text}\n"


def test_non_strings():
    assert [yaml_scalar(v) for v in (None, 7, True, 1.5)] == ["null", "7", None, None]


def test_key_files_refuses_what_it_cannot_vouch_for(tmp_path):
    (tmp_path / "params" / "nested").mkdir(parents=True)
    (tmp_path / "params" / "a").write_bytes(b"1")
    (tmp_path / "params" / "nested" / "b").write_bytes(b"two\nlines")
    assert key_files(str(tmp_path / "params")) == {"a": b"1", "nested/b": b"two\nlines"}
    assert key_files(str(tmp_path / "absent")) == {}
    os.symlink(tmp_path / "params" / "a", tmp_path / "params" / "link")
    assert key_files(str(tmp_path / "params")) is None
    os.mkfifo(tmp_path / "pipe")
    assert read_bytes(str(tmp_path / "pipe")) is None  # and does not hang
