"""`gvtool eval TARGET`: mode coverage and sample quality of a run (torch) or a bundle (runtime, any precision).

Both kinds of target are wrapped in the same small interface (sample, reconstruct), so one code
path measures a checkpoint and its fp16 or int8 export alike: the quality cost of a precision is
measured exactly like a model's quality.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gvtool.errors import BadInputError
from gvtool.eval import metrics
from gvtool.eval.copies import copy_check
from gvtool.eval.evaluator import load_evaluator, predict, save_evaluator, train_evaluator
from gvtool.eval.imputation import imputation_metrics
from gvtool.manifest import (CHAINS, TEXT_EMBEDDING, cycled_labels, domain_names, is_bundle, item_name,
                             prompted_prior, read_manifest)
from gvtool.prompts import are_prompts
from gvtool.train.captions import BUILTIN, bands, captions, measure
from gvtool.train.loop import load_data
from gvtool.train.text import embed_captions
from gvtool.train import rundir
from gvtool.train.config import TrainConfig
from gvtool.train.data import (BUILTIN_IMAGES, MIXTURES, PIXEL_SCALE, STACKED_MNIST, load_dataset, mixture_centres,
                               split, to_model, to_uint8)

EVALUATORS = Path("evaluators")  # trained evaluator classifiers, cached by data source and image size
DEFAULT_N = {"vector": 2_500, "image": 2_000}  # 2,500: the VEEGAN/PacGAN protocol; 2,000 images > 128 features for FD
STACKED_SAMPLES = 10_000  # samples for Stacked MNIST's 1,000 modes: a uniform generator covers all but ~0.05 of them
RECONSTRUCTION_SEED = 0  # the noise a model's decoding draws of its own (hier's detail) when it reconstructs
PRDC_MAX = 2_000    # precision/recall/density/coverage on at most this many samples: its k-NN is quadratic in memory


@dataclasses.dataclass(frozen=True)
class Target:
    """What is evaluated: a sampling chain and, for the models with an encoder, reconstruction through it."""

    name: str
    kind: str                      # "run" or "bundle"
    precision: str
    config: TrainConfig            # the run's config (data source, split, image size)
    # (n, seed[, prompts]) -> uint8 (N, C, H, W) images or float (N, D); a text-conditioned model's take n prompts
    sample: Callable[..., np.ndarray]
    reconstruct: Callable[..., np.ndarray] | None  # items [, labels or prompts] -> reconstructions, same layout
    # a translation model's: uint8 (N, C, H, W) images of one domain -> the other domain's (the int: 0 A, 1 B)
    translate: Callable[[np.ndarray, int], np.ndarray] | None = None
    # a joint model's: (uint8 images (N, C, H, W), masks (N, 1, H, W)) -> class probabilities (N, classes)
    classify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # and (images, masks, n, seed) -> n completions of each, uint8 (N, n, C, H, W), the observed pixels kept
    impute: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray] | None = None


def open_target(target: Path, precision: str = "fp32") -> Target:
    target = Path(target)
    if is_bundle(target):
        return _bundle_target(target, precision)
    if (target / rundir.CHECKPOINT_FILE).is_file():
        if precision != "fp32":
            raise BadInputError(f"{target} is a run: it evaluates in fp32; export it and evaluate the bundle for "
                                f"{precision}")
        return _run_target(target)
    raise BadInputError(f"{target} is neither a bundle (manifest.json) nor a run (checkpoint.safetensors)")


def _run_target(run_dir: Path) -> Target:
    from gvtool.runtime.model import Noise
    from gvtool.train.graphs import graph_modules, run_chain, translate as translate_run
    from gvtool.train.trained import load_run

    run = load_run(run_dir)
    cfg = run.config.model
    graphs, chains, item = graph_modules(cfg, run.nets), CHAINS[cfg.kind], item_name(cfg.data_kind)

    def drawn(noise: Noise):
        # The runtime's noise: a run and its bundle are fed the same, so their difference is the export's and the
        # precision's alone.
        return lambda name, n, shape: torch.from_numpy(noise(name, n, shape))

    def finished(out: torch.Tensor) -> np.ndarray:
        return to_uint8(out).numpy() if cfg.data_kind == "image" else out.numpy()

    @torch.no_grad()
    def conditions(n: int, labels=None) -> dict:
        """The condition values for n items: labels (given, or cycled), or prompts embedded (a text-conditioned
        model's, and a joint model's with captions)."""
        if not cfg.conditional:
            return {}
        if cfg.text_dim and (are_prompts(labels) or not cfg.num_classes):
            if labels is None:
                raise BadInputError("a text-conditioned model needs prompts")
            return {TEXT_EMBEDDING: embed_captions(tuple((p,) for p in labels), torch.device("cpu"))[:, 0]}
        return {"labels": torch.tensor(cycled_labels(n, cfg.num_classes) if labels is None else labels)}

    @torch.no_grad()
    def sample(n: int, seed: int, prompts: list[str] | None = None) -> np.ndarray:
        prior = chains.latent_prior if prompts is None else prompted_prior(cfg.kind, chains.latent_prior)
        return finished(run_chain(graphs, prior + chains.decoding, conditions(n, prompts), n, drawn(Noise(seed)))[item])

    @torch.no_grad()
    def reconstruct(items: np.ndarray, labels=None) -> np.ndarray:
        x = torch.from_numpy(items)
        x = to_model(x) if cfg.data_kind == "image" else x
        mean, _ = run.nets["encoder"](x)
        values = {"latents": mean} | ({} if labels is None else conditions(len(x), labels))
        return finished(run_chain(graphs, chains.decoding, values, len(x), drawn(Noise(RECONSTRUCTION_SEED)))[item])

    @torch.no_grad()
    def translate(images: np.ndarray, target: int) -> np.ndarray:
        return finished(translate_run(graphs, to_model(torch.from_numpy(images)), target, cfg.style_dim))

    @torch.no_grad()
    def classify(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        mean, _ = graphs["encoder"](to_model(torch.from_numpy(images)), torch.from_numpy(masks))
        return torch.softmax(graphs["classifier"](mean).double(), dim=1).float().numpy()

    @torch.no_grad()
    def impute(images: np.ndarray, masks: np.ndarray, n: int, seed: int) -> np.ndarray:
        x, m = to_model(torch.from_numpy(images)), torch.from_numpy(masks)
        mean, logvar = graphs["encoder"](x, m)
        draws = torch.from_numpy(np.random.default_rng(seed).standard_normal((len(x), n, cfg.latent_dim)).astype(np.float32))
        z = (mean[:, None] + (0.5 * logvar).exp()[:, None] * draws).reshape(-1, cfg.latent_dim)
        decoded = graphs["decoder"](z).view(len(x), n, *cfg.item_shape)
        completed = x[:, None] * m[:, None] + decoded * (1 - m[:, None])
        return to_uint8(completed.flatten(0, 1)).view(len(x), n, *cfg.item_shape).numpy()

    joint = cfg.kind == "mvae"
    return Target(str(run_dir), "run", "fp32", run.config, sample, reconstruct if chains.has_encoder else None,
                  translate if chains.translates else None, classify if joint else None, impute if joint else None)


def _bundle_target(bundle: Path, precision: str) -> Target:
    from gvtool.runtime.model import load

    manifest = read_manifest(bundle)
    run_config = Path(manifest.source.get("run_dir", "")) / rundir.CONFIG_FILE
    if not run_config.is_file():
        raise BadInputError(f"{bundle} came from {manifest.source.get('run_dir')}, which is not on this machine: "
                            "eval needs that run's config.json for the data split")
    config = TrainConfig.from_file(run_config)
    model = load(bundle, backend="onnxruntime", device="cpu", precision=precision)
    image = model.is_image

    def sample(n: int, seed: int, prompts: list[str] | None = None) -> np.ndarray:
        items = model.sample(n, seed=seed, labels=prompts)
        return np.ascontiguousarray(items.transpose(0, 3, 1, 2)) if image else items

    def reconstruct(items: np.ndarray, labels=None) -> np.ndarray:
        inputs = items.transpose(0, 2, 3, 1) if image else items
        out = model.decode(model.encode(inputs), labels, seed=RECONSTRUCTION_SEED)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if image else out

    def translate(images: np.ndarray, target: int) -> np.ndarray:
        return np.ascontiguousarray(model.translate(images.transpose(0, 2, 3, 1), target).transpose(0, 3, 1, 2))

    def classify(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return model.classify(images.transpose(0, 2, 3, 1), masks)

    def impute(images: np.ndarray, masks: np.ndarray, n: int, seed: int) -> np.ndarray:
        return np.ascontiguousarray(model.impute(images.transpose(0, 2, 3, 1), masks, n=n, seed=seed)
                                    .transpose(0, 1, 4, 2, 3))

    has_encoder = any(g.graph == "encoder" for g in manifest.graphs.values())
    joint = manifest.model.kind == "mvae"
    return Target(str(bundle), "bundle", precision, config, sample, reconstruct if has_encoder else None,
                  translate if manifest.model.domains else None, classify if joint else None,
                  impute if joint else None)


def evaluate(target: Path, *, data_source: str | None = None, n: int | None = None, precision: str = "fp32",
             seed: int = 0, log: Callable[[str], None] = lambda line: None, data_b_source: str | None = None) -> dict:
    """All metrics that apply to the target's data, as a JSON-ready dict. `data_source` replaces the data
    the run was trained on (e.g. the same .npz moved elsewhere), `data_b_source` a translation model's domain B."""
    t = open_target(target, precision)
    config = t.config if data_source is None else t.config.replace(data=data_source)
    if data_b_source is not None:
        if t.translate is None:
            raise BadInputError(f"--data-b is a translation model's domain B; {t.name} holds a {config.model.kind} model")
        config = config.replace(data_b=data_b_source)
    data, data_b = load_data(config)  # as training loaded it: a text model's captions, a translation model's domain B
    train_set, held_out = split(data, config.val_fraction, config.split_seed)
    n = n or (STACKED_SAMPLES if config.data == STACKED_MNIST else DEFAULT_N[data.kind])
    if n < 10:
        raise BadInputError(f"--n must be >= 10 for the metrics to mean anything, got {n}")
    result = {"target": t.name, "kind": t.kind, "precision": t.precision, "model": config.model.kind,
              "data": config.data, "n": n, "seed": seed}
    prompts = _held_out_prompts(config, held_out, seed) if config.model.text_dim else None
    fake = t.sample(n, seed) if prompts is None else t.sample(n, seed, [prompts[i % len(prompts)] for i in range(n)])
    if data.kind == "vector":
        if config.data in MIXTURES:
            centres, std = mixture_centres(config.data)
            result["mode_coverage"] = dataclasses.asdict(metrics.mode_coverage(fake, centres, std))
    else:
        result |= _image_metrics(data, train_set, held_out, fake, config, log)
        if len(held_out) >= 4:
            result["copies"] = dataclasses.asdict(copy_check(_pixels(train_set.x), _pixels(held_out.x),
                                                             _pixels(fake[:PRDC_MAX])))
    if prompts is not None:
        result["text"] = _text_metrics(fake, prompts, data, held_out, config, log)
    if t.reconstruct is not None and len(held_out):
        labels = (prompts if prompts is not None else held_out.y.numpy() if config.model.conditional else None)
        rebuilt = t.reconstruct(held_out.x.numpy(), labels)
        real = held_out.x.numpy().astype(np.float64)
        scale = PIXEL_SCALE if data.kind == "image" else 1.0  # report on the model's scale, as training does
        result["held_out_recon_mse"] = float(np.mean(((rebuilt.astype(np.float64) - real) / scale) ** 2))
    if t.translate is not None:
        result["translation"] = _translation_metrics(t, config, data, data_b, (train_set, held_out), log)
    if t.impute is not None:
        evaluator, meta = _evaluator(data, config, log)
        from_labels = fake if prompts is None else t.sample(n, seed)  # image from label: samples of cycled classes
        result["imputation"] = imputation_metrics(t.classify, t.impute, from_labels, (train_set, held_out),
                                                  config.model.num_classes, seed, evaluator, meta)
    return result


