"""What this machine has free (stdlib only): read before a command allocates what it could not hold."""

from __future__ import annotations

from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory free now (Linux: MemAvailable, which counts reclaimable caches), or None where it cannot
    be read (then no check is made)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
