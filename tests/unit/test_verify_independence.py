"""The verifier must not be able to agree with the loader by sharing its code: nothing in
etl/verify imports etl/source (DESIGN.md, "Independent of the parser under test")."""

from __future__ import annotations

import ast
from pathlib import Path

import etl.verify

VERIFY = Path(etl.verify.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package the file sits in
                package = "etl.verify".rsplit(".", node.level - 1)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_verify_modules_import_nothing_from_source():
    files = sorted(VERIFY.glob("*.py"))
    assert len(files) >= 3  # the package was found, not an empty folder
    offenders = {
        f.name: sorted(m for m in imported_modules(f) if m == "etl.source" or m.startswith("etl.source."))
        for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_check_sees_an_import_of_source(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from etl.source.read import parse_metric_lines\nfrom ..source import extract\n")
    assert {"etl.source.read", "etl.source"} <= imported_modules(sample)
