"""Bounded work: refuse, before allocating, what the machine cannot hold.

Every count, depth, width and grid size that sets the size of an allocation goes through
:func:`check_memory` with an estimate of the bytes it needs; the refusal is one line with
the estimate and what is available, naming the argument.
"""

from __future__ import annotations

import os
import shutil

__all__ = ["BudgetError", "available_memory", "check_memory", "check_disk", "gib"]

# Use at most this fraction of the memory available when the work starts: the rest is for
# the interpreter, the libraries and whatever else the machine runs.
MEMORY_FRACTION = 0.8


class BudgetError(ValueError):
    """Work refused because it would not fit; the message carries the estimate."""


def gib(nbytes) -> str:
    """A byte count in human units."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def available_memory() -> int:
    """Bytes of memory available now (psutil; the physical total if it cannot tell)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform: fall back to sysconf
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 34


def check_memory(nbytes, what: str):
    """Raise BudgetError if ``nbytes`` exceed what this machine can give the work.

    ``what`` names the argument and the size, e.g. ``"--sw2 0.5:4:1000000000 x --sb2 ..."``.
    """
    avail = available_memory()
    if nbytes > MEMORY_FRACTION * avail:
        raise BudgetError(f"{what} needs about {gib(nbytes)} of memory; this machine has "
                          f"{gib(avail)} available")


def check_disk(nbytes, directory, what: str):
    """Raise BudgetError if ``nbytes`` exceed the free space of ``directory``'s file system."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if nbytes > free:
        raise BudgetError(f"{what} needs up to {gib(nbytes)} on disk; {str(directory)!r} has "
                          f"{gib(free)} free")