def _translation_metrics(t: Target, config: TrainConfig, data, data_b, data_split: tuple, log) -> dict:
    """Both directions of a translation model on each domain's held-out images: the share whose translation the
    target domain's evaluator classifies as the source image's label ("class kept"), the translations' FD and
    precision/recall/density/coverage against the target domain's training images (in that evaluator's features),
    and the cycle error: the mean squared difference (model range) between an image and its translation translated
    back. Beside them, the target domain's held-out real images in the translations' place (FD, PRDC)."""
    domains = [(config.data, *data_split),  # domain A as evaluate() split it
               (config.data_b, *split(data_b, config.val_fraction, config.split_seed))]
    if any(held.y is None for _, _, held in domains):
        raise BadInputError("translation metrics need labelled domains (to check that a digit keeps its class); "
                            f"{' or '.join(name for name, _, held in domains if held.y is None)} has no labels")
    result, names = {}, domain_names(config.data, config.data_b)
    for source in (0, 1):
        target = 1 - source
        (_, _, held), (target_source, train_t, held_t) = domains[source], domains[target]
        evaluator, meta = _evaluator(data if target == 0 else data_b, config.replace(data=target_source), log)
        translated = t.translate(held.x.numpy(), target)
        probs, features = predict(evaluator, torch.from_numpy(translated))
        _, train_features = predict(evaluator, train_t.x)
        _, real_features = predict(evaluator, held_t.x)
        back = t.translate(translated, source)
        cycle = float(np.mean(((back.astype(np.float64) - held.x.numpy()) / PIXEL_SCALE) ** 2))
        reference = train_features[:PRDC_MAX]
        result[f"{'ab'[source]}_to_{'ab'[target]}"] = {
            "source": names[source], "target": names[target], "n": len(held),
            "class_kept": float((probs.argmax(1) == held.y.numpy()).mean()),
            "frechet_distance": metrics.frechet_distance(train_features, features),
            "prdc": dataclasses.asdict(metrics.prdc(reference, features[:PRDC_MAX])),
            "cycle_mse": cycle,
            "evaluator": {"held_out_accuracy": meta["held_out_accuracy"], "path": meta["path"]},
            "real_reference": {"n": len(held_t), "frechet_distance": metrics.frechet_distance(train_features, real_features),
                               "prdc": dataclasses.asdict(metrics.prdc(reference, real_features[:PRDC_MAX]))}}
    return result


