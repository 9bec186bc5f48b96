"""Captions of digit images, made from what each one shows: its label and attributes measured from its pixels.

The measurements follow Morpho-MNIST (Castro et al. 2019), at MNIST's 28-pixel scale whatever the image size:
- thickness: the stroke's width in pixels, twice the mean distance to the background along the stroke's ridge;
- slant: the shear of the ink in degrees, positive when the digit leans right (its top to the right of its foot);
- width and height: of the ink's bounding box, in pixels;
- dx, dy: the ink's centre of mass from the image centre, in pixels (right and down positive).

Each attribute far enough from the typical digit gets words ("thick", "leaning left", "narrow", "small", "high");
one in the middle band is left unsaid, as a person describing the digit would. Width is judged against the
digit's own class (a narrow 0 is wider than most 1s). Captions are phrased in templates: training draws from
TRAIN_TEMPLATES and TRAIN_WORDS, held-out captions from HELD_OUT_TEMPLATES and HELD_OUT_WORDS, so a model
is judged on phrasings it never saw.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gvtool.errors import BadInputError
from gvtool.fileio import load_json_bounded

BUILTIN = "builtin"      # --captions builtin: made from the digits (labelled digit data only)
CAPTION_SEED = 0         # built-in captions are drawn once with this seed: every training seed sees the same data
TRAIN_PER_IMAGE = 4      # built-in training captions drawn per image: a model sees each digit described several ways
MAX_CAPTION_CHARS = 400
MAX_CAPTIONS_BYTES = 64 << 20
SCALE = 28  # measurements are in pixels of a 28-pixel image

# The bands beyond which an attribute is said, from the built-in MNIST digits (about the 30th and 70th percentiles
# of thickness; slants of about the 10th and 70th; widths 15% off the class median; sizes under the 5th percentile).
THIN, THICK = 2.45, 3.3
LEFT, UPRIGHT, RIGHT = -8.0, 4.0, 15.0      # degrees: leaning left below LEFT, upright within +-UPRIGHT, right above
NARROW, WIDE = 0.85, 1.15                   # of the class's median width
SMALL = 17.0                                # height in pixels (MNIST's digits are drawn 20 pixels high)
OFF_CENTRE = 1.5                            # pixels of the centre of mass from the image centre

NUMERALS = tuple("0123456789")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# What each band is called: training and held-out captions use some words of their own.
TRAIN_WORDS = {
    "thin": ("thin", "thinly drawn"), "thick": ("thick", "bold"),
    "left": ("leaning left", "slanted to the left"), "upright": ("upright", "standing straight"),
    "right": ("leaning right", "slanted to the right"),
    "narrow": ("narrow",), "wide": ("wide",), "small": ("small",),
    "high": ("placed high",), "low": ("placed low",), "west": ("off to the left",), "east": ("off to the right",),
}
HELD_OUT_WORDS = {
    "thin": ("fine", "thin"), "thick": ("heavy", "thick"),
    "left": ("tilted left", "leaning left"), "upright": ("straight", "upright"),
    "right": ("tilted right", "leaning right"),
    "narrow": ("slim", "narrow"), "wide": ("broad", "wide"), "small": ("tiny", "small"),
    "high": ("near the top",), "low": ("near the bottom",), "west": ("near the left edge",),
    "east": ("near the right edge",),
}
PRE = ("size", "thickness", "width")  # said before the digit ("a small thick 3"); slant and position after it
# {pre}: the words said before the digit, {pre_and} the same joined by "and"; {post}: the phrases after it.
TRAIN_TEMPLATES = (
    "a {pre} {digit} {post}",
    "a handwritten {pre} {digit} {post}",
    "{pre} {digit} {post}",
    "the digit {digit}, {pre_and} {post}",
)
HELD_OUT_TEMPLATES = (
    "someone drew a {pre} {digit} {post}",
    "here is a {pre} {digit} {post}",
    "a picture of a {pre} {digit} {post}",
)


@dataclass(frozen=True)
class Attributes:
    """Measurements of N images, each (N,) float64, at the 28-pixel scale."""

    thickness: np.ndarray
    slant: np.ndarray
    width: np.ndarray
    height: np.ndarray
    dx: np.ndarray
    dy: np.ndarray


def measure(images: np.ndarray) -> Attributes:
    """uint8 images (N, 1, H, W) or (N, H, W), ink bright on dark -> their Attributes. An image without ink measures
    0 thickness and size and no slant or offset."""
    from scipy import ndimage

    images = np.asarray(images)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise BadInputError(f"captions describe grey digits; got images of {images.shape[1]} channels")
        images = images[:, 0]
    if images.ndim != 3:
        raise BadInputError(f"expected images (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    n, h, w = images.shape
    unit = SCALE / max(h, w)
    rows, cols = np.mgrid[0:h, 0:w]
    out = {k: np.zeros(n) for k in ("thickness", "slant", "width", "height", "dx", "dy")}
    for i, pixels in enumerate(images.astype(np.float64) / 255.0):
        mass = pixels.sum()
        ink = pixels > 0.5
        if mass <= 0 or not ink.any():
            continue
        cy, cx = (pixels * rows).sum() / mass, (pixels * cols).sum() / mass
        var_y = (pixels * (rows - cy) ** 2).sum() / mass
        cov = (pixels * (rows - cy) * (cols - cx)).sum() / mass
        # Rows grow downwards: a digit leaning right has x falling as y grows, a negative covariance.
        out["slant"][i] = np.degrees(np.arctan(-cov / var_y)) if var_y > 0 else 0.0
        distance = ndimage.distance_transform_edt(ink)
        ridge = ink & (distance >= ndimage.maximum_filter(distance, size=3))  # the medial axis, near enough
        out["thickness"][i] = 2 * distance[ridge].mean() * unit
        inked_rows, inked_cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        out["height"][i] = (inked_rows[-1] - inked_rows[0] + 1) * unit
        out["width"][i] = (inked_cols[-1] - inked_cols[0] + 1) * unit
        out["dx"][i], out["dy"][i] = (cx - (w - 1) / 2) * unit, (cy - (h - 1) / 2) * unit
    return Attributes(**out)


def bands(attrs: Attributes, labels: np.ndarray) -> list[dict[str, str]]:
    """Per image, the attribute -> band said of it ({"thickness": "thick", "slant": "left", ...}); unsaid ones absent.
    Width is judged against the median width of the image's class among these images."""
    labels = np.asarray(labels)
    median_width = {c: float(np.median(attrs.width[labels == c])) for c in np.unique(labels)}
    out = []
    for i, label in enumerate(labels):
        said = {}
        t, s = attrs.thickness[i], attrs.slant[i]
        if t < THIN or t > THICK:
            said["thickness"] = "thin" if t < THIN else "thick"
        if s < LEFT or s > RIGHT or abs(s) <= UPRIGHT:
            said["slant"] = "left" if s < LEFT else "right" if s > RIGHT else "upright"
        relative = attrs.width[i] / median_width[label] if median_width[label] > 0 else 1.0
        if relative < NARROW or relative > WIDE:
            said["width"] = "narrow" if relative < NARROW else "wide"
        if 0 < attrs.height[i] < SMALL:
            said["size"] = "small"
        dx, dy = attrs.dx[i], attrs.dy[i]
        if max(abs(dx), abs(dy)) > OFF_CENTRE:
            said["position"] = (("east" if dx > 0 else "west") if abs(dx) >= abs(dy) else ("low" if dy > 0 else "high"))
        out.append(said)
    return out


