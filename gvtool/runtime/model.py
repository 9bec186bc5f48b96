"""The runtime's public API: load a bundle once, then sample, encode, decode, reconstruct, interpolate (and, for a
translation model, translate).

Everything is batched: requests larger than a backend takes run in chunks, and the result equals the
unchunked one. Images come back as uint8 (N, H, W, C); vector models give float32 (N, D).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from gvtool.errors import BadBundleError, BadInputError
from gvtool.imaging import convert_channels, fit_square
from gvtool.manifest import (DOMAIN_GRAPHS, LABEL_POSTERIOR, MASK_INPUT, NOISE_INPUTS, TEXT_EMBEDDING, TEXT_GRAPH,
                             TEXT_INPUTS, ModelInfo, cycled_labels, item_name, prompt_graphs, read_manifest,
                             read_verified, restyled)
from gvtool.masks import resolve_masks
from gvtool.prompts import PromptTokenizer, are_prompts
from gvtool.runtime.backends import Choice, open_backend

DEFAULT_CHUNK = 256  # items per call when the backend sets no limit: activations of 256 items stay ~100 MB


def load(bundle: str | Path, backend: str = "auto", device: str = "cpu", precision: str = "fp32",
         graphs: tuple[str, ...] | None = None, operation: str | None = None) -> "GenerativeModel":
    """Read and check the bundle, then create the backend's sessions or engines once.

    `operation` loads what one operation needs (OPERATIONS: "sample" the sampling chain, "encode" the encoder...),
    refusing a bundle that cannot do it with one line naming what it lacks; `graphs` names graphs instead; with
    neither, every graph the bundle has is loaded.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    available = sorted({g.graph for g in manifest.graphs.values()})
    wanted = (graphs_for(manifest.model, operation) if operation is not None else
              list(graphs) if graphs is not None else available)
    missing = [g for g in wanted if g not in available]
    if missing and operation is not None:
        raise BadInputError(f"{bundle} holds a {manifest.model.kind} model, which has no {' or '.join(missing)} "
                            f"graph: it cannot {operation}")
    if missing:
        raise BadInputError(f"{bundle} has no {' or '.join(missing)} graph (a {manifest.model.kind} model has "
                            f"{', '.join(available)})")
    choice = open_backend(bundle, manifest, wanted, backend, device, precision)
    return GenerativeModel(bundle, manifest, choice, precision)


OPERATIONS = ("sample", "decode", "encode", "reconstruct", "interpolate", "translate", "classify", "impute")


def graphs_for(model: ModelInfo, operation: str) -> list[str]:
    """The graphs an operation runs on a model, from its declared chains."""
    text = () if model.text is None else prompt_graphs(model.kind)  # a model that takes text encodes its prompts first
    needs = {"sample": text + model.sampling, "decode": text + model.decoding, "encode": ("encoder",),
             "reconstruct": ("encoder", *text, *model.decoding), "interpolate": ("encoder", *text, *model.sampling),
             "translate": tuple(g for pair in DOMAIN_GRAPHS for g in pair),
             "classify": ("encoder", "classifier"), "impute": ("encoder", "label_encoder", "decoder", *text)}
    if operation not in needs:
        raise BadInputError(f"unknown operation {operation!r}; expected one of {', '.join(OPERATIONS)}")
    return list(dict.fromkeys(needs[operation]))


class Noise:
    """The seeded noise a chain draws: one stream per input name, so that drawing in chunks gives the values drawn
    at once, and a model's latents are the same whatever other noise its chain draws. "latents" come from
    default_rng(seed), the stream every bundle has sampled its latents from; another name from
    default_rng([seed, i]), i its place in NOISE_INPUTS. `shared` draws one row per name and repeats it (an
    interpolation keeps one detail along its path)."""

    def __init__(self, seed: int | None, temperature: float = 1.0, shared: bool = False):
        self.seed = seed if seed is not None else np.random.SeedSequence().entropy
        self.temperature, self.shared = temperature, shared
        self.streams: dict[str, np.random.Generator] = {}
        self.rows: dict[str, np.ndarray] = {}

    def __call__(self, name: str, n: int, shape: tuple[int, ...]) -> np.ndarray:
        if name not in NOISE_INPUTS:
            raise BadBundleError(f"a graph takes {name!r}, which no graph before it gives and which is not noise")
        if name not in self.streams:
            index = NOISE_INPUTS.index(name)
            self.streams[name] = np.random.default_rng(self.seed if index == 0 else [self.seed, index])
        if self.shared:
            if name not in self.rows:
                self.rows[name] = self._draw(name, 1, shape)
            return np.repeat(self.rows[name], n, axis=0)
        return self._draw(name, n, shape)

    def _draw(self, name: str, n: int, shape: tuple[int, ...]) -> np.ndarray:
        return (self.streams[name].standard_normal((n, *shape)) * self.temperature).astype(np.float32)


