"""Peak resident memory of a whole process tree, sampled from /proc.

Every ``interval`` seconds a background thread finds the root process and all of its
descendants (parent links from ``/proc/<pid>/stat``), sums their ``VmRSS`` and keeps the
largest sum seen. Worker processes (anyio's process pool, multiprocessing) count with their
parent, which is what a user pays for. Linux only; elsewhere the peak stays 0.
"""

from __future__ import annotations

import os
import threading


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and ")", so split after the last ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[int(name)] = int(fields[1])
    return out


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def tree_rss_kib(root: int) -> int:
    return sum(rss_kib(pid) for pid in descendants(root))


class PeakRSS:
    """``with PeakRSS(pid) as peak: ...`` then ``peak.max_kib`` / ``peak.max_mib``."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        if not os.path.isdir("/proc"):
            return
        self.max_kib = max(self.max_kib, tree_rss_kib(self.pid))
        self.samples += 1

    @property
    def max_mib(self) -> float:
        return self.max_kib / 1024

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