def caption(label: int, said: dict[str, str], rng: np.random.Generator, held_out: bool = False) -> str:
    """One caption of a digit of class `label` with the attribute bands `said`, its template and words drawn by rng."""
    words = HELD_OUT_WORDS if held_out else TRAIN_WORDS
    template = str(rng.choice(HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES))
    digit = (NUMBER_WORDS if rng.random() < 0.5 else NUMERALS)[label]
    pre = [str(rng.choice(words[said[k]])) for k in PRE if k in said]
    post = " and ".join(str(rng.choice(words[said[k]])) for k in ("slant", "position") if k in said)
    text = template.format(pre=" ".join(pre), pre_and=" and ".join(pre), digit=digit, post=post)
    text = " ".join(text.split())  # closes the gap an unsaid attribute leaves
    return _articles(text.replace(" ,", ",").rstrip(" ,"))


def _articles(text: str) -> str:
    """'a' -> 'an' before a vowel sound ("an upright 8", "an eight")."""
    tokens = text.split(" ")
    for i, token in enumerate(tokens[:-1]):
        if token == "a" and (tokens[i + 1][:1] in ("a", "e", "i", "o", "u", "8")):
            tokens[i] = "an"
    return " ".join(tokens)


def captions(images: np.ndarray, labels: np.ndarray, *, per_image: int = 1, held_out: bool = False,
             seed: int = 0) -> list[list[str]]:
    """`per_image` captions of each image, drawn with `seed` (the same images and seed give the same captions)."""
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise BadInputError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise BadInputError("built-in captions describe the digits 0-9; got labels outside that range")
    rng = np.random.default_rng(seed)
    said = bands(measure(images), labels)
    return [[caption(int(y), s, rng, held_out) for _ in range(per_image)] for y, s in zip(labels, said)]


def captioned(data, source: str | None):
    """`data` with the captions `source` (a run's --captions) gives its items; as it is for None."""
    return data if source is None else data.with_captions(load_captions(source, data, seed=CAPTION_SEED))


