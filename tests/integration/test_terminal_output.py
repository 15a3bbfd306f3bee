"""What a user watching a terminal sees: the CLI runs on a pseudo-terminal (stdout and stderr are
both a tty, as in a shell), on a tree big enough to watch.

The progress display counts the folders users count (runs, models) against a total found before
the load starts; the last thing printed is the outcome (no run record after it); and Ctrl-C
leaves the bar where the run stopped, saying so, instead of jumping to 100%.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, posix_only

pytestmark = posix_only("a pseudo-terminal (pty) and a terminal's Ctrl-C to a process group")

RUNS = 120
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    mlruns = tmp_path_factory.mktemp("terminal") / "mlruns"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_large_tree.py"), "--output", str(mlruns),
         "--shape", "metric-heavy", "--runs", str(RUNS), "--registered-models", "1"],
        check=True, capture_output=True, timeout=300,
    )
    return mlruns


def on_terminal(args: list[str], cwd: Path, interrupt_when=None) -> tuple[int, str]:
    """The CLI on a pty, 160 columns wide, in a session of its own; with ``interrupt_when``
    (a function of the screen so far, polled while it runs), a terminal's Ctrl-C (SIGINT to the
    process group) once it returns true. The exit status, and the screen's text without its
    escape codes."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "etl", *args], cwd=cwd, env=env, stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    os.set_blocking(master, False)
    chunks, interrupted = [], interrupt_when is None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            data = None
        except OSError:  # EIO: the process and its terminal are gone
            break
        if data == b"":
            break
        if data:
            chunks.append(data)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
        if not interrupted and interrupt_when(_text(chunks)):
            os.killpg(proc.pid, signal.SIGINT)
            interrupted = True
    os.close(master)
    code = proc.wait(timeout=60)
    return code, _text(chunks)


def _text(chunks: list[bytes]) -> str:
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")


def test_a_run_on_a_terminal_counts_runs_and_ends_with_its_outcome(tree, tmp_path):
    code, screen = on_terminal(["--source", str(tree), "--target", "sqlite:///mlflow.db"], tmp_path)
    assert code == 0, screen[-3000:]
    total = RUNS + 1  # and one registered model
    assert re.search(rf"discover\s.*\s{total:,} found", screen), screen[-3000:]
    assert re.search(rf"load\s.*\s{total:,}/{total:,} runs, models", screen), screen[-3000:]
    # The total was known when the load started: every load row shows it.
    assert {m.group(1) for m in re.finditer(r"load\s.*?\d[\d,]*/(\d[\d,]*) ", screen)} == {f"{total:,}"}
    # Machine records stay off a terminal; the last line is the server command.
    assert "run finished" not in screen and "[info" not in screen
    assert screen.rstrip().splitlines()[-1].strip().endswith(f"--backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}")


def test_ctrl_c_leaves_the_bar_where_the_run_stopped(tree, tmp_path):
    def loading(screen: str) -> bool:  # the load has written its first runs
        return re.search(r"load\s.*?[1-9][\d,]*/", screen) is not None

    code, screen = on_terminal(["--source", str(tree), "--target", "sqlite:///mlflow.db"], tmp_path, loading)
    assert code == 130, screen[-3000:]
    assert "interrupted: the staging file was removed and the target was not touched" in screen
    # The last row drawn is the phase the run stopped in: marked, and short of its total.
    last = [line for line in screen.splitlines() if re.match(r"(discover|load|verify|promote)\s", line)][-1]
    assert "interrupted" in last, last
    counted = re.search(r"(\d[\d,]*)/(\d[\d,]*) ", last)
    assert counted is None or int(counted[1].replace(",", "")) < int(counted[2].replace(",", "")), last
    assert not (tmp_path / "mlflow.db").exists()
