"""Image grids, PNG/GIF writing and image loading (numpy + Pillow only: the runtime uses it too).

Every image here is uint8, channels last: (H, W), (H, W, 1) or (H, W, 3); a batch adds a leading N
(or T for animation frames). Files are rendered to bytes in memory and written atomically, so a
crash never leaves a half-written image.

PNGs are encoded here with zlib (8-bit grey or RGB, no filter): `gvtool sample`'s cold start would
otherwise spend ~60 ms importing Pillow and the five format plugins its save() loads. Pillow is
imported only to read images and to write GIFs.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gvtool.errors import BadInputError
from gvtool.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["make_grid", "save_png", "save_grid", "save_gif", "load_image"]


def make_grid(
    images: np.ndarray, ncols: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile a batch of images into one image, row by row.

    images: uint8 (N, H, W, C) with C in {1, 3}, or (N, H, W) (treated as C = 1).
    Returns uint8 (rows*(H+padding)+padding, cols*(W+padding)+padding, C), where
    cols = min(ncols, N) (ncols None -> ceil(sqrt(N))) and rows = ceil(N / cols).
    Cells past the last image are filled with pad_value, like the padding.
    """
    batch = _as_batch(images, "images")  # (N, H, W, C)
    n, h, w, c = batch.shape
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    _check_int("ncols", ncols, minimum=1)
    _check_int("padding", padding, minimum=0)
    _check_int("pad_value", pad_value, minimum=0, maximum=255)

    # More columns than images would only add empty cells to the right.
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8
    )
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top : top + h, left : left + w] = batch[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write one uint8 image, (H, W), (H, W, 1) -> mode L or (H, W, 3) -> mode RGB, as a PNG."""
    _check_suffix(path, ".png", "save_png")
    atomic_write_bytes(path, png_bytes(_as_single(image, "image")))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(image: np.ndarray) -> bytes:
    """Encode uint8 (H, W, 1) as an 8-bit greyscale PNG, or (H, W, 3) as 8-bit RGB (PNG spec, 3rd ed.)."""
    h, w, c = image.shape
    colour_type = 0 if c == 1 else 2  # 0 = greyscale, 2 = truecolour
    rows = np.zeros((h, 1 + w * c), np.uint8)  # each scanline starts with its filter byte, 0 = None
    rows[:, 1:] = image.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)  # depth 8, deflate, no interlace

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(rows.tobytes(), 6)
    return b"".join([_PNG_SIGNATURE, chunk(b"IHDR", header), chunk(b"IDAT", pixels), chunk(b"IEND", b"")])


def save_grid(images: np.ndarray, path: str | os.PathLike, ncols: int | None = None) -> None:
    """Tile a uint8 batch with make_grid (default padding) and write it as a PNG."""
    _check_suffix(path, ".png", "save_grid")
    save_png(make_grid(images, ncols=ncols), path)


def save_gif(
    frames: np.ndarray, path: str | os.PathLike, duration_ms: int = 100, loop: int = 0
) -> None:
    """Write uint8 frames (T, H, W) or (T, H, W, C), C in {1, 3}, as an animated GIF.

    duration_ms is the time each frame shows; loop is the number of repeats, 0 meaning forever.
    RGB frames are quantized to a 256-colour palette (a GIF limit). Pillow merges consecutive
    identical frames into one frame of the summed duration, so the file may hold fewer than T frames
    while playing for the same time.
    """
    _check_suffix(path, ".gif", "save_gif")
    batch = _as_batch(frames, "frames")  # (T, H, W, C)
    _check_int("duration_ms", duration_ms, minimum=1)
    _check_int("loop", loop, minimum=0)
    pils = [_to_pil(frame) for frame in batch]
    buf = io.BytesIO()
    pils[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=pils[1:],
        duration=duration_ms,
        loop=loop,
    )
    atomic_write_bytes(path, buf.getvalue())


MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000: above any phone photo; a 481 KB PNG of 13000 x 13000 decoded to 1.4 GB


def open_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode one image file, in its stored orientation (phone photos keep it in EXIF).

    The size in the file's header is checked before anything is decoded: over MAX_IMAGE_PIXELS is refused (a small
    file can declare a huge image). `draft_size` lets a JPEG decode at 1/2, 1/4 or 1/8 scale where that still
    leaves at least draft_size pixels a side: the model needs a few dozen, not a photo's thousands."""
    from PIL import Image, ImageOps  # only for reading files (see the module docstring)

    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadInputError(f"{os.fspath(path)}: a {width} x {height} image ({width * height / 1e6:,.0f} "
                                    f"megapixels) is above the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel bound; "
                                    "shrink it first")
            if draft_size and opened.format == "JPEG":
                opened.draft(opened.mode, (draft_size, draft_size))
            opened.load()  # decode now, so a truncated or corrupt file fails here, naming itself
            return ImageOps.exif_transpose(opened)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadInputError(f"{os.fspath(path)}: cannot read image ({e}); expected a readable PNG or JPEG") from e


GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # one grey channel


def convert_channels(img: Image.Image, channels: int) -> Image.Image:
    """Mode L (channels 1) or RGB (channels 3); 16-bit grey is scaled to 0..255, not clipped."""
    if channels == 1 and img.mode.startswith("I"):
        a = np.asarray(img, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
        from PIL import Image

        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return img.convert("L" if channels == 1 else "RGB")


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size: uint8 (size, size, C).

    BOX when shrinking (averages every source pixel, no aliasing), BICUBIC when enlarging.
    """
    w, h = img.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != size:
        from PIL import Image

        resample = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
        img = img.resize((size, size), resample=resample)
    out = np.asarray(img, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def load_image(path: str | os.PathLike, channels: int, size: int) -> np.ndarray:
    """Read one image file as uint8 (size, size, channels): converted, centre-cropped and resized."""
    if channels not in (1, 3):
        raise BadInputError(f"channels must be 1 or 3, got {channels!r}")
    _check_int("size", size, minimum=1)
    return fit_square(convert_channels(open_image(path), channels), size)


# --- validation and conversion helpers -------------------------------------------------------


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise BadInputError(f"{name} must be an integer {bound}, got {value!r}")


def _check_suffix(path: str | os.PathLike, suffix: str, func: str) -> None:
    got = Path(path).suffix
    if got.lower() != suffix:
        raise BadInputError(f"{func} writes {suffix} files, got path {os.fspath(path)!r}")


def _check_uint8_array(arr: object, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise BadInputError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise BadInputError(f"{name} has dtype {arr.dtype}, expected uint8")
    return arr


def _as_batch(arr: object, name: str) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) with C in {1, 3} -> (N, H, W, C), N >= 1."""
    arr = _check_uint8_array(arr, name)
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim != 4:
        raise BadInputError(
            f"{name} has shape {arr.shape}, expected (N, H, W) or (N, H, W, C)"
        )
    if arr.shape[3] not in (1, 3):
        raise BadInputError(f"{name} has {arr.shape[3]} channels, expected 1 or 3")
    if arr.shape[0] == 0:
        raise BadInputError(f"{name} is empty (shape {arr.shape}), expected at least one image")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise BadInputError(f"{name} has shape {arr.shape}, expected non-zero height and width")
    return arr


def _as_single(arr: object, name: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) with C in {1, 3} -> (H, W, C)."""
    arr = _check_uint8_array(arr, name)
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim != 3:
        raise BadInputError(f"{name} has shape {arr.shape}, expected (H, W) or (H, W, C)")
    if arr.shape[2] not in (1, 3):
        raise BadInputError(f"{name} has {arr.shape[2]} channels, expected 1 or 3")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInputError(f"{name} has shape {arr.shape}, expected non-zero height and width")
    return arr


def _to_pil(image: np.ndarray) -> Image.Image:
    from PIL import Image

    """Validated uint8 (H, W, C) -> a Pillow image of mode L (C = 1) or RGB (C = 3)."""
    if image.shape[2] == 1:
        image = image[:, :, 0]  # Pillow infers L from a 2-D uint8 array
    return Image.fromarray(np.ascontiguousarray(image))
