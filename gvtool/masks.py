"""Masks of observed pixels, for imputation (a joint model's inpainting): numpy only, so the runtime needs no torch.

A mask is float32 (N, 1, H, W): 1 where a pixel is observed, 0 where it is missing and the model fills it in. The
kinds hide a share `missing` of the image: "top", "bottom", "left" and "right" a band of whole rows or columns on
that side (round(missing * side) of them), "random" each pixel independently with probability `missing` (seeded).
A mask image (PNG...) marks the pixels to fill in white, as inpainting tools do; it is resized to the model's size.
Training draws the same kinds in torch (train/objectives.training_masks), from the same rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gvtool.errors import BadInputError

MASK_KINDS = ("top", "bottom", "left", "right", "random")


def band_hidden(kind: str, side: int, missing: float) -> np.ndarray:
    """(side, side) bool: True where a band mask of `kind` hides a pixel. A row or column is hidden when its centre
    lies in the hidden share of the side, so `missing` 0.25 of 28 rows hides 7."""
    centres = (np.arange(side) + 0.5) / side
    line = centres < missing if kind in ("top", "left") else centres > 1 - missing
    return np.broadcast_to(line[:, None] if kind in ("top", "bottom") else line[None, :], (side, side))


def make_masks(kind: str, n: int, side: int, missing: float = 0.5, seed: int = 0) -> np.ndarray:
    """n masks of `kind` (MASK_KINDS) over (side, side) images hiding the share `missing` -> float32 (n, 1, side, side),
    1 observed. "random" draws each mask's pixels from default_rng(seed)."""
    if kind not in MASK_KINDS:
        raise BadInputError(f"unknown mask {kind!r}; expected one of {', '.join(MASK_KINDS)} or a mask image file")
    check_missing(missing)
    if kind == "random":
        hidden = np.random.default_rng(seed).random((n, 1, side, side)) < missing
    else:
        hidden = np.broadcast_to(band_hidden(kind, side, missing), (n, 1, side, side))
    return (~hidden).astype(np.float32)


def mixed_masks(n: int, side: int, seed: int = 0) -> np.ndarray:
    """n masks (n, 1, side, side) as a joint model meets them, in turn: the whole image, then every kind at 25%, 50%
    and 75% missing. What export validates and calibrates a joint model's encoder on."""
    settings = [None] + [(kind, missing) for missing in (0.25, 0.5, 0.75) for kind in MASK_KINDS]
    rows = []
    for i in range(n):
        setting = settings[i % len(settings)]
        rows.append(np.ones((1, 1, side, side), np.float32) if setting is None else
                    make_masks(setting[0], 1, side, setting[1], seed + i))
    return np.concatenate(rows)


def check_missing(missing: float) -> None:
    if not 0 < missing < 1:
        raise BadInputError(f"the share of missing pixels must be between 0 and 1 (both excluded), got {missing}")


def mask_from_image(path: str | Path, side: int) -> np.ndarray:
    """A mask image file -> float32 (1, 1, side, side): its white pixels (grey level >= 128) are the ones to fill in.
    Resized (nearest) to the model's side; refused when it hides nothing or everything."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((side, side), Image.NEAREST)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise BadInputError(f"cannot read the mask image {path}: {error}") from None
    hidden = np.asarray(grey) >= 128
    if not hidden.any() or hidden.all():
        raise BadInputError(f"the mask image {path} marks {'no' if not hidden.any() else 'every'} pixel to fill in "
                            "(white: fill in, black: observed)")
    return (~hidden).astype(np.float32)[None, None]


def resolve_masks(mask: str | np.ndarray | None, n: int, side: int, missing: float = 0.5, seed: int = 0) -> np.ndarray:
    """What impute and classify take as a mask -> float32 (n, 1, side, side): None (everything observed), a kind, a
    mask image's path, or an array (side, side), (1|n, side, side) or (1|n, 1, side, side) of 0/1, 1 observed."""
    if mask is None:
        return np.ones((n, 1, side, side), np.float32)
    if isinstance(mask, (str, Path)):
        if str(mask) in MASK_KINDS:
            return make_masks(str(mask), n, side, missing, seed)
        if not Path(mask).is_file():
            raise BadInputError(f"--mask {mask} is neither a mask kind ({', '.join(MASK_KINDS)}) nor a file")
        return np.repeat(mask_from_image(mask, side), n, axis=0)
    array = np.asarray(mask)
    if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
        raise BadInputError("a mask array must hold 0 (missing) and 1 (observed) only")
    array = array.astype(np.float32).reshape((-1, 1, *array.shape[-2:])) if array.ndim in (2, 3, 4) else array
    if array.ndim != 4 or array.shape[1:] != (1, side, side) or len(array) not in (1, n):
        raise BadInputError(f"a mask array has shape {np.asarray(mask).shape}; expected ({side}, {side}) or one per "
                            f"image, ({n}, {side}, {side})")
    return np.ascontiguousarray(np.broadcast_to(array, (n, 1, side, side)))
