"""Writing what the runtime makes: PNG grids, GIF strips, .npy arrays (streamed for large requests)."""

from __future__ import annotations

import contextlib
import shutil
import signal
from pathlib import Path
from typing import Iterable

import numpy as np

from gvtool.errors import BadInputError
from gvtool.fileio import atomic_write
from gvtool.imaging import save_gif, save_grid

SUFFIXES = {".png": "a PNG grid", ".npy": "a .npy array", ".gif": "an animated GIF"}


def check_output(path: Path, allowed: tuple[str, ...], is_image: bool) -> None:
    """Refuse an output kind the command cannot write, before any work is done."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise BadInputError(f"--out {path}: cannot write {suffix or 'a file without suffix'}; "
                            f"expected {' or '.join(allowed)}")
    if not is_image and suffix != ".npy":
        raise BadInputError(f"--out {path}: a vector model's items are written as .npy, not {suffix}")


def save_items(items: np.ndarray, path: Path, ncols: int | None = None) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        save_npy(items, path)
    elif suffix == ".gif":
        save_gif(items, path, duration_ms=120)
    else:
        save_grid(items, path, ncols=ncols)


def save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def stream_npy(chunks: Iterable[np.ndarray], n: int, item_shape: tuple, dtype, path: Path,
               progress=lambda done: None) -> None:
    """Write n items arriving in chunks into one .npy, under a temporary name renamed at the end.

    The file is written front to back (a header, then each chunk), never through a memory map: on a full disk a
    write fails with ENOSPC, one clear error, where a store into a map of a sparse file dies of SIGBUS. The space
    is checked before any work, and SIGTERM removes the temporary file as Ctrl-C does."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n, *item_shape)}
    needed = n * int(np.prod(item_shape, dtype=np.int64)) * dtype.itemsize + 4096
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise BadInputError(f"--out {path}: {n:,} items need {_human_bytes(needed)}, and its filesystem has "
                            f"{_human_bytes(free)} free")
    with terminated_as_interrupt(), atomic_write(path, "wb") as f:  # names --out in its errors, as every output
        np.lib.format.write_array_header_1_0(f, header)
        done = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if chunk.shape[1:] != tuple(item_shape) or done + len(chunk) > n:
                raise ValueError(f"stream_npy got a chunk of {chunk.shape} after {done} of {n} items of {item_shape}")
            f.write(memoryview(chunk).cast("B"))
            done += len(chunk)
            progress(done)
        if done != n:
            raise ValueError(f"stream_npy got {done} items, expected {n}")


@contextlib.contextmanager
def terminated_as_interrupt():
    """Within the block, SIGTERM (a scheduler or `kill` stopping the command) raises KeyboardInterrupt as Ctrl-C
    does, so that the writer's clean-up runs. Outside the main thread, signals are left alone."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
