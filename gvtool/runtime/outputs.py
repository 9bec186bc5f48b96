"""Writing what the runtime makes: PNG grids, GIF strips, .npy arrays (streamed for large requests)."""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def stream_npy(chunks: Iterable[np.ndarray], n: int, item_shape: tuple, dtype, path: Path,
               progress=lambda done: None) -> None:
    """Write n items arriving in chunks into one .npy, memory-mapped, under a temporary name renamed at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *item_shape))
        done = 0
        for chunk in chunks:
            out[done:done + len(chunk)] = chunk
            done += len(chunk)
            progress(done)
        out.flush()
        del out  # close the map before the rename
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
