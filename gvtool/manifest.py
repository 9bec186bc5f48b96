"""The bundle's manifest.json: its schema, reading with every check, and writing (stdlib only).

A bundle is a folder; manifest.json is written last and atomically, so a folder with a manifest is
complete. Export writes it, the runtime reads it, and both go through this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gvtool.errors import BadBundleError
from gvtool.fileio import atomic_write_text, load_json_bounded

MANIFEST_FILE = "manifest.json"
FORMAT = 1  # bump on any change a reader of the old format would misread
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("encoder", "decoder", "prior", "coarse", "detail", "encoder_b", "decoder_b", "text_encoder", "label_encoder",
          "classifier", "caption_encoder")
# A text-conditioned model's sentence encoder: (input_ids, attention_mask) of a tokenised prompt -> its embedding, the
# condition its other graphs take in place of labels. It is exported beside the kind's own graphs (CHAINS).
TEXT_GRAPH = "text_encoder"
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_EMBEDDING = "text_embedding"
# A joint model (mvae) with captions: the caption's expert, (text_embedding, latent_noise) -> the latents drawn from
# the posterior given the caption and that posterior (LABEL_POSTERIOR's names: the posterior given the condition). Its
# prompts run text_encoder -> caption_encoder where its labels run label_encoder.
CAPTION_GRAPH = "caption_encoder"
# A translation model's domains, by the graphs that encode from and decode to each: "encoder" and "decoder" are
# domain A's (so that sampling, encoding and reconstruction work on A as on any model), the *_b graphs domain B's.
DOMAIN_GRAPHS = (("encoder", "decoder"), ("encoder_b", "decoder_b"))
BATCH_AXIS = "batch"  # the name of every graph's dynamic first axis


@dataclass(frozen=True)
class Chains:
    """What graphs a model kind exports and how they chain, declared once here and recorded in the manifest.

    Graphs are wired by their tensors' names: a graph takes what the graphs before it in a chain returned
    ("latents", "coarse"), the caller's "labels", and draws every other input as N(0, I) noise ("noise",
    "detail_noise"). The runtime derives what a bundle can do from these chains alone."""

    graphs: tuple[str, ...]         # every graph the kind exports
    latent_prior: tuple[str, ...]   # noise -> "latents" (empty: the latents are N(0, I) themselves)
    decoding: tuple[str, ...]       # "latents" -> items

    @property
    def sampling(self) -> tuple[str, ...]:
        return self.latent_prior + self.decoding

    @property
    def has_encoder(self) -> bool:
        return "encoder" in self.graphs

    @property
    def translates(self) -> bool:
        """Whether the kind translates between two domains (it has the graphs of both)."""
        return all(g in self.graphs for pair in DOMAIN_GRAPHS for g in pair)


CHAINS = {
    "vaegan": Chains(("encoder", "decoder"), (), ("decoder",)),
    "vae": Chains(("encoder", "decoder"), (), ("decoder",)),
    "gan": Chains(("decoder",), (), ("decoder",)),
    "ali": Chains(("encoder", "decoder"), (), ("decoder",)),
    # a second, small VAE over the first model's latent codes samples the latents in place of N(0, I)
    "prior": Chains(("encoder", "prior", "decoder"), ("prior",), ("decoder",)),
    # a VAE's coarse item (1/4 resolution for images), then a GAN's detail conditioned on it
    "hier": Chains(("encoder", "coarse", "detail"), (), ("coarse", "detail")),
    # two image domains through one shared latent (UNIT): translating A -> B is encoder -> decoder_b
    "cyclevae": Chains(("encoder", "decoder", "encoder_b", "decoder_b"), (), ("decoder",)),
    # a joint model of images and labels: the image's expert (a partly observed image and its mask) and the label's
    # give Gaussians whose product is the posterior of what is observed; sampling from a label runs the label's
    # expert, the classifier decodes a latent into the label. The runtime multiplies the Gaussians (imputation).
    "mvae": Chains(("encoder", "label_encoder", "decoder", "classifier"), ("label_encoder",), ("decoder",)),
}
MODEL_KINDS = tuple(CHAINS)
TEXT_KINDS = ("vaegan", "vae", "gan")  # the kinds that can be text-conditioned: one decoder, one discriminator
# The graph inputs a chain draws as N(0, I) when no graph before gives them (the runtime seeds one stream per name,
# in this order); every other input must come from an earlier graph or the caller (labels).
NOISE_INPUTS = ("latents", "noise", "detail_noise", "latent_noise")
MASK_INPUT = "mask"  # a joint model's encoder: (N, 1, H, W) float, 1 where the pixel is observed (gvtool.masks)
LABEL_POSTERIOR = ("label_mean", "label_logvar")  # a joint model's label_encoder (caption_encoder): the posterior given
                                                  # the label (the caption)
DATA_KINDS = ("image", "vector")
TENSOR_DTYPES = ("float32", "float16", "int64", "int32", "uint8")
MAX_MANIFEST_BYTES = 4 << 20  # a real manifest is a few KB; this bounds what a hostile one makes us parse
MAX_LATENT_DIM = 4096         # train's own bound (config.ModelConfig)


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
    metric: str                     # "max_abs", "mean_abs" or "cosine" (cosine_gap): which the tolerance bounds
    tolerance: float
    passed: bool
    batch_sizes: tuple[int, ...]
    inputs: str = ""                # what was fed: e.g. "seeded latents", "held-out images of mnist"
    scale: tuple[float, ...] = ()   # the differences were divided by these along the outputs' last axis (a vector
                                    # decoder: the data's std per feature); empty: in the outputs' own units
    cosine_gap: float = 0.0         # a text encoder's: the worst row's 1 - cosine similarity to torch's embedding

    @property
    def judged(self) -> float:
        """The figure the tolerance bounds: the metric's own."""
        return {"max_abs": self.max_abs_diff, "mean_abs": self.mean_abs_diff, "cosine": self.cosine_gap}[self.metric]

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
class TextInfo:
    """A text-conditioned model's prompts: how they are tokenised and encoded."""

    dim: int                        # the sentence embedding's size, what the conditional graphs take
    max_tokens: int                 # the text encoder's fixed token length: prompts are padded to it
    tokenizer_file: str             # tokenizer.json of the `tokenizers` package, relative to the bundle
    tokenizer_sha256: str
    encoder: str = ""               # what the text encoder is, for people ("all-MiniLM-L6-v2, frozen")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """What a bundle's graphs model: all the runtime needs to feed them and read what they return."""

    kind: str                       # vaegan | vae | gan
    conditional: bool
    num_classes: int                # >= 2 when conditional, else 0
    data_kind: str                  # image | vector
    item_shape: tuple[int, ...]     # (C, H, W) for images, (D,) for vectors
    latent_dim: int
    class_names: tuple[str, ...] = ()  # a conditional model's class names, where the data named them
    latent_prior: tuple[str, ...] | None = None  # the kind's chains (CHAINS) as export recorded them; None (a bundle
    decoding: tuple[str, ...] | None = None      # from before they were recorded): the kind's declaration
    domains: tuple[str, ...] = ()   # a translation model's two domains (their data sources), A first; else none
    item_shape_b: tuple[int, ...] = ()  # a translation model's domain B items (C, H, W); A's are item_shape
    style_dim: int = 0              # a translation model's style code per domain: the latent's last style_dim values
                                    # (restyled); 0 for one shared code, and for every other model
    text: TextInfo | None = None    # a text-conditioned model's prompts (a joint model's captions); None for every other

    def __post_init__(self) -> None:
        if isinstance(self.text, dict):
            object.__setattr__(self, "text", TextInfo(**self.text))
        declared = CHAINS.get(self.kind, CHAINS["vaegan"])
        for name in ("latent_prior", "decoding"):
            value = getattr(self, name)
            object.__setattr__(self, name, getattr(declared, name) if value is None else tuple(value))
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "item_shape_b", tuple(self.item_shape_b))

    @property
    def is_image(self) -> bool:
        return self.data_kind == "image"

    @property
    def sampling(self) -> tuple[str, ...]:
        """The graphs that turn noise into items, in order."""
        return self.latent_prior + self.decoding

    def item_shape_of(self, domain: int) -> tuple[int, ...]:
        """The items of domain 0 (A: every model's items) or 1 (B, a translation model's)."""
        return self.item_shape if domain == 0 else self.item_shape_b

    @property
    def graphs(self) -> tuple[str, ...]:
        """Every graph the model exports: its kind's, and a text-conditioned model's text encoder."""
        return model_graphs(self.kind, self.text is not None)

    @property
    def prompted_prior(self) -> tuple[str, ...]:
        return prompted_prior(self.kind, self.latent_prior)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self) | {"item_shape": list(self.item_shape), "class_names": list(self.class_names),
                                        "latent_prior": list(self.latent_prior), "decoding": list(self.decoding),
                                        "domains": list(self.domains), "item_shape_b": list(self.item_shape_b),
                                        "text": None if self.text is None else self.text.to_dict()}
        if not self.domains:  # a one-domain model's manifest reads as it did before translation models
            del d["domains"], d["item_shape_b"], d["style_dim"]
        if self.text is None:  # and a model without text as before text-conditioned ones
            del d["text"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        """From JSON that check_manifest has passed (unknown keys are refused there too)."""
        return cls(**(d | {"item_shape": tuple(d["item_shape"]), "class_names": tuple(d.get("class_names") or ())}))


@dataclass(frozen=True)
class Manifest:
    gvtool_version: str
    model: ModelInfo                # a dict (as JSON holds it) is turned into one
    pixels: dict | None             # images: {"scale": 127.5, "offset": -1.0}: model = pixel / scale + offset
    source: dict                    # run_dir, checkpoint_sha256, step: where the bundle came from
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    engines: dict[str, EngineEntry] = field(default_factory=dict)
    format: int = FORMAT

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelInfo.from_dict(self.model))

    def graph(self, graph: str, precision: str) -> GraphEntry:
        key = f"{graph}.{precision}"
        if key not in self.graphs:
            raise BadBundleError(f"the bundle has no {graph} graph in {precision}; it has {', '.join(self.graphs) or 'none'}")
        return self.graphs[key]

    def to_dict(self) -> dict:
        return {"format": self.format, "gvtool_version": self.gvtool_version, "model": self.model.to_dict(),
                "pixels": self.pixels, "source": self.source,
                "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
                "engines": {k: e.to_dict() for k, e in self.engines.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(gvtool_version=d["gvtool_version"], model=d["model"], pixels=d.get("pixels"), source=d["source"],
                   graphs={k: GraphEntry.from_dict(g) for k, g in d.get("graphs", {}).items()},
                   engines={k: EngineEntry.from_dict(e) for k, e in d.get("engines", {}).items()},
                   format=d["format"])


def prompted_prior(kind: str, latent_prior: tuple[str, ...]) -> tuple[str, ...]:
    """The graphs between a prompt's embedding and the latents: a joint model's caption expert; for a model whose
    decoder takes the embedding as its condition, its latent prior as without prompts."""
    return (CAPTION_GRAPH,) if kind == "mvae" else latent_prior


def prompt_graphs(kind: str) -> tuple[str, ...]:
    """The graphs a model of `kind` adds to its own when it takes text: the text encoder, and what prompted_prior
    runs beyond the kind's latent prior (a joint model's caption expert)."""
    return (*prompted_prior(kind, ()), TEXT_GRAPH)


def model_graphs(kind: str, text: bool) -> tuple[str, ...]:
    """The graphs a model of `kind` exports (CHAINS), with its prompt graphs when it takes text."""
    return CHAINS[kind].graphs + (prompt_graphs(kind) if text else ())


def cycled_labels(n: int, num_classes: int) -> list[int]:
    """The labels a conditional model gets when none are asked for: 0, 1, ..., num_classes - 1, 0, 1, ... (sample
    grids, benchmarks, calibration and evaluation all draw every class alike this way)."""
    return [i % num_classes for i in range(n)]


def item_name(data_kind: str) -> str:
    """The name of the graphs' item tensor (the encoder's input, the decoder's output)."""
    return "images" if data_kind == "image" else "vectors"


def restyled(codes, style_dim: int, styles=0.0):
    """A translation's codes from the source's posterior means (N, K), numpy or torch, rewritten in place: a model
    with a style code per domain (style_dim > 0: the last style_dim values) keeps the source's content and takes
    `styles` for the target, by default the mean of its prior (0: the target domain's typical style). A model whose
    whole code is shared (style_dim 0) decodes the codes as they are."""
    if style_dim:
        codes[:, codes.shape[1] - style_dim:] = styles
    return codes


def domain_names(data: str, data_b: str) -> tuple[str, str]:
    """A translation model's two domains by name: a data source's own ("mnist", "digits"), a folder's or file's
    name without its path (suffixed "-a" and "-b" when the two are one)."""
    names = [PurePosixPath(d.replace("\\", "/")).name or d for d in (data, data_b)]
    if names[0] == names[1]:
        names = [f"{names[0]}-a", f"{names[1]}-b"]
    return names[0], names[1]


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
    """Read and check a bundle's manifest: known format, well-formed against its schema (check_manifest), every file
    inside the bundle, the manifest itself included."""
    path = Path(bundle) / MANIFEST_FILE
    if not Path(bundle).is_dir():
        raise BadBundleError(f"no bundle at {bundle}: not a folder")
    if not path.is_file():
        raise BadBundleError(f"{bundle} is not a complete bundle: it has no {MANIFEST_FILE} (an export that did not finish?)")
    bundle_path(bundle, MANIFEST_FILE)  # a manifest.json symlinked out of the bundle is not the bundle's
    raw = load_json_bounded(path, "bundle manifest", BadBundleError, MAX_MANIFEST_BYTES)
    version = raw.get("format") if isinstance(raw, dict) else None
    if version != FORMAT:
        raise BadBundleError(f"{path} has manifest format {version!r}; this gvtool reads format {FORMAT}. "
                             "Re-export the bundle with this gvtool, or install the gvtool that wrote it "
                             f"({raw.get('gvtool_version', 'unknown version') if isinstance(raw, dict) else 'unknown'})")
    try:
        check_manifest(raw)
        manifest = Manifest.from_dict(raw)
    except SchemaError as error:
        raise BadBundleError(f"{path} is malformed: {error}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise BadBundleError(f"{path} is malformed: {type(error).__name__} {error}") from None
    wrong_keys = [key for key, entry in manifest.graphs.items() if key != entry.key]
    if wrong_keys:
        raise BadBundleError(f"{path} is malformed: graph keys {wrong_keys} disagree with their entries' graph.precision")
    for entry in [*manifest.graphs.values(), *manifest.engines.values()]:
        bundle_path(bundle, entry.file)
    if manifest.model.text is not None:
        bundle_path(bundle, manifest.model.text.tokenizer_file)
    return manifest


class SchemaError(ValueError):
    """A manifest field of the wrong type or out of range: the message names the field and what it holds."""


def _get(d: dict, key: str, where: str, kinds, required: bool = True):
    if key not in d:
        if required:
            raise SchemaError(f"{where}.{key} is missing")
        return None
    value = d[key]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise SchemaError(f"{where}.{key} must be {names}, got {json.dumps(value)[:60]}")
    return value


def _int(d: dict, key: str, where: str, low: int = 0, high: int | None = None, required: bool = True) -> int | None:
    value = _get(d, key, where, (int,), required)
    if value is not None and (value < low or (high is not None and value > high)):
        raise SchemaError(f"{where}.{key} must be from {low} to {high if high is not None else 'any'}, got {value}")
    return value


def _finite(d: dict, key: str, where: str, positive: bool = False) -> float:
    value = _get(d, key, where, (int, float))
    if not math.isfinite(value) or (positive and value <= 0):
        raise SchemaError(f"{where}.{key} must be a finite{' positive' if positive else ''} number, got {value}")
    return value


def _choice(d: dict, key: str, where: str, choices: tuple, required: bool = True):
    value = _get(d, key, where, (str,), required)
    if value is not None and value not in choices:
        raise SchemaError(f"{where}.{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _sha256(d: dict, key: str, where: str) -> None:
    value = _get(d, key, where, (str,))
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise SchemaError(f"{where}.{key} must be 64 lowercase hex digits, got {value[:70]!r}")


def _tensors(d: dict, key: str, where: str) -> list[dict]:
    specs = _get(d, key, where, (list,))
    for i, spec in enumerate(specs):
        at = f"{where}.{key}[{i}]"
        if not isinstance(spec, dict):
            raise SchemaError(f"{at} must be an object")
        _get(spec, "name", at, (str,))
        _choice(spec, "dtype", at, TENSOR_DTYPES)
        shape = _get(spec, "shape", at, (list,))
        if not shape or shape[0] != BATCH_AXIS or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1 << 16
                                                       for n in shape[1:]):
            raise SchemaError(f"{at}.shape must be [\"batch\", then sizes from 1 to 65536]: only the first (batch) axis "
                              f"may be dynamic, got {json.dumps(shape)[:60]}")
    return specs


def _domains(model: dict, image: bool, latent: int) -> list:
    """A translation model's two named domains, domain B's item shape and the style part of its latent (none for
    every other kind); returns that shape ([] for none)."""
    domains = _get(model, "domains", "model", (list,), required=False) or []
    shape_b = _get(model, "item_shape_b", "model", (list,), required=False) or []
    style = _int(model, "style_dim", "model", 0, latent - 1, required=False)
    if not CHAINS[model["kind"]].translates:
        if domains or shape_b or style:
            raise SchemaError(f"model.domains, model.item_shape_b and model.style_dim are for translation models, "
                              f"not {model['kind']}")
        return []
    if (len(domains) != 2 or not all(isinstance(d, str) and 0 < len(d) <= 200 for d in domains)
            or domains[0] == domains[1]):
        raise SchemaError(f"model.domains must name two different domains, got {json.dumps(domains)[:60]}")
    if (not image or len(shape_b) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape_b)
            or shape_b[0] not in (1, 3) or not all(4 <= n <= 1024 for n in shape_b[1:])):
        raise SchemaError(f"model.item_shape_b must be [channels 1 or 3, height, width] of domain B's images, got "
                          f"{json.dumps(shape_b)[:60]}")
    return shape_b


def _text(model: dict) -> dict | None:
    """A text-conditioned model's prompt block, checked; None for any other model."""
    text = _get(model, "text", "model", (dict, type(None)), required=False)
    if text is None:
        return None
    _int(text, "dim", "model.text", 1, 4096)
    _int(text, "max_tokens", "model.text", 3, 512)
    _get(text, "tokenizer_file", "model.text", (str,))
    _sha256(text, "tokenizer_sha256", "model.text")
    _get(text, "encoder", "model.text", (str,), required=False)
    unknown = set(text) - {f.name for f in dataclasses.fields(TextInfo)}
    if unknown:
        raise SchemaError(f"model.text has unknown keys {sorted(unknown)}")
    return text


def check_manifest(raw: object) -> None:
    """Every field a reader uses, checked for type and range, and the model block against its graphs: the one
    place a manifest's schema is enforced. Raises SchemaError naming the first field that is wrong."""
    if not isinstance(raw, dict):
        raise SchemaError("the manifest must be a JSON object")
    _int(raw, "format", "manifest", FORMAT, FORMAT)
    _get(raw, "gvtool_version", "manifest", (str,))
    model = _get(raw, "model", "manifest", (dict,))
    _choice(model, "kind", "model", MODEL_KINDS)
    conditional = _get(model, "conditional", "model", (bool,))
    classes = _int(model, "num_classes", "model", 0, 1 << 16)
    text = _text(model)
    joint = model["kind"] == "mvae"  # a joint model's caption is a third modality beside its classes
    if text and (not conditional or (classes >= 2) != joint or model["kind"] not in (*TEXT_KINDS, "mvae")):
        raise SchemaError(f"model.text is for conditional {', '.join(TEXT_KINDS)} models without classes and joint "
                          f"(mvae) models with them, not a {'conditional' if conditional else 'unconditional'} "
                          f"{model['kind']} of {classes} classes")
    if (not text or joint) and (conditional != (classes >= 2) or (not conditional and classes)):
        raise SchemaError(f"model.num_classes {classes} does not fit conditional {conditional} (>= 2 when conditional, "
                          "else 0)")
    names = _get(model, "class_names", "model", (list, type(None)), required=False)
    if names is not None and (not all(isinstance(n, str) for n in names) or (names and len(names) != classes)):
        raise SchemaError(f"model.class_names must be {classes} strings or none")
    data_kind = _choice(model, "data_kind", "model", DATA_KINDS)
    shape = _get(model, "item_shape", "model", (list,))
    image = data_kind == "image"
    if (len(shape) != (3 if image else 1) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
            or (image and (shape[0] not in (1, 3) or not all(4 <= n <= 1024 for n in shape[1:])))
            or (not image and not 1 <= shape[0] <= 1 << 16)):
        raise SchemaError(f"model.item_shape must be [channels 1 or 3, height, width] for images or [size] for "
                          f"vectors, got {json.dumps(shape)[:60]}")
    latent = _int(model, "latent_dim", "model", 1, MAX_LATENT_DIM)
    shape_b = _domains(model, image, latent)
    unknown = set(model) - {f.name for f in dataclasses.fields(ModelInfo)}
    if unknown:
        raise SchemaError(f"model has unknown keys {sorted(unknown)}")
    chains = {}
    for name in ("latent_prior", "decoding"):
        chain = _get(model, name, "model", (list,), required=False)
        if chain is not None and (not all(isinstance(g, str) and g in GRAPHS for g in chain) or len(chain) > len(GRAPHS)
                                  or (name == "decoding" and not chain)):
            raise SchemaError(f"model.{name} must be a list of graph names ({', '.join(GRAPHS)}), "
                              f"{'not empty, ' if name == 'decoding' else ''}got {json.dumps(chain)[:60]}")
        chains[name] = chain if chain is not None else list(getattr(CHAINS[model["kind"]], name))
    pixels = _get(raw, "pixels", "manifest", (dict, type(None)), required=False)
    if image:
        if pixels is None:
            raise SchemaError("manifest.pixels is missing: an image model needs its pixel mapping")
        _finite(pixels, "scale", "pixels", positive=True)
        _finite(pixels, "offset", "pixels")
        if _int(pixels, "channels", "pixels", 1, 3, required=False) not in (None, shape[0]):
            raise SchemaError(f"pixels.channels {pixels['channels']} disagrees with model.item_shape {shape}")
    source = _get(raw, "source", "manifest", (dict,))
    _get(source, "run_dir", "source", (str,), required=False)
    _get(source, "data", "source", (str,), required=False)
    _int(source, "step", "source", required=False)
    _get(source, "complete", "source", (bool,), required=False)
    if "checkpoint_sha256" in source:
        _sha256(source, "checkpoint_sha256", "source")
    graphs = _get(raw, "graphs", "manifest", (dict,), required=False) or {}
    for key, entry in graphs.items():
        at = f"graphs[{key!r}]"
        if not isinstance(entry, dict):
            raise SchemaError(f"{at} must be an object")
        _choice(entry, "graph", at, GRAPHS)
        _choice(entry, "precision", at, PRECISIONS)
        _get(entry, "file", at, (str,))
        _sha256(entry, "sha256", at)
        _int(entry, "bytes", at)
        _int(entry, "opset", at, 1, 1000)
        _int(entry, "ir_version", at, 1, 1000)
        inputs, outputs = _tensors(entry, "inputs", at), _tensors(entry, "outputs", at)
        validation = _get(entry, "validation", at, (dict,))
        check = f"{at}.validation"
        for name in ("max_abs_diff", "mean_abs_diff", "tolerance"):
            if _finite(validation, name, check) < 0:
                raise SchemaError(f"{check}.{name} must be >= 0, got {validation[name]}")
        _choice(validation, "metric", check, ("max_abs", "mean_abs", "cosine"))
        if "cosine_gap" in validation and not 0 <= _finite(validation, "cosine_gap", check) <= 2:
            raise SchemaError(f"{check}.cosine_gap must be from 0 to 2, got {validation['cosine_gap']}")
        _get(validation, "passed", check, (bool,))
        sizes = _get(validation, "batch_sizes", check, (list,))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise SchemaError(f"{check}.batch_sizes must be positive integers, got {json.dumps(sizes)[:60]}")
        _get(validation, "inputs", check, (str,), required=False)
        scale = _get(validation, "scale", check, (list,), required=False) or []
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in scale):
            raise SchemaError(f"{check}.scale must be finite positive numbers, got {json.dumps(scale)[:60]}")
        unknown = set(validation) - {f.name for f in dataclasses.fields(Validation)}
        if unknown:
            raise SchemaError(f"{check} has unknown keys {sorted(unknown)}")
        if entry.get("flops_per_item") is not None:  # None: not counted
            _int(entry, "flops_per_item", at)
        for spec in inputs + outputs:  # the tensors that chain graphs together must agree with the model block
            if spec["name"] in ("latents", "mean", "logvar") and spec["shape"][1:] != [latent]:
                raise SchemaError(f"{at} has {spec['name']} of {spec['shape'][1:]}, but model.latent_dim is {latent}")
            if spec["name"] == TEXT_EMBEDDING and (not text or spec["shape"][1:] != [text["dim"]]):
                raise SchemaError(f"{at} has {spec['name']} of {spec['shape'][1:]}, but model.text.dim is "
                                  f"{text['dim'] if text else 'absent'}")
            if spec["name"] in TEXT_INPUTS and (not text or spec["shape"][1:] != [text["max_tokens"]]):
                raise SchemaError(f"{at} has {spec['name']} of {spec['shape'][1:]}, but model.text.max_tokens is "
                                  f"{text['max_tokens'] if text else 'absent'}")
            domain_b = entry["graph"] in DOMAIN_GRAPHS[1]
            if spec["name"] in ("images", "vectors") and spec["shape"][1:] != (shape_b if domain_b else shape):
                raise SchemaError(f"{at} has items of {spec['shape'][1:]}, but model.item_shape"
                                  f"{'_b' if domain_b else ''} is {shape_b if domain_b else shape}")
    present = {entry.get("graph") for entry in graphs.values()}
    if graphs and (TEXT_GRAPH in present) != bool(text):
        raise SchemaError(f"a text-conditioned model has a {TEXT_GRAPH} graph and no other model has one; this "
                          f"bundle's model {'has' if text else 'has no'} model.text")
    for name, chain in chains.items():
        missing = [g for g in chain if g not in present]
        if graphs and missing:
            raise SchemaError(f"model.{name} chains {', '.join(missing)}, which the bundle's graphs lack")
    engines = _get(raw, "engines", "manifest", (dict,), required=False) or {}
    for key, entry in engines.items():
        at = f"engines[{key!r}]"
        if not isinstance(entry, dict):
            raise SchemaError(f"{at} must be an object")
        _get(entry, "graph_key", at, (str,))
        _choice(entry, "precision", at, PRECISIONS)
        _get(entry, "file", at, (str,))
        _sha256(entry, "sha256", at)
        _int(entry, "bytes", at)
        profile = _get(entry, "profile", at, (dict,))
        for name in ("min", "opt", "max"):
            _int(profile, name, f"{at}.profile", 1, 1 << 20)
        for name in ("tensorrt_version", "gpu_name", "compute_capability"):
            _get(entry, name, at, (str,))
        if entry.get("dla_core") is not None:  # None: the GPU
            _int(entry, "dla_core", at, 0, 16)


def _listed_file(bundle: str | os.PathLike, name: str) -> Path:
    """The path of a file the manifest lists, which must be there."""
    path = bundle_path(bundle, name)
    if not path.is_file():
        raise BadBundleError(f"the bundle {bundle} lacks {name}, which its manifest lists")
    return path


def _check_hash(path: Path, actual: str, sha256: str) -> None:
    if actual != sha256:
        raise BadBundleError(f"{path} does not match the manifest (sha256 {actual[:12]}..., expected {sha256[:12]}...): "
                             "the file was changed or damaged after export; re-export the bundle")


def verify_file(bundle: str | os.PathLike, name: str, sha256: str) -> Path:
    """The path of a bundle file whose content still matches the manifest's hash."""
    path = _listed_file(bundle, name)
    _check_hash(path, sha256_file(path), sha256)
    return path


def read_verified(bundle: str | os.PathLike, name: str, sha256: str) -> bytes:
    """The bytes of a bundle file, read once and checked against the manifest's hash: what is checked is what is
    then loaded (no window in which the file could change between the check and the load)."""
    path = _listed_file(bundle, name)
    data = path.read_bytes()
    _check_hash(path, hashlib.sha256(data).hexdigest(), sha256)
    return data


def check_files(bundle: str | os.PathLike, manifest: Manifest) -> dict[str, str]:
    """Every file the manifest lists -> "ok", or what is wrong with it ("missing", "changed since export",
    "outside the bundle"): `gvtool info`'s hash check, which reports every file rather than stopping at the first."""
    states = {}
    files = [*manifest.graphs.values(), *manifest.engines.values()]
    if manifest.model.text is not None:
        files.append(_File(manifest.model.text.tokenizer_file, manifest.model.text.tokenizer_sha256))
    for entry in files:
        try:
            path = bundle_path(bundle, entry.file)
        except BadBundleError:
            states[entry.file] = "outside the bundle"
            continue
        states[entry.file] = ("missing" if not path.is_file() else
                              "ok" if sha256_file(path) == entry.sha256 else "changed since export")
    return states


@dataclass(frozen=True)
class _File:
    file: str
    sha256: str


def write_manifest(bundle: str | os.PathLike, manifest: Manifest) -> None:
    atomic_write_text(Path(bundle) / MANIFEST_FILE, json.dumps(manifest.to_dict(), indent=2) + "\n")
