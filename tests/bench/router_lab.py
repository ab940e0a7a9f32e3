"""A router-class lab: router processes run inside a cgroup that gives them
the CPU and memory of a router (docs/ROUTER-BUDGET.md argues the figures).

How this works: a ``Cgroup`` is one router's box, made under the ``cpu`` and
``memory`` controllers (cgroup v1, each mounted on its own) or in the unified
hierarchy (v2, ``cpu.max`` / ``memory.max``).  A process enters it before it
execs Python: ``wrap(argv)`` puts ``sh -c 'echo $$ > cgroup.procs; exec ...'``
in front, so the interpreter's start-up already runs throttled, and every
thread it starts (the scrypt worker too) stays inside.

The CPU share is a CFS quota over a short period: the quota is the kernel's
smallest (1 ms) and the period is quota / share, so a 5 % router runs 1 ms in
every 20 ms, close to a slow core that never stops, rather than 50 ms
bursts then 950 ms of nothing.

Names are ``ccrouter-<pid>-<label>``: ``sweep()`` removes those whose owning
process is gone (a bench killed half-way), never a live run's; ``remove()``
kills what is left inside and removes the directories.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "ccrouter-"
NAME_RE = re.compile(r"^ccrouter-(\d+)-[a-z0-9-]+$")
QUOTA_US = 1_000  # the smallest CFS quota the kernel takes: the shortest stalls
MB = 1024 * 1024
EMPTY_TIMEOUT = 5.0  # seconds for killed processes to leave a cgroup before rmdir


@dataclass(frozen=True)
class Profile:
    """What a router class gets: a share of one core here, and memory."""

    name: str
    label: str
    cpu_percent: float  # of one core of this machine
    device_mb: int  # the router's RAM
    memory_mb: int  # what is left for the chat: device_mb less the base system

    @property
    def period_us(self) -> int:
        return round(QUOTA_US * 100 / self.cpu_percent)


def version() -> int:
    """1 or 2 (which cgroup API this machine offers); 0 when neither is writable."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        ok = {"cpu", "memory"} <= set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        return 2 if ok and os.access(CGROUP_ROOT, os.W_OK) else 0
    v1 = all(os.access(CGROUP_ROOT / c, os.W_OK) for c in ("cpu", "memory"))
    return 1 if v1 else 0


def _dirs(name: str) -> list[Path]:
    if version() == 2:
        return [CGROUP_ROOT / name]
    return [CGROUP_ROOT / "cpu" / name, CGROUP_ROOT / "memory" / name]


def _kill_and_rmdir(path: Path) -> None:
    procs = path / "cgroup.procs"
    deadline = time.monotonic() + EMPTY_TIMEOUT
    while procs.exists() and time.monotonic() < deadline:
        pids = [int(p) for p in procs.read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def sweep() -> list[str]:
    """Remove cgroups of this lab left by runs whose process is gone."""
    removed = []
    parents = [CGROUP_ROOT] if version() == 2 else [CGROUP_ROOT / "cpu", CGROUP_ROOT / "memory"]
    for parent in parents:
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            m = NAME_RE.match(path.name)
            if m and path.is_dir() and not _alive(int(m.group(1))):
                _kill_and_rmdir(path)
                removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cgroup:
    """One router's box.  Use as a context manager: removed whatever happens."""

    def __init__(self, profile: Profile, label: str) -> None:
        assert re.fullmatch(r"[a-z0-9-]+", label), label
        self.profile = profile
        self.name = f"{PREFIX}{os.getpid()}-{profile.name}-{label}"
        self.v = version()
        if self.v == 0:
            raise RuntimeError("no writable cgroup cpu and memory controllers (needs root)")
        self.dirs = _dirs(self.name)

    def __enter__(self) -> Cgroup:
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _make(self) -> None:
        p = self.profile
        limit = p.memory_mb * MB
        for d in self.dirs:
            d.mkdir()
        if self.v == 2:
            (self.dirs[0] / "cpu.max").write_text(f"{QUOTA_US} {p.period_us}")
            (self.dirs[0] / "memory.max").write_text(str(limit))
            with contextlib.suppress(OSError):  # no swap here; a machine with swap: none
                (self.dirs[0] / "memory.swap.max").write_text("0")
            return
        cpu, mem = self.dirs
        (cpu / "cpu.cfs_period_us").write_text(str(p.period_us))
        (cpu / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
        (mem / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(OSError):  # absent without swap accounting
            (mem / "memory.memsw.limit_in_bytes").write_text(str(limit))

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this cgroup from its first instruction."""
        enter = "; ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ["sh", "-c", f'{enter}; exec "$@"', "sh", *argv]

    def _memory_dir(self) -> Path:
        return self.dirs[-1]

    def peak_mb(self) -> float:
        """The most memory the box held at once (page cache included)."""
        name = "memory.peak" if self.v == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self._memory_dir() / name).read_text()) / MB
        except (OSError, ValueError):
            return float("nan")

    def oom_kills(self) -> int:
        """Processes the kernel killed here for want of memory."""
        name = "memory.events" if self.v == 2 else "memory.oom_control"
        try:
            text = (self._memory_dir() / name).read_text()
        except OSError:
            return 0
        m = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def remove(self) -> None:
        for d in self.dirs:
            _kill_and_rmdir(d)


class NoCgroup:
    """Full speed: the same interface, nothing applied."""

    profile = None

    def __enter__(self) -> NoCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def peak_mb(self) -> float:
        return float("nan")

    def oom_kills(self) -> int:
        return 0


@contextlib.contextmanager
def box(profile: Profile | None, label: str) -> Iterator[Cgroup | NoCgroup]:
    with Cgroup(profile, label) if profile is not None else NoCgroup() as c:
        yield c
