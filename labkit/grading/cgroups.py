"""Per-submission control groups: a cap on processes, memory and CPU, and a way to kill them all.

A graded submission runs in a cgroup of its own, made below the cgroup the grader itself runs
in (so whatever limits the grader has still hold, and the grader's own accounting includes
its submissions). Both layouts Linux has are handled:

- cgroup v2 (one unified tree): ``pids.max``, ``memory.max`` (and ``memory.swap.max``),
  ``cpu.max``; CPU used from ``cpu.stat``; ``cgroup.kill`` ends every process at once. The
  parent must have the three controllers in its ``cgroup.subtree_control`` (a delegated
  subtree, e.g. a systemd unit with ``Delegate=yes``); they are enabled there if it can be done.
- cgroup v1 (one hierarchy per controller, as in many containers): ``pids.max``,
  ``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, CPU used from ``cpuacct.usage``; killing
  is a loop of SIGKILL over ``cgroup.procs`` (``pids.max`` bounds what a fork bomb can add).

Written here, not taken from a library: the only maintained Python cgroup packages wrap
systemd's D-Bus API (no systemd runs in a container like CI's) or one layout only; the
kernel interface used is a few files per controller.

>>> cg = Cgroup.create("sub-1a2b", pids_max=64, memory_mb=1024, cpus=1.0)  # doctest: +SKIP
>>> cg.procs_files          # write a pid into each to move that process in    # doctest: +SKIP
>>> cg.cpu_s(), cg.kill(), cg.remove()                                       # doctest: +SKIP
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000
V1_CONTROLLERS = ("pids", "memory", "cpu", "cpuacct")
V2_CONTROLLERS = ("pids", "memory", "cpu")


class CgroupError(RuntimeError):
    """No usable cgroup here; the message says why and what would fix it."""


def _own_paths() -> dict[str, str]:
    """This process's cgroup per controller ("" key: the v2 unified path)."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:
            out[""] = path
        for c in controllers.split(","):
            out[c] = path
    return out


def _mounts() -> tuple[Path | None, dict[str, Path]]:
    """(the cgroup2 mount point, {v1 controller: its hierarchy's mount point})."""
    v2: Path | None = None
    v1: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = (right.split(" ") + ["", "", ""])[:3]
        mount_point = Path(left.split(" ")[4])
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in V1_CONTROLLERS:
                    v1[opt] = mount_point
    return v2, v1


@dataclass
class Cgroup:
    """One submission's cgroup: its directory per hierarchy, and the layout (1 or 2)."""

    version: int
    dirs: dict[str, Path]   # controller -> directory (v2: one directory under key "")

    # ------------------------------------------------------------------------- making
    @classmethod
    def create(cls, name: str, *, pids_max: int, memory_mb: int, cpus: float) -> "Cgroup":
        """A new cgroup ``name`` under this process's own, with the limits set.

        Raises CgroupError (saying why) where neither layout can be used.
        """
        v2_mount, v1_mounts = _mounts()
        own = _own_paths()
        problems = []
        if all(c in v1_mounts for c in V1_CONTROLLERS):
            return cls._create_v1(name, v1_mounts, own, pids_max, memory_mb, cpus)
        if v2_mount is not None:
            try:
                return cls._create_v2(name, v2_mount / own.get("", "/").lstrip("/"),
                                      pids_max, memory_mb, cpus)
            except (OSError, CgroupError) as e:
                problems.append(str(e))
        raise CgroupError(
            "no cgroup with the pids, memory and cpu controllers can be made here"
            + (f" ({'; '.join(problems)})" if problems else "")
            + "; grade as root on a host or in a container with a writable /sys/fs/cgroup "
              "(docker run --cgroupns=private, or a systemd unit with Delegate=yes)")

    @classmethod
    def _create_v1(cls, name: str, mounts: dict[str, Path], own: dict[str, str],
                   pids_max: int, memory_mb: int, cpus: float) -> "Cgroup":
        dirs = {}
        for c in V1_CONTROLLERS:
            d = mounts[c] / own.get(c, "/").lstrip("/") / name
            try:
                d.mkdir(exist_ok=True)
            except OSError as e:
                raise CgroupError(f"cannot create {d}: {e}") from None
            dirs[c] = d
        cg = cls(1, dirs)
        cg._write("pids", "pids.max", str(pids_max))
        cg._write("memory", "memory.limit_in_bytes", str(memory_mb * 2**20))
        # The tmpfs a submission writes is memory too; swap would let it outgrow the limit.
        cg._write("memory", "memory.memsw.limit_in_bytes", str(memory_mb * 2**20), optional=True)
        cg._write("cpu", "cpu.cfs_period_us", str(PERIOD_US))
        cg._write("cpu", "cpu.cfs_quota_us", str(int(cpus * PERIOD_US)))
        return cg

    @classmethod
    def _create_v2(cls, name: str, parent: Path, pids_max: int, memory_mb: int,
                   cpus: float) -> "Cgroup":
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        missing = [c for c in V2_CONTROLLERS if c not in enabled]
        if missing:
            try:
                (parent / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in missing))
            except OSError as e:
                raise CgroupError(f"controllers {', '.join(missing)} are not delegated to "
                                  f"{parent} and cannot be enabled there ({e})") from None
        d = parent / name
        d.mkdir(exist_ok=True)
        cg = cls(2, {"": d})
        cg._write("", "pids.max", str(pids_max))
        cg._write("", "memory.max", str(memory_mb * 2**20))
        cg._write("", "memory.swap.max", "0", optional=True)
        cg._write("", "cpu.max", f"{int(cpus * PERIOD_US)} {PERIOD_US}")
        return cg

    def _write(self, controller: str, filename: str, value: str, optional: bool = False) -> None:
        try:
            (self.dirs[controller] / filename).write_text(value)
        except OSError as e:
            if not optional:
                raise CgroupError(f"cannot set {self.dirs[controller] / filename}: {e}") from None

    # ------------------------------------------------------------------------- using
    @property
    def procs_files(self) -> list[Path]:
        """The files a pid is written into to move that process (and its future children) in."""
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def pids(self) -> set[int]:
        """Every process now in the cgroup (host pids)."""
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found |= {int(x) for x in f.read_text().split()}
            except OSError:
                pass
        return found

    def cpu_s(self) -> float:
        """CPU seconds used by every process that ever ran in the cgroup."""
        try:
            if self.version == 2:
                for line in (self.dirs[""] / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return 0.0

    def memory_exceeded(self) -> bool:
        """True when the memory limit was hit (the kernel then killed or refused something)."""
        try:
            if self.version == 2:
                events = (self.dirs[""] / "memory.events").read_text().split()
                counts = dict(zip(events[::2], map(int, events[1::2])))
                return counts.get("oom_kill", 0) > 0 or counts.get("max", 0) > 0
            return int((self.dirs["memory"] / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def pids_exceeded(self) -> bool:
        """True when a fork was refused because the process cap was reached."""
        d = self.dirs["" if self.version == 2 else "pids"]
        try:
            events = (d / "pids.events").read_text().split()
            return dict(zip(events[::2], map(int, events[1::2]))).get("max", 0) > 0
        except (OSError, ValueError):
            return False

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process in the cgroup, and what they fork meanwhile, until none is left."""
        if self.version == 2:
            try:
                (self.dirs[""] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup's directories."""
        self.kill()
        for d in self.dirs.values():
            for _ in range(50):  # a killed process leaves the cgroup once it is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