def _held_out_prompts(config: TrainConfig, held_out, seed: int) -> list[str]:
    """A text-conditioned model's prompts, one per held-out item: built-in captions drawn anew in the held-out
    phrasings (templates and words training never saw), a captions file's first caption of each item."""
    if not len(held_out):
        raise BadInputError("a text-conditioned model is evaluated on its held-out captions; this run holds none out")
    if config.captions == BUILTIN:
        return [c[0] for c in captions(held_out.x.numpy(), held_out.y.numpy(), held_out=True, seed=seed)]
    return [c[0] for c in held_out.captions]


def _text_metrics(fake: np.ndarray, prompts: list[str], data, held_out, config: TrainConfig, log) -> dict:
    """How well the samples follow their prompts; sample i was prompted with the caption of held-out item
    i % len(held_out). For captions of digits (built-in): the share the evaluator classifies as the prompted digit,
    and the attributes measured on the samples against those of the images the prompts describe (thickness in
    pixels, slant in degrees), beside what drawing the right digit with no regard to the attributes would score (a
    random training image of the prompted class in the sample's place) and the share of said bands the samples
    meet (a prompt saying "thick" met by a sample measured thick)."""
    source = np.arange(len(fake)) % len(held_out)
    result = {"prompts": len(prompts), "examples": prompts[:5]}
    if config.captions != BUILTIN:
        return result
    evaluator, _ = _evaluator(data, config, log)
    probs, _ = predict(evaluator, torch.from_numpy(fake))
    labels = held_out.y.numpy()[source]
    real_probs, _ = predict(evaluator, held_out.x)
    result["class_accuracy"] = float((probs.argmax(1) == labels).mean())
    result["class_accuracy_real"] = float((real_probs.argmax(1) == held_out.y.numpy()).mean())
    described = measure(held_out.x.numpy())
    drawn = measure(fake)
    rng = np.random.default_rng(0)
    train_y = data.y.numpy()
    same_class = np.array([rng.choice(np.flatnonzero(train_y == y)) for y in labels])
    ignoring = measure(data.x.numpy()[same_class])
    said = bands(described, held_out.y.numpy())
    got = bands(drawn, labels)
    for attribute, unit in (("thickness", "px"), ("slant", "degrees")):
        want = getattr(described, attribute)[source]
        asked = [i for i, s in enumerate(source) if attribute in said[s]]
        result[attribute] = {
            "unit": unit, "mean_abs_error": float(np.mean(np.abs(getattr(drawn, attribute) - want))),
            "mean_abs_error_ignoring_it": float(np.mean(np.abs(getattr(ignoring, attribute) - want))),
            "band_met": float(np.mean([got[i].get(attribute) == said[source[i]][attribute] for i in asked]))
            if asked else None, "band_prompts": len(asked)}
    return result