def load_captions(source: str, data, *, seed: int = 0) -> list[list[str]]:
    """The captions of every item of `data` (a train.data.Dataset), one list per item: `source` is BUILTIN (made
    from the digits' pixels and labels, TRAIN_PER_IMAGE each) or a captions file:
    - .txt: one caption per line, in the order the items load (a folder: its images sorted by name, class
      subfolders in sorted order; an .npz: its rows);
    - .json: a list with one caption (or a list of captions) per item in that order, or an object mapping each
      image's path relative to the --data folder to its caption(s);
    - .csv: rows of (file, caption) with a header naming those two columns; a file may have several rows.
    Every item needs at least one caption; a caption is one line of text of at most MAX_CAPTION_CHARS characters."""
    if source == BUILTIN:
        if data.kind != "image" or data.y is None or data.num_classes != 10 or data.shape[0] != 1:
            raise BadInputError(f"--captions builtin describes grey digits labelled 0-9 (mnist, digits, or a folder "
                                f"or .npz of them); {data.source} is not that: give a captions file")
        return captions(data.x.numpy(), data.y.numpy(), per_image=TRAIN_PER_IMAGE, seed=seed)
    path = Path(source)
    if not path.is_file():
        raise BadInputError(f"--captions {source!r}: no such file; expected 'builtin' or a .txt, .json or .csv file")
    if path.stat().st_size > MAX_CAPTIONS_BYTES:
        raise BadInputError(f"{path} is over {MAX_CAPTIONS_BYTES >> 20} MB; not a captions file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = _text(path).splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if len(lines) != len(data):
            raise BadInputError(f"{path} has {len(lines)} lines for {len(data)} images of {data.source}; "
                                "expected one caption per line, one line per image")
        by_item = [[line] for line in lines]
    elif suffix == ".json":
        by_item = _from_json(path, data)
    elif suffix == ".csv":
        by_item = _by_file(path, data, _csv_rows(path))
    else:
        raise BadInputError(f"--captions {source!r}: expected a .txt, .json or .csv file, got {suffix or 'no suffix'}")
    for i, texts in enumerate(by_item):
        if not texts:
            raise BadInputError(f"{path}: item {i} of {data.source} has no caption")
        for text in texts:
            if not isinstance(text, str) or not text.strip() or "\n" in text or len(text) > MAX_CAPTION_CHARS:
                raise BadInputError(f"{path}: item {i}'s caption {str(text)[:40]!r} is not one line of 1 to "
                                    f"{MAX_CAPTION_CHARS} characters")
    return [[t.strip() for t in texts] for texts in by_item]


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not UTF-8 text") from None


def _from_json(path: Path, data) -> list[list[str]]:
    value = load_json_bounded(path, "captions file", max_bytes=MAX_CAPTIONS_BYTES)
    if isinstance(value, list):
        if len(value) != len(data):
            raise BadInputError(f"{path} lists {len(value)} captions for {len(data)} images of {data.source}")
        return [item if isinstance(item, list) else [item] for item in value]
    if isinstance(value, dict):
        rows = [(name, text) for name, texts in value.items() for text in (texts if isinstance(texts, list) else [texts])]
        return _by_file(path, data, rows)
    raise BadInputError(f"{path}: expected a JSON list (one caption per image) or an object (file -> caption)")


def _csv_rows(path: Path) -> list[tuple[str, str]]:
    try:
        reader = csv.DictReader(io.StringIO(_text(path)))
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise BadInputError(f"{path}: expected a header with the columns 'file' and 'caption', got "
                                f"{reader.fieldnames}")
        return [(row["file"], row["caption"]) for row in reader]
    except csv.Error as e:
        raise BadInputError(f"{path}: not a readable CSV file ({e})") from None


def _by_file(path: Path, data, rows: list[tuple[str, str]]) -> list[list[str]]:
    """Captions keyed by image path (relative to the --data folder) -> one list per item, in load order."""
    from gvtool.train.data import folder_files

    folder = Path(data.source)
    if not folder.is_dir():
        raise BadInputError(f"{path} names captions by file, but --data {data.source} is not a folder of images; "
                            "use a .txt or a JSON list in item order")
    order = {f.relative_to(folder).as_posix(): i for i, f in enumerate(folder_files(folder))}
    by_item: list[list[str]] = [[] for _ in order]
    for name, text in rows:
        if name not in order:
            raise BadInputError(f"{path}: {name!r} is not an image of {folder}")
        by_item[order[name]].append(text)
    missing = [name for name, i in order.items() if not by_item[i]]
    if missing:
        raise BadInputError(f"{path}: {len(missing)} images have no caption, e.g. {missing[0]!r}")
    return by_item
