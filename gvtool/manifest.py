"""The bundle's manifest.json: its schema, reading with every check, and writing (stdlib only).

A bundle is a folder; manifest.json is written last and atomically, so a folder with a manifest is
complete. Export writes it, the runtime reads it, and both go through this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gvtool.errors import BadBundleError
from gvtool.fileio import atomic_write_text

MANIFEST_FILE = "manifest.json"
FORMAT = 1  # bump on any change a reader of the old format would misread
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("encoder", "decoder")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Shapes use "batch" for the dynamic batch axis."""

    name: str
    dtype: str                      # numpy dtype name: "float32", "int64"
    shape: tuple                    # e.g. ("batch", 1, 28, 28)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class Validation:
    """How an exported graph compares with the torch model it came from."""

    max_abs_diff: float
    mean_abs_diff: float
    metric: str                     # "max_abs" or "mean_abs": which of the two the tolerance bounds
    tolerance: float
    passed: bool
    batch_sizes: tuple[int, ...]
    inputs: str = ""                # what was fed: e.g. "seeded latents", "held-out images of mnist"
    scale: tuple[float, ...] = ()   # the differences were divided by these along the outputs' last axis (a vector
                                    # decoder: the data's std per feature); empty: in the outputs' own units

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"batch_sizes": list(self.batch_sizes), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Validation":
        return cls(**(d | {"batch_sizes": tuple(d["batch_sizes"]), "scale": tuple(d.get("scale", ()))}))


@dataclass(frozen=True)
class GraphEntry:
    graph: str                      # "encoder" | "decoder"
    precision: str                  # "fp32" | "fp16" | "int8"
    file: str                       # relative to the bundle, POSIX separators
    sha256: str
    bytes: int
    opset: int
    ir_version: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    validation: Validation
    flops_per_item: int | None = None  # of the fp32 graph, on every precision; None: not counted (or an older bundle)

    @property
    def key(self) -> str:
        return f"{self.graph}.{self.precision}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["validation"] = self.validation.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GraphEntry":
        return cls(**(d | {"inputs": tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                           "outputs": tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                           "validation": Validation.from_dict(d["validation"])}))


@dataclass(frozen=True)
class EngineEntry:
    graph_key: str                  # the GraphEntry it was built from, e.g. "decoder.fp16"
    precision: str
    file: str
    sha256: str
    bytes: int
    profile: dict                   # {"min": 1, "opt": 8, "max": 64} batch sizes
    tensorrt_version: str
    gpu_name: str
    compute_capability: str         # "8.7"
    dla_core: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EngineEntry":
        return cls(**d)


@dataclass(frozen=True)
class Manifest:
    gvtool_version: str
    model: dict                     # kind, conditional, num_classes, class_names, data_kind, item_shape, latent_dim
    pixels: dict | None             # images: {"scale": 127.5, "offset": -1.0}: model = pixel / scale + offset
    source: dict                    # run_dir, checkpoint_sha256, step: where the bundle came from
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    format: int = FORMAT

    def graph(self, graph: str, precision: str) -> GraphEntry:
        key = f"{graph}.{precision}"
        if key not in self.graphs:
            raise BadBundleError(f"the bundle has no {graph} graph in {precision}; it has {', '.join(self.graphs) or 'none'}")
        return self.graphs[key]

    def to_dict(self) -> dict:
        return {"format": self.format, "gvtool_version": self.gvtool_version, "model": self.model,
                "pixels": self.pixels, "source": self.source,
                "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
                "engines": {k: e.to_dict() for k, e in self.engines.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(gvtool_version=d["gvtool_version"], model=d["model"], pixels=d.get("pixels"), source=d["source"],
                   graphs={k: GraphEntry.from_dict(g) for k, g in d.get("graphs", {}).items()},
                   engines={k: EngineEntry.from_dict(e) for k, e in d.get("engines", {}).items()},
                   format=d["format"])


def item_name(data_kind: str) -> str:
    """The name of the graphs' item tensor (the encoder's input, the decoder's output)."""
    return "images" if data_kind == "image" else "vectors"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_path(bundle: str | os.PathLike, name: str) -> Path:
    """The file `name` of a bundle, refusing a name that leaves the bundle folder."""
    if not isinstance(name, str):
        raise BadBundleError(f"the manifest names a file by {name!r}, expected a relative path string")
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BadBundleError(f"the manifest names a file outside the bundle: {name!r}")
    root = Path(bundle).resolve()
    path = (root / pure).resolve()
    if root != path and root not in path.parents:  # a symlink pointing out of the bundle
        raise BadBundleError(f"the manifest names a file outside the bundle: {name!r} resolves to {path}")
    return path


def is_bundle(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


def read_manifest(bundle: str | os.PathLike) -> Manifest:
    """Read and check a bundle's manifest: known format, well-formed, every file inside the bundle."""
    path = Path(bundle) / MANIFEST_FILE
    if not Path(bundle).is_dir():
        raise BadBundleError(f"no bundle at {bundle}: not a folder")
    if not path.is_file():
        raise BadBundleError(f"{bundle} is not a complete bundle: it has no {MANIFEST_FILE} (an export that did not finish?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadBundleError(f"{path} is not valid JSON: {error}") from None
    version = raw.get("format") if isinstance(raw, dict) else None
    if version != FORMAT:
        raise BadBundleError(f"{path} has manifest format {version!r}; this gvtool reads format {FORMAT}. "
                             "Re-export the bundle with this gvtool, or install the gvtool that wrote it "
                             f"({raw.get('gvtool_version', 'unknown version') if isinstance(raw, dict) else 'unknown'})")
    try:
        manifest = Manifest.from_dict(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise BadBundleError(f"{path} is malformed: {type(error).__name__} {error}") from None
    wrong_keys = [key for key, entry in manifest.graphs.items() if key != entry.key]
    if wrong_keys:
        raise BadBundleError(f"{path} is malformed: graph keys {wrong_keys} disagree with their entries' graph.precision")
    for entry in [*manifest.graphs.values(), *manifest.engines.values()]:
        bundle_path(bundle, entry.file)
    return manifest


def verify_file(bundle: str | os.PathLike, name: str, sha256: str) -> Path:
    """The path of a bundle file whose content still matches the manifest's hash."""
    path = bundle_path(bundle, name)
    if not path.is_file():
        raise BadBundleError(f"the bundle {bundle} lacks {name}, which its manifest lists")
    actual = sha256_file(path)
    if actual != sha256:
        raise BadBundleError(f"{path} does not match the manifest (sha256 {actual[:12]}..., expected {sha256[:12]}...): "
                             "the file was changed or damaged after export; re-export the bundle")
    return path


def write_manifest(bundle: str | os.PathLike, manifest: Manifest) -> None:
    atomic_write_text(Path(bundle) / MANIFEST_FILE, json.dumps(manifest.to_dict(), indent=2) + "\n")
