"""Thread counts (``[pipeline] threads``, ``--threads``): how many threads torch and faiss use.

torch and faiss start one OpenMP thread per CPU they count, and every operation waits for all of
them. A container's CPU quota (``docker --cpus``) is not among what they count, and CPUs other
processes keep busy are counted as free: threads that outnumber the CPUs they get wait on each
other at every operation, which can make each one many times slower than a single thread. The
default, :func:`default_threads`, is what this process may use: ``OMP_NUM_THREADS`` when it is
set, else the CPUs of the process's affinity, fewer when a CPU quota allows less.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadCount:
    """A thread count and where it comes from (``--threads``, ``OMP_NUM_THREADS``, ...)."""

    count: int
    source: str


def available_cpus() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``, where the system has it),
    at most the CPU quota of its container rounded up (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``)."""
    linux = hasattr(os, "sched_getaffinity")
    cpus = len(os.sched_getaffinity(0)) if linux else (os.cpu_count() or 1)
    quota = cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cpu_quota() -> float | None:
    """The CPUs' worth of time the container's cgroup allows per period; None without a limit
    (or where the files cannot be read)."""
    try:
        text = (CGROUP / "cpu.max").read_text().split()
        limit, period = text[0], text[1]
    except (OSError, IndexError):
        try:
            limit = (CGROUP / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (CGROUP / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota, length = int(limit), int(period)
    except ValueError:  # "max": no limit
        return None
    return quota / length if quota > 0 and length > 0 else None


def omp_num_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a count (its first level, as OpenMP reads ``"4,2"``); None when it
    is unset or not a positive whole number."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def default_threads() -> ThreadCount:
    """The count used when neither ``[pipeline] threads`` nor ``--threads`` gives one."""
    given = omp_num_threads()
    if given is not None:
        return ThreadCount(given, "OMP_NUM_THREADS")
    return ThreadCount(available_cpus(), "the CPUs this process may use")


def resolve_threads(threads: int | None, source: str = "[pipeline] threads") -> ThreadCount:
    """``threads`` (given as ``source``), or :func:`default_threads` when it is None."""
    return ThreadCount(threads, source) if threads is not None else default_threads()


def use_threads(count: int) -> None:
    """Run torch's intra-op work on ``count`` threads (in every thread of the process) and
    faiss's on ``count`` threads in the calling thread (OpenMP keeps faiss's count per thread;
    threads started later begin with ``OMP_NUM_THREADS``, else one per CPU)."""
    import faiss
    import torch

    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)
