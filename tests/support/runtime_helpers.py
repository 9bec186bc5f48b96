"""Shared by test_runtime.py and test_cli_runtime.py: bundle copies changed on purpose, image files,
and what this machine's runtime can do.

The tiny bundles of export_fixtures.py are shared by the whole session and never changed; every
helper that changes a bundle works on a copy.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from gvtool.manifest import MANIFEST_FILE

TENSORRT_INSTALLED = importlib.util.find_spec("tensorrt") is not None


def cuda_in_onnxruntime() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def copy_bundle(bundle: Path, dest: Path) -> Path:
    return Path(shutil.copytree(bundle, dest))


def flip_byte(path: Path) -> None:
    """Change one byte in the middle of a file, as damage or tampering after export would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(bundle: Path, change) -> None:
    """Apply change(raw_dict) to a (copied) bundle's manifest.json."""
    path = Path(bundle) / MANIFEST_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(json.dumps(raw), encoding="utf-8")


def write_png(path: Path, image: np.ndarray) -> Path:
    """A uint8 (H, W, 1) or (H, W, 3) image as a PNG file."""
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(path)
    return path


def grid_size(n: int, ncols: int | None, side: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) of gvtool.imaging.make_grid's image for n square items, as Pillow reports it."""
    cols = min(ncols or int(np.ceil(np.sqrt(n))), n)
    rows = -(-n // cols)
    return cols * (side + padding) + padding, rows * (side + padding) + padding


def grid_cell(grid: np.ndarray, index: int, ncols: int, side: int, padding: int = 2) -> np.ndarray:
    """Cell `index` of a make_grid image (H, W) or (H, W, C), as (side, side[, C])."""
    top = padding + (index // ncols) * (side + padding)
    left = padding + (index % ncols) * (side + padding)
    return grid[top:top + side, left:left + side]