def _pixels(images) -> np.ndarray:
    """uint8 (N, C, H, W) images as (N, C*H*W) float32 on [0, 1]: the copy check's space."""
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def json_ready(value):
    """Non-finite floats (a KL with no high-quality sample is infinite) as None: strict JSON has no Infinity."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _image_metrics(data, train_set, held_out, fake: np.ndarray, config: TrainConfig, log) -> dict:
    """Class coverage, FD and PRDC of the samples, and the same figures for the held-out real items in their place.

    The reference set is the training split: FD's bias grows with 1/N, and against the 500 held-out MNIST digits
    even 2,000 real digits score 14.7, so no generator could show a gain below that. Against the training split a
    copying generator would score best, which is why the copy check stands beside it.
    """
    if data.y is None:
        raise BadInputError(f"image metrics need a labelled dataset to train the evaluator; {config.data} has no labels")
    if config.data == STACKED_MNIST:  # each channel is a digit: the MNIST evaluator reads them one by one
        mnist = config.replace(data="mnist")
        evaluator, meta = _evaluator(load_dataset("mnist", image_size=config.image_size), mnist, log)
        classify = lambda images: _per_channel(evaluator, images)  # noqa: E731
    else:
        evaluator, meta = _evaluator(data, config, log)
        classify = lambda images: predict(evaluator, images)  # noqa: E731
    probs, fake_features = classify(torch.from_numpy(fake))
    _, train_features = classify(train_set.x)
    held_probs, held_features = classify(held_out.x)
    reference = train_features[:PRDC_MAX]
    return {"evaluator": {"held_out_accuracy": meta["held_out_accuracy"], "path": meta["path"]},
            "class_coverage": dataclasses.asdict(metrics.class_coverage(probs)),
            "frechet_distance": metrics.frechet_distance(train_features, fake_features),
            "frechet_distance_held_out": metrics.frechet_distance(held_features, fake_features),
            "prdc": dataclasses.asdict(metrics.prdc(reference, fake_features[:PRDC_MAX])),
            # What real items unseen in training score in the samples' place: the ceiling of a perfect generator
            # (its FD is computed from fewer items than the samples', so it is biased upwards).
            "real_reference": {"n": len(held_out),
                               "class_coverage": dataclasses.asdict(metrics.class_coverage(held_probs)),
                               "frechet_distance": metrics.frechet_distance(train_features, held_features),
                               "prdc": dataclasses.asdict(metrics.prdc(reference, held_features[:PRDC_MAX]))}}


def _per_channel(evaluator, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) stacks -> (probabilities over the 1,000 digit triples (N, 1000), features of the three digits
    side by side (N, 3F)). The triple's probability is the product of its digits': the channels are classified
    independently, and mode 100*a + 10*b + c is digits (a, b, c), as in the data's labels."""
    probs, feats = zip(*(predict(evaluator, images[:, c:c + 1].contiguous()) for c in range(3)))
    joint = np.einsum("na,nb,nc->nabc", *probs).reshape(len(images), 1000)
    return joint, np.concatenate(feats, axis=1)


def _evaluator(data, config: TrainConfig, log):
    """The cached evaluator for this data and image size, trained (and saved) on first use."""
    size = data.shape[1]
    source = config.data if config.data in (*BUILTIN_IMAGES, *MIXTURES) else str(Path(config.data).resolve())
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]  # two files of one name get two evaluators
    path = EVALUATORS / f"{Path(config.data).stem or 'data'}-{digest}-{size}px-split{config.split_seed}.safetensors"
    if path.is_file():
        model, meta = load_evaluator(path)
        if meta.get("data") == source and model.cfg.num_classes == data.num_classes:
            return model, meta | {"path": str(path)}
        log(f"the cached evaluator {path} was trained on other data; training again")
    train_set, held_out = split(data, config.val_fraction, config.split_seed)
    log(f"training the evaluator classifier on {len(train_set):,} items of {config.data} (once; cached in {path})")
    model, acc = train_evaluator(train_set, held_out)
    save_evaluator(path, model, acc, source)
    log(f"evaluator held-out accuracy {acc:.3%}")
    return model, {"held_out_accuracy": acc, "path": str(path)}