def combine_posteriors(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """A joint model's product of experts, across two graphs: the posteriors (mean, logvar) given two modalities, each
    the N(0, I) prior times that modality's expert, -> the posterior given both. Precisions add, less the prior's
    counted twice (1); the mean is precision-weighted (the prior's mean is 0)."""
    (mean_a, logvar_a), (mean_b, logvar_b) = ((m.astype(np.float64), v.astype(np.float64)) for m, v in (a, b))
    precision_a, precision_b = np.exp(-logvar_a), np.exp(-logvar_b)
    precision = precision_a + precision_b - 1.0
    mean = (mean_a * precision_a + mean_b * precision_b) / precision
    return mean.astype(np.float32), (-np.log(precision)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between rows a and b (K,) at fractions t (T,) -> (T, K).

    Gaussian latents concentrate near a sphere of radius sqrt(K): slerp stays near it, where the
    decoder was trained; lerp passes through the low-norm middle. Falls back to lerp when a and b
    are (anti)parallel.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    t = t[:, None]
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)).astype(np.float32)


class GenerativeModel:
    """A loaded bundle. Sampling runs the model's declared chains (manifest.CHAINS): the latent prior's graphs (a
    prior model's "prior"; none: N(0, I) latents), then the decoding graphs (the decoder; hier's coarse and detail
    stages); the graphs are wired by their tensors' names, and every input no graph gives is drawn as noise."""

    def __init__(self, bundle: Path, manifest, choice: Choice, precision: str = "fp32"):
        self.bundle, self.manifest, self.choice = bundle, manifest, choice
        m = manifest.model
        self.kind, self.conditional, self.num_classes = m.kind, m.conditional, m.num_classes
        self.latent_dim, self.item_shape, self.is_image = m.latent_dim, m.item_shape, m.is_image
        self.latent_prior, self.decoding = m.latent_prior, m.decoding
        self.domains = m.domains  # a translation model's two domains, A first; () for every other model
        self._info = m
        self.text = m.text  # a text-conditioned model's prompts (manifest.TextInfo); None for every other model
        self._tokenizer = None
        self._pixels = manifest.pixels
        self._entries = {graph: manifest.graph(graph, precision) for graph in choice.runners}
        self._item = item_name(m.data_kind)

    @property
    def description(self) -> str:
        """What runs and why: the backend, the device, the precision."""
        return self.choice.reason

    def close(self) -> None:
        for runner in self.choice.runners.values():
            getattr(runner, "close", lambda: None)()

    def __enter__(self) -> "GenerativeModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- sampling ------------------------------------------------------------------------------

    def sample_latents(self, n: int, seed: int | None = None, temperature: float = 1.0, labels=None) -> np.ndarray:
        """n latents as the model samples them, float32 (n, K): N(0, temperature^2 I), or through the model's latent
        prior (a prior model's second VAE) from noise of that temperature. The same seed gives the same latents."""
        _check_count(n)
        _check_temperature(temperature)
        noise = Noise(seed, temperature)
        labels = self._labels(labels, n) if labels is not None or self.latent_prior else None
        prior = self._prior(labels)
        if not prior:
            return noise("latents", n, (self.latent_dim,))
        return self._chain(prior, self._with_labels({}, labels), n, noise)["latents"]

    def sample(self, n: int, seed: int | None = None, labels=None, temperature: float = 1.0) -> np.ndarray:
        """n items from the sampling chain. Conditional models: `labels` is one class for all, or (n,) classes;
        None cycles through the classes. A text-conditioned model's labels are prompts: one string for all, or n
        strings; a joint model with captions takes either. `temperature` scales every noise the chain draws."""
        return next(self.sample_chunks(n, seed, labels, temperature, chunk=n))

    def sample_chunks(self, n: int, seed: int | None = None, labels=None, temperature: float = 1.0,
                      chunk: int | None = None) -> Iterator[np.ndarray]:
        """sample(n, ...) in pieces of at most `chunk` items, for streaming: the concatenation equals
        sample(n, ...) with the same arguments, while memory stays bounded by the chunk."""
        _check_count(n)
        _check_temperature(temperature)
        chunk = DEFAULT_CHUNK if chunk is None else chunk
        if chunk < 1:
            raise BadInputError(f"chunk must be >= 1, got {chunk}")
        labels = self._labels(labels, n)
        chain = self._prior(labels) + self.decoding
        self._need(chain, "sample")
        noise = Noise(seed, temperature)  # one stream per noise input: chunks draw what one call would
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            values = self._with_labels({}, None if labels is None else labels[start:start + size])
            yield self._to_items(self._chain(chain, values, size, noise)[self._item])

    # --- decoding and encoding -----------------------------------------------------------------

    def decode(self, latents, labels=None, seed: int | None = None) -> np.ndarray:
        """latents (N, K) [+ labels] -> items: uint8 images (N, H, W, C) or float32 vectors (N, D). A model whose
        decoding draws noise of its own (hier's detail stage) draws it with `seed`."""
        return self._decode(latents, labels, Noise(seed))

    def _decode(self, latents, labels, noise: Noise) -> np.ndarray:
        z = np.asarray(latents)
        if z.dtype.kind not in "biuf":
            raise BadInputError(f"latents must be numbers, got an array of {z.dtype}")
        z = z.astype(np.float32, copy=False)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] == 0:
            raise BadInputError(f"latents have shape {z.shape}, expected (N, {self.latent_dim}) with N >= 1")
        if not np.isfinite(z).all():
            raise BadInputError(f"latents hold {int((~np.isfinite(z)).sum())} NaN or infinite values")
        self._need(self.decoding, "decode")
        values = self._with_labels({"latents": z}, self._labels(labels, len(z)))
        return self._to_items(self._chain(self.decoding, values, len(z), noise)[self._item])

    def encode(self, items, return_logvar: bool = False):
        """items -> posterior means (N, K) float32, and log-variances with return_logvar. (A joint model's encoder sees
        them whole.)"""
        mean, logvar = self._encode(self._to_model(items))
        return (mean, logvar) if return_logvar else mean

    def _encode(self, x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Model-range items -> the encoder's (mean, logvar); a joint model's encoder also takes the mask of observed
        pixels, (N, 1, H, W) as _observed resolved it (None: all observed)."""
        feeds = {self._item: x}
        entry = self._entries.get("encoder")  # a model without one is refused by _run, as before
        if entry is not None and any(spec.name == MASK_INPUT for spec in entry.inputs):
            feeds[MASK_INPUT] = np.ones((len(x), 1, *self.item_shape[1:]), np.float32) if mask is None else mask
        mean, logvar = self._run("encoder", feeds)
        return mean, logvar

    def reconstruct(self, items, labels=None, seed: int | None = 0) -> np.ndarray:
        """Decode the posterior means of items: what the model keeps of them (noise its decoding draws: `seed`)."""
        return self.decode(self.encode(items), labels, seed)

    def interpolate(self, a, b, steps: int = 8, method: str = "slerp", label=None) -> np.ndarray:
        """steps items from a to b (both included). a and b are latents (K,), integer seeds, or items
        (an image (H, W[, C]) or a vector (D,)) that are encoded first."""
        if steps < 2:
            raise BadInputError(f"steps must be >= 2 (both ends included), got {steps}")
        if method not in ("slerp", "lerp"):
            raise BadInputError(f"unknown interpolation method {method!r}; expected slerp or lerp")
        za, zb = self._endpoint(a), self._endpoint(b)
        t = np.linspace(0.0, 1.0, steps)
        path = slerp(za, zb, t) if method == "slerp" else ((1 - t[:, None]) * za + t[:, None] * zb).astype(np.float32)
        # One draw of any noise the decoding takes, repeated along the path: the path alone changes
        condition = None if label is None else label if isinstance(label, str) else np.full(steps, label)  # a prompt
        return self._decode(path, condition, Noise(0, shared=True))

    # --- translation ---------------------------------------------------------------------------

    def domain(self, name) -> int:
        """A translation model's domain by its name in the manifest (e.g. "digits"), by "a" or "b", or by 0 or 1."""
        if not self.domains:
            raise BadInputError(f"this {self.kind} model does not translate: it models one domain")
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and name in (0, 1):
            return int(name)
        if isinstance(name, str):
            for index, domain in enumerate(self.domains):
                if name == domain or name.lower() == "ab"[index]:
                    return index
        raise BadInputError(f"unknown domain {name!r}: this model translates between {self.domains[0]} (a) and "
                            f"{self.domains[1]} (b)")

    def translate(self, images, to, style_seed: int | None = None) -> np.ndarray:
        """Images of one domain -> the same images in the other domain `to` (see domain()), uint8 (N, H, W, C) at the
        target domain's channels: each image is encoded by its domain's encoder (the posterior mean) and decoded by
        the target domain's decoder. Images of any size are fitted to the source domain's, as encode() does.

        A model with a style code per domain (manifest model.style_dim > 0) keeps each image's content and gives it
        the target domain's typical style (its prior's mean), or with `style_seed` a style drawn from that prior for
        each image (seeded: the same seed, the same styles)."""
        target = self.domain(to)
        source = 1 - target
        encoder, decoder = DOMAIN_GRAPHS[source][0], DOMAIN_GRAPHS[target][1]
        self._need((encoder, decoder), "translate")
        style_dim = self._info.style_dim
        if style_seed is not None and not style_dim:
            raise BadInputError("this model has no style code to draw (its whole code is shared between the domains: "
                                "--style-dim 0): its translations are one per image")
        x = self._to_model(images, source)
        mean, _ = self._run(encoder, {self._item: x})
        styles = 0.0 if style_seed is None else (
            np.random.default_rng(style_seed).standard_normal((len(mean), style_dim)).astype(np.float32))
        (out,) = self._run(decoder, {"latents": restyled(mean, style_dim, styles)})
        return self._to_items(out)

    # --- imputation: a joint model of images and labels --------------------------------------

    def classify(self, images, mask=None, missing: float = 0.5, seed: int = 0) -> np.ndarray:
        """Images -> class probabilities float32 (N, classes): the label decoded from the posterior mean given the
        pixels observed. `mask` (masks.resolve_masks): None for whole images, a kind ("top", ... hiding `missing` of
        each; "random" drawn with `seed`), a mask image's path or a 0/1 array, 1 observed."""
        x, mask = self._observed(images, mask, missing, seed, "classify")
        mean, _ = self._encode(x, mask)
        (logits,) = self._run("classifier", {"latents": mean})
        return softmax(logits)

    def impute(self, images, mask="top", labels=None, n: int = 1, missing: float = 0.5, seed: int = 0,
               temperature: float = 1.0) -> np.ndarray:
        """n completions of each partly observed image -> uint8 (N, n, H, W, C): the observed pixels as given, the
        missing ones decoded from latents drawn (seeded) from the posterior given what is observed: the pixels, and
        the label too when `labels` (one class for all, or one per image; a joint model with captions takes prompts
        too) is given. Where the visible part is ambiguous, the completions differ. `temperature` scales the draws
        (0: the posterior mean, one completion repeated). `mask` as classify takes it."""
        _check_count(n)
        if not temperature >= 0:
            raise BadInputError(f"temperature must be >= 0, got {temperature}")
        x, mask = self._observed(images, mask, missing, seed, "impute")
        mean, logvar = self._encode(x, mask)
        if labels is not None:
            labels = self._labels(labels, len(x))
            values = self._chain(self._prior(labels), self._with_labels({"latent_noise": np.zeros_like(mean)}, labels),
                                 len(x), Noise(seed))
            mean, logvar = combine_posteriors((mean, logvar), tuple(values[name] for name in LABEL_POSTERIOR))
        draws = np.random.default_rng(seed).standard_normal((len(x), n, self.latent_dim)) * temperature
        z = (mean[:, None] + np.exp(0.5 * logvar)[:, None] * draws).astype(np.float32).reshape(-1, self.latent_dim)
        (decoded,) = self._run("decoder", {"latents": z})
        decoded = decoded.reshape(len(x), n, *self.item_shape)
        completed = x[:, None] * mask[:, None] + decoded * (1 - mask[:, None])
        return self._to_items(completed.reshape(-1, *self.item_shape)).reshape(len(x), n, *self.item_shape[1:],
                                                                                self.item_shape[0])

    def _observed(self, images, mask, missing: float, seed: int, operation: str) -> tuple[np.ndarray, np.ndarray]:
        """A joint model's images in model range and their masks (N, 1, H, W), 1 observed."""
        if self.kind != "mvae":
            raise BadInputError(f"this {self.kind} model cannot {operation}: that takes a joint model of images and "
                                "labels (gvtool train --model mvae)")
        x = self._to_model(images)
        return x, resolve_masks(mask, len(x), self.item_shape[1], missing, seed)

    # --- helpers -------------------------------------------------------------------------------

    def _endpoint(self, value) -> np.ndarray:
        """An interpolation end as a latent (K,): an int is a seed, a uint8 array an image to encode,
        a float (K,) array a latent, and (vector models) another float (D,) array an item to encode."""
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return self.sample_latents(1, seed=int(value))[0]
        array = np.asarray(value)
        if array.dtype == np.uint8 and self.is_image:
            return self.encode(array[None])[0]
        if array.shape == (self.latent_dim,) and array.dtype.kind == "f":
            z = array.astype(np.float32)
            if not np.isfinite(z).all():
                raise BadInputError("an interpolation end holds NaN or infinite values")
            return z
        if not self.is_image and array.shape == self.item_shape:
            return self.encode(array[None])[0]
        raise BadInputError(f"an interpolation end must be a seed, a latent of shape ({self.latent_dim},) or "
                            f"{'a uint8 image' if self.is_image else f'an item of shape {self.item_shape}'}; "
                            f"got {array.dtype} {array.shape}")

    def _labels(self, labels, n: int) -> np.ndarray | None:
        """What a conditional model's graphs take for n items: int64 labels, or a text-conditioned model's prompt
        embeddings (n, dim); None for an unconditional model."""
        if not self.conditional:
            if labels is not None:
                raise BadInputError("this model is unconditional: it takes no labels")
            return None
        if self.text is not None and (not self.num_classes or are_prompts(labels)):
            return self._prompt_embeddings(labels, n)
        if labels is None:
            return np.array(cycled_labels(n, self.num_classes), dtype=np.int64)
        array = np.asarray(labels)
        if array.dtype.kind not in "iu":
            raise BadInputError(f"labels must be integers, got {array.dtype}")
        array = np.broadcast_to(array.astype(np.int64), (n,)) if array.ndim == 0 else array.astype(np.int64)
        if array.shape != (n,):
            raise BadInputError(f"got {array.shape[0]} labels for {n} items")
        bad = array[(array < 0) | (array >= self.num_classes)]
        if bad.size:
            raise BadInputError(f"label {int(bad[0])} is out of range: this model has classes 0 to {self.num_classes - 1}")
        return np.ascontiguousarray(array)

    def _prompt_embeddings(self, prompts, n: int) -> np.ndarray:
        if prompts is None:
            raise BadInputError("this model is text-conditioned: give a prompt (e.g. --prompt \"a thin 4\")")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadInputError("a text-conditioned model takes prompts as strings")
        if len(prompts) not in (1, n):
            raise BadInputError(f"got {len(prompts)} prompts for {n} items; give one for all or one per item")
        distinct = list(dict.fromkeys(prompts))
        table = self.embed_prompts(distinct)
        where = {p: i for i, p in enumerate(distinct)}
        return table[[where[p] for p in (prompts if len(prompts) == n else prompts * n)]]

    def embed_prompts(self, prompts: list[str]) -> np.ndarray:
        """A text-conditioned model's prompts -> their sentence embeddings, float32 (P, dim), through the bundle's
        tokenizer and text encoder graph. A bad prompt (empty, too long, not in Latin letters) is refused."""
        if self.text is None:
            raise BadInputError(f"this {self.kind} model takes no prompts (it is not text-conditioned)")
        self._need((TEXT_GRAPH,), "embed prompts")
        if self._tokenizer is None:
            data = read_verified(self.bundle, self.text.tokenizer_file, self.text.tokenizer_sha256)
            self._tokenizer = PromptTokenizer(self.bundle / self.text.tokenizer_file, data.decode("utf-8"))
        ids, mask = self._tokenizer.encode(list(prompts), length=self.text.max_tokens)
        return self._run(TEXT_GRAPH, dict(zip(TEXT_INPUTS, (ids, mask))))[0].astype(np.float32, copy=False)

    def _with_labels(self, values: dict, labels: np.ndarray | None) -> dict:
        """`values` with what _labels gave: int64 labels, or prompts' float32 embeddings."""
        if labels is None:
            return values
        return values | {TEXT_EMBEDDING if labels.dtype.kind == "f" else "labels": labels}

    def _prior(self, labels: np.ndarray | None) -> tuple[str, ...]:
        """The graphs that draw the latents for these conditions: prompts' embeddings go through a joint model's
        caption expert, labels through its label expert (the latent prior the chains declare)."""
        return self._info.prompted_prior if labels is not None and labels.dtype.kind == "f" else self.latent_prior

    def _need(self, chain: tuple[str, ...], operation: str) -> None:
        missing = [g for g in chain if g not in self.choice.runners]
        if missing:
            raise BadInputError(f"{operation} runs {' -> '.join(chain)}, and the {' and '.join(missing)} graph was not "
                                f"loaded (load(operation={operation!r}) loads what it needs)")

    def _chain(self, chain: tuple[str, ...], values: dict[str, np.ndarray], n: int, noise: Noise) -> dict:
        """Run the graphs of `chain` in order on `values` (by tensor name), drawing what no graph gives as noise."""
        values = dict(values)
        for graph in chain:
            entry = self._entries[graph]
            feeds = {}
            for spec in entry.inputs:
                if spec.name not in values:
                    values[spec.name] = noise(spec.name, n, tuple(spec.shape[1:]))
                feeds[spec.name] = values[spec.name]
            values.update(zip((spec.name for spec in entry.outputs), self._run(graph, feeds)))
        return values

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a graph over any batch, in chunks of at most the runner's max batch."""
        runner = self.choice.runners.get(graph)
        if runner is None:
            raise BadInputError(f"the {graph} graph was not loaded (a {self.kind} model, or load(graphs=...) left it out)")
        n = len(next(iter(feeds.values())))
        step = runner.max_batch or DEFAULT_CHUNK
        if n <= step:
            return runner.run(feeds)
        parts = [runner.run({k: v[i:i + step] for k, v in feeds.items()}) for i in range(0, n, step)]
        return [np.concatenate(outputs) for outputs in zip(*parts)]

    def _to_items(self, out: np.ndarray) -> np.ndarray:
        if not self.is_image:
            return out.astype(np.float32, copy=False)
        p = self._pixels
        pixels = np.rint((out.astype(np.float32) - p["offset"]) * p["scale"])
        return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)

    def _to_model(self, items, domain: int = 0) -> np.ndarray:
        """Items as the encoder (of `domain`, for a translation model) takes them: float32 (N, C, H, W) in model
        range, or (N, D) vectors."""
        if not self.is_image:
            x = np.asarray(items, dtype=np.float32)
            if x.ndim != 2 or x.shape[1:] != self.item_shape or len(x) == 0:
                raise BadInputError(f"vectors have shape {x.shape}, expected (N, {self.item_shape[0]}) with N >= 1")
            if not np.isfinite(x).all():
                raise BadInputError("vectors hold NaN or infinite values")
            return x
        fitted = self.fit_images(items, domain)  # (N, H, W, C) uint8
        p = self._pixels
        return (fitted.transpose(0, 3, 1, 2).astype(np.float32) / p["scale"] + p["offset"]).astype(np.float32)

    def fit_images(self, images, domain: int = 0) -> np.ndarray:
        """Images (a (N, H, W[, C]) array or a list of arrays of any size) as the model (the encoder of a translation
        model's `domain`) takes them: uint8 (N, H, W, C) at its size and colour mode; a conversion is warned about
        once per call."""
        images = [np.asarray(im) for im in images] if isinstance(images, (list, tuple)) else list(np.asarray(images))
        if not images:
            raise BadInputError("no images given")
        shape = self._info.item_shape_of(domain)
        c, h, w = shape
        native = {(h, w, c)} | ({(h, w)} if c == 1 else set())  # a grey (H, W) array needs no conversion
        converted = sum(im.shape not in native for im in images)
        fitted = [self._fit(im, shape) for im in images]
        if converted:
            warnings.warn(f"{converted} image(s) converted to the model's {shape[1:] + shape[:1]} "
                          "(centre crop, resize, colour mode)", stacklevel=3)
        return np.stack(fitted)

    def _fit(self, image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        c, h, w = shape
        if image.dtype != np.uint8:
            raise BadInputError(f"images must be uint8 pixels 0..255, got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise BadInputError(f"an image has shape {image.shape}, expected (H, W) or (H, W, C) with C in 1, 3, 4")
        if image.shape == (h, w, c):
            return image
        from PIL import Image  # only when converting

        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        return fit_square(convert_channels(pil, c), h)


def _check_temperature(temperature) -> None:
    if not temperature > 0:
        raise BadInputError(f"temperature must be > 0, got {temperature}")


def _check_count(n) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise BadInputError(f"the number of items must be a positive integer, got {n!r}")
