"""The user guide (docs/filestore-migration.md) says what the tool really does.

Every ``$ etl-migrate ...`` line of a ``console`` block in the guide is run, in the order it
appears, in one folder whose ``./mlruns`` (and ``./old-laptop/mlruns``, a teammate's tree with the
same names, for the guide's several-trees example) is a real tree made through MLflow's API; each
must end with the exit status its ``# exit status N`` line states, and print every ``error: ...``
line the guide shows under it; the several-trees example (a command with more than one
``--source``) prints every output line the guide shows under it, in that order (the guide's
working folder stands for the test's; ``...`` matches anything, a line of ``...`` any lines).
The guide must also name every option of both --help texts, and list the JSON report's fields
exactly as the tool writes them.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.conftest import REPO, run_cli
from tests.trees import build_core_tree

GUIDE = REPO / "docs" / "filestore-migration.md"
GUIDE_FOLDER = "/home/me/ml"  # the folder the guide's examples claim to run in
EXIT_STATUS = re.compile(r"#\s*exit status\s+(\d+)\s*$")


@dataclass
class Example:
    line: int  # 1-based line of the command in the guide
    command: str
    exit_status: int | None = None
    errors: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    @property
    def args(self) -> list[str]:
        argv = shlex.split(self.command)
        assert argv[0] == "etl-migrate"
        return argv[1:]


def extract_examples(text: str) -> list[Example]:
    """The etl-migrate commands of the guide's ``console`` blocks, with what each must do."""
    examples: list[Example] = []
    in_console = in_block = False
    current: Example | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_block:
                in_block = in_console = False
            else:
                in_block = True
                in_console = stripped[3:].strip() == "console"
            current = None
            continue
        if not in_console:
            continue
        if line.startswith("$ "):
            command = line[2:].strip()
            current = Example(number, command) if command.split()[0] == "etl-migrate" else None
            if current is not None:
                examples.append(current)
        elif (match := EXIT_STATUS.match(stripped)) and current is not None:
            assert current.exit_status is None, f"line {number}: second exit status for one command"
            current.exit_status = int(match.group(1))
        elif line.startswith("error: ") and current is not None:
            current.errors.append(line.rstrip())
        elif current is not None and stripped:
            current.output.append(line.rstrip())
    return examples


def _pattern(documented: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in documented.split("...")))


def _not_printed_in_order(documented: list[str], printed: list[str]) -> str | None:
    """The first documented line the output does not print after the ones before it, or None."""
    at = 0
    for line in documented:
        if line.strip() == "...":
            continue
        pattern = _pattern(line)
        while at < len(printed) and not pattern.fullmatch(printed[at]):
            at += 1
        if at == len(printed):
            return line
        at += 1
    return None


def help_options(text: str) -> set[str]:
    """Long option names of a click --help text (both halves of --x / --no-x)."""
    options: set[str] = set()
    for line in text.splitlines():
        if re.match(r"\s+-", line):
            head = re.split(r"\s{2,}", line.strip())[0]
            options.update(re.findall(r"--[a-z][a-z-]*", head))
    return options


def report_fields_in_guide(text: str) -> set[str]:
    section = text.split("## The JSON report", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_guide_examples_are_well_formed(guide):
    examples = extract_examples(guide)
    assert len(examples) >= 8
    for example in examples:
        assert example.exit_status is not None, f"line {example.line}: no '# exit status N' for {example.command!r}"
        example.args  # shlex-splits


def test_guide_names_every_option_of_both_commands(guide):
    for args in ([], ["verify"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0, result.stderr
        options = help_options(result.stdout)
        assert "--source" in options and "--help" in options
        missing = sorted(o for o in options if f"`{o}" not in guide and f"/ {o}`" not in guide)
        assert not missing, f"etl-migrate {' '.join(args)} --help has options the guide does not name: {missing}"


def test_guide_examples_run_as_documented(guide, tmp_path):
    examples = extract_examples(guide)
    work = tmp_path / "ml"
    work.mkdir()
    build_core_tree(work / "mlruns")
    (work / "old-laptop").mkdir()
    build_core_tree(work / "old-laptop" / "mlruns")
    failures = []
    for example in examples:
        result = run_cli(*example.args, cwd=work)
        output = result.stdout + result.stderr
        shown = f"line {example.line}: $ {example.command}\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-2000:]}"
        if result.returncode != example.exit_status:
            failures.append(f"exit status {result.returncode}, guide says {example.exit_status}; {shown}")
            continue
        printed = output.replace(str(work.resolve()), GUIDE_FOLDER).replace(str(work), GUIDE_FOLDER).splitlines()
        for documented in example.errors:
            if not any(_pattern(documented).fullmatch(line) for line in printed):
                failures.append(f"guide shows {documented!r}, not printed; {shown}")
        missing = _not_printed_in_order(example.output, printed) if example.args.count("--source") > 1 else None
        if missing is not None:
            failures.append(f"guide shows {missing!r}, not printed there; {shown}")
        if "--report" in example.args and example.exit_status == 0:
            report_path = work / example.args[example.args.index("--report") + 1]
            report = json.loads(report_path.read_text())
            assert report["exit_status"] == 0
            documented_fields = report_fields_in_guide(guide)
            if documented_fields != set(report):
                failures.append(
                    f"JSON report fields differ from the guide: only in the report "
                    f"{sorted(set(report) - documented_fields)}, only in the guide "
                    f"{sorted(documented_fields - set(report))}; {shown}"
                )
    assert not failures, "\n\n".join(failures)
    assert (work / "mlflow.db").exists()  # the guide's migration example really migrated
