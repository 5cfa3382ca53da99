"""glibc's malloc on transparent huge pages for the CPU command-line runs.

XLA:CPU allocates each executable's temporary buffer afresh on every call (200 MB for the demo's
training step). glibc serves blocks that large with mmap and hands them back with munmap, so
every call faults in each 4 KiB page again (50k faults per demo step, 60k per full-size HS2S
streaming step: 0.12-0.16 s of kernel time each) and then runs on 4 KiB pages. glibc's
tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) makes malloc ask the kernel for transparent
huge pages (madvise), which cuts the faults 15-50x and the TLB misses with them: the demo step
and the full-size streaming step ran 8-19% faster (benchmarks/RESULTS.md). The arithmetic is
unchanged.

glibc reads its tunables once, when the process starts, so `reexec_with_huge_pages` restarts
the process (same interpreter, same arguments) with the tunable added to GLIBC_TUNABLES. The
commands call it before any work; library users set the variable themselves:
GLIBC_TUNABLES=glibc.malloc.hugetlb=1. RNN_VOS_JAX_HUGE_PAGES=0 turns the restart off.
"""

from __future__ import annotations

import os
import re
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "RNN_VOS_JAX_HUGE_PAGES"  # "0": leave malloc as the environment has it
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def thp_mode(path: str = THP_ENABLED) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'); None if unknown."""
    try:
        with open(path) as f:
            found = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library this process runs on; None when it is not glibc."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")  # e.g. 'glibc 2.36'
    except (AttributeError, ValueError, OSError):
        return None
    found = re.fullmatch(r"glibc (\d+)\.(\d+).*", name or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def tunables_with_huge_pages(
    environ: dict, mode: str | None, version: tuple[int, int] | None
) -> str | None:
    """The GLIBC_TUNABLES value to restart with, or None when nothing should change.

    Nothing changes when the user opted out, already set the tunable (either way), the kernel
    has no transparent huge pages to give, or the C library is not a glibc that knows it.
    """
    current = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT, "1") == "0" or TUNABLE + "=" in current:
        return None
    if mode not in ("always", "madvise") or version is None or version < MIN_GLIBC:
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec_with_huge_pages(environ=None, execve=os.execve) -> None:
    """Restarts this process with glibc's malloc on huge pages, at most once; else returns.

    Call it first thing in a command's `if __name__ == "__main__"` block: the restart repeats
    whatever ran before it. The restarted process finds the tunable set and goes on.
    """
    environ = os.environ if environ is None else environ
    tunables = tunables_with_huge_pages(environ, thp_mode(), glibc_version())
    argv = getattr(sys, "orig_argv", None)  # the interpreter's own argv, with -m / -c
    if tunables is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, [sys.executable, *argv[1:]], {**environ, "GLIBC_TUNABLES": tunables})
