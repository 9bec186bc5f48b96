"""A run -> a bundle folder: ONNX graphs, precision variants, validation, manifest last.

The bundle is built in a temporary folder beside its destination and moved into place only when
complete, so an existing bundle is never left half-overwritten.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gvtool import __version__
from gvtool.errors import BadInputError, ExportValidationError, GvtoolError
from gvtool.fileio import folder_lock, give_umask_mode, remove_leftovers
from gvtool.export.contract import contract
from gvtool.export.flops import flops_per_item
from gvtool.train.trained import RunModel, load_run
from gvtool.export.subpixel import inference_decoder
from gvtool.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, export_onnx
from gvtool.export.validate import validate_graph
from gvtool.export.variants import to_fp16, to_int8, to_int8_weights
from gvtool.runtime.bundles import BUNDLES_ROOT
from gvtool.masks import mixed_masks
from gvtool.manifest import (CAPTION_GRAPH, CHAINS, DOMAIN_GRAPHS, MASK_INPUT, PRECISIONS, TEXT_EMBEDDING, TEXT_GRAPH,
                             TEXT_INPUTS, GraphEntry, Manifest, ModelInfo, TextInfo, cycled_labels, domain_names,
                             is_bundle, item_name, model_graphs, read_manifest, sha256_file, write_manifest)
from gvtool.prompts import MAX_TOKENS, PromptTokenizer
from gvtool.train.captions import captioned
from gvtool.train.text import TEXT_ENCODER_NAME, TOKENIZER_FILE, text_encoder_dir
from gvtool.train.graphs import Graph, graph_modules, run_chain
from gvtool.train.data import PIXEL_OFFSET, PIXEL_SCALE, load_dataset, split, to_model

# Graphs whose int8 variant is weight-only (variants.to_int8_weights): static int8 activations wreck a transformer's
# embedding, and a joint model's tiny label encoder and classifier (MLPs of a few thousand weights) lose accuracy to
# them for no speed
WEIGHT_ONLY_INT8 = (TEXT_GRAPH, "label_encoder", "classifier", CAPTION_GRAPH)
# Graphs whose static int8 covers the convs and linear layers only: a joint model's encoder ends in the product of
# Gaussian experts, whose precisions span e^-10 to e^10; int8 activations there moved its outputs by 0.085 on average
# after one MNIST epoch (tolerance 0.03), while the convs hold nearly all its multiply-adds
INT8_CONV_ONLY = {("mvae", "encoder")}
# Graphs whose int8 leaves the last conv, the one that writes the pixels, in float: a translation model's decoders,
# whose colour output moved most (mnist <-> mnist-m seed 0 with --class-weight 10 --style-dim 4: MNIST-M's decoder
# by 0.031 on average, over the 0.03 tolerance, and 0.025 with it float; MNIST's 0.010 and 0.008)
INT8_FLOAT_OUTPUT = {("cyclevae", "decoder"), ("cyclevae", "decoder_b")}
VALIDATION_BATCHES = (1, 16)   # batch 1 and a larger one: a wrong dynamic axis shows at one of them
CALIBRATION_ITEMS = 512        # int8 ranges: 512 items in batches of 32 settle the min/max of every layer
CALIBRATION_BATCH = 32


def export_bundle(run_dir: str | Path, out: str | Path | None = None, *, precisions=None,
                  opset: int = DEFAULT_OPSET, allow_mismatch: bool = False,
                  log: Callable[[str], None] = lambda line: None) -> tuple[Path, Manifest]:
    """Export every graph of the run in each precision (None: default_precisions); return (bundle folder, manifest)."""
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown or (precisions is not None and not precisions):
        raise BadInputError(f"unknown --precision {','.join(unknown) or '(none)'}; expected some of {','.join(PRECISIONS)}")
    if opset < MIN_OPSET:
        raise BadInputError(f"--opset {opset} is too old: int8 per-channel Q/DQ needs opset >= {MIN_OPSET}")
    run = load_run(run_dir)
    if precisions is None:
        precisions = default_precisions(run.config.model.data_kind)
        if "int8" not in precisions:
            log("int8 not written for vector data: a 2-D generator maps latents onto its modes through steep "
                "boundaries, and int8 moved 7% of grid25 samples by over 0.3 (ask for it with --precision fp32,fp16,int8)")
    out = Path(out) if out is not None else BUNDLES_ROOT / run.run_dir.name
    with folder_lock(out, "gvtool export"):  # a second export to this folder is refused, not interleaved
        _recover(out, log)
        return _export_locked(run, out, precisions, opset, allow_mismatch, log)


def _recover(out: Path, log: Callable[[str], None]) -> None:
    """Undo what a killed export left beside `out` (only ever called under out's lock): a previous bundle moved
    aside but never replaced goes back to `out`; temp and moved-aside folders are removed."""
    if not out.exists():
        aside = sorted(out.parent.glob(f".{glob.escape(out.name)}.*.old/bundle"), key=lambda p: p.stat().st_mtime)
        if aside and is_bundle(aside[-1]):
            os.replace(aside[-1], out)
            log(f"recovered {out} from {aside[-1].parent.name}, left by an export that was stopped mid-swap")
    name = glob.escape(out.name)
    for leftover in remove_leftovers(out.parent, f".{name}.*.tmp") + remove_leftovers(out.parent, f".{name}.*.old"):
        log(f"removed {leftover.name}, left by an export that was stopped")


def _export_locked(run: RunModel, out: Path, precisions, opset: int, allow_mismatch: bool,
                   log: Callable[[str], None]) -> tuple[Path, Manifest]:
    _check_destination(out, run)
    inputs = _Inputs(run, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        give_umask_mode(tmp, folder=True)
        manifest = Manifest(gvtool_version=__version__, model=inputs.model_info(), pixels=_pixels(run),
                            source={"run_dir": str(run.run_dir.resolve()), "checkpoint_sha256": run.checkpoint_sha256,
                                    "step": run.step, "complete": run.complete, "data": run.config.data})
        if inputs.text is not None:  # the prompts' tokenizer travels with the bundle, hash-checked like a graph
            shutil.copyfile(text_encoder_dir() / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        for graph in model_graphs(run.config.model.kind, inputs.text is not None):
            for entry in _export_graph(graph, run, inputs, tmp, precisions, opset, allow_mismatch, log):
                manifest.graphs[entry.key] = entry
        write_manifest(tmp, manifest)  # last: a folder with a manifest is complete
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest


def default_precisions(data_kind: str) -> tuple[str, ...]:
    """The variants written when none are asked for: all for images; fp32 and fp16 for vector data, whose
    int8 graphs fail validation (grid25's decoder: mean |diff| 0.098 against the 0.03 tolerance)."""
    return PRECISIONS if data_kind == "image" else ("fp32", "fp16")


def _check_destination(out: Path, run: RunModel) -> None:
    """Refuse to replace anything but an earlier bundle of this same run."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BadInputError(f"--out {out} is a file, not a folder")
    if is_bundle(out):
        try:
            source = read_manifest(out).source.get("run_dir")
        except GvtoolError as error:
            raise BadInputError(f"--out {out} holds a bundle this gvtool cannot read ({error}); choose another --out") from None
        if source != str(run.run_dir.resolve()):
            raise BadInputError(f"--out {out} holds another bundle (exported from {source}); choose another --out "
                                "or delete that folder")
    elif any(out.iterdir()):
        raise BadInputError(f"--out {out} is a folder with other files in it and no bundle; choose an empty or new folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished bundle in: the old one (same run) is moved aside first, then removed."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "bundle")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _pixels(run: RunModel) -> dict | None:
    if run.config.model.data_kind != "image":
        return None
    return {"scale": PIXEL_SCALE, "offset": PIXEL_OFFSET, "channels": run.config.model.channels,
            "formula": "model = pixel / scale + offset; pixel = (model - offset) * scale, rounded and clipped to 0..255"}


class _Inputs:
    """Real held-out items for each encoder (a translation model's encoder_b: domain B's), and for every other graph
    what sampling feeds it: seeded noise run through the graphs before it in the sampling chain (a prior's decoder
    gets the prior's latents, hier's detail stage the coarse stage's items). What validation and int8 calibration
    feed the graphs."""

    def __init__(self, run: RunModel, log: Callable[[str], None]):
        self.run, self.cfg = run, run.config.model
        self.rng = np.random.default_rng(0)
        self.trained = graph_modules(self.cfg, run.nets)
        self.items: dict[str, dict[str, np.ndarray]] = {}  # encoder graph -> the real inputs it is fed, by name
        self.notes: dict[str, str] = {}         # encoder graph -> what they are
        self.text: TextInfo | None = None       # a text-conditioned model's prompts
        self.embeddings: np.ndarray | None = None  # and the held-out captions' embeddings its decoder is fed
        self.class_names = self._held_out(log)

    def _held_out(self, log) -> tuple[str, ...]:
        """Fill items and notes per encoder graph; return the class names a conditional model records."""
        config = self.run.config
        encoders = [pair[0] for pair in DOMAIN_GRAPHS] if CHAINS[self.cfg.kind].translates else ["encoder"]
        names: tuple[str, ...] = ()
        for domain, encoder in enumerate(encoders):
            source = config.data if domain == 0 else config.data_b
            try:  # domain B at the model's image size, as training loaded it (load_domain_b)
                data = (load_dataset(config.data, image_size=config.image_size, seed=config.seed,
                                     n_vectors=config.n_vectors) if domain == 0 else
                        load_dataset(config.data_b, image_size=self.cfg.image_size))
                if data.shape != self.cfg.item_shape_of(domain):
                    raise BadInputError(f"its items are now {data.shape}, the model takes {self.cfg.item_shape_of(domain)}")
            except BadInputError as error:
                # The training data may not travel with the run: validate on the decoder's own samples.
                log(f"data {source} unavailable or unusable ({error}); validating the {encoder} graph on generated items")
                decoder = DOMAIN_GRAPHS[domain][1]
                if self.cfg.text_dim:
                    raise BadInputError(f"a text-conditioned model is validated on its held-out captions, and its "
                                        f"data is unusable: {error}") from None
                item = item_name(self.cfg.data_kind)
                self.items[encoder] = {item: self._sampled(decoder, CALIBRATION_ITEMS, through=True)[item]}
                self.notes[encoder] = "generated items (training data unavailable)"
                self._masked(encoder)
                continue
            if domain == 0:
                data = captioned(data, config.captions)
            _, held_out = split(data, config.val_fraction, config.split_seed)
            chosen = held_out if len(held_out) >= CALIBRATION_ITEMS else data
            x = chosen.x[:CALIBRATION_ITEMS]
            x = to_model(x) if data.kind == "image" else x
            self.items[encoder] = {item_name(self.cfg.data_kind): x.numpy().astype(np.float32)}
            self.notes[encoder] = f"held-out items of {source}"
            self._masked(encoder)
            if domain == 0 and self.cfg.text_dim:
                self._held_out_prompts([c[0] for c in chosen.captions[:CALIBRATION_ITEMS]], source)
            if domain == 0 and self.cfg.num_classes:
                names = data.class_names
        return names

    def _masked(self, encoder: str) -> None:
        """A joint model's encoder sees partly observed images: its items get every kind of mask, in turn."""
        if self.cfg.kind == "mvae":
            self.items[encoder][MASK_INPUT] = mixed_masks(len(next(iter(self.items[encoder].values()))),
                                                          self.cfg.image_size)
            self.notes[encoder] += ", whole and masked"

    def _held_out_prompts(self, prompts: list[str], source: str) -> None:
        """A text-conditioned model: its held-out captions, tokenised, feed the text encoder; their embeddings feed
        the decoder in place of labels."""
        tokenizer_path = text_encoder_dir() / TOKENIZER_FILE
        ids, mask = PromptTokenizer(tokenizer_path).encode(prompts, length=MAX_TOKENS)
        self.items[TEXT_GRAPH] = dict(zip(TEXT_INPUTS, (ids, mask)))
        self.notes[TEXT_GRAPH] = f"held-out captions of {source}"
        with torch.no_grad():
            self.embeddings = self.trained[TEXT_GRAPH](torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        self.text = TextInfo(dim=self.cfg.text_dim, max_tokens=MAX_TOKENS, tokenizer_file=TOKENIZER_FILE,
                             tokenizer_sha256=sha256_file(tokenizer_path), encoder=TEXT_ENCODER_NAME)

    def _conditions(self, n: int) -> dict[str, torch.Tensor]:
        """What a conditional graph is fed beside its other inputs: labels cycled through the classes, and (a model
        that takes text) the held-out captions' embeddings cycled."""
        if not self.cfg.conditional:
            return {}
        conditions = {}
        if self.cfg.text_dim:
            conditions[TEXT_EMBEDDING] = torch.from_numpy(self.embeddings[np.arange(n) % len(self.embeddings)])
        if self.cfg.num_classes:
            conditions["labels"] = torch.tensor(cycled_labels(n, self.cfg.num_classes))
        return conditions

    def model_info(self) -> ModelInfo:
        c, chains = self.cfg, CHAINS[self.cfg.kind]
        domains = ({"domains": domain_names(self.run.config.data, self.run.config.data_b),
                    "item_shape_b": tuple(c.item_shape_b), "style_dim": c.style_dim} if chains.translates else {})
        # a translation model that learnt domain A's classes keeps them to itself: its graphs take no labels
        return ModelInfo(kind=c.kind, conditional=c.conditional, num_classes=c.num_classes if c.conditional else 0,
                         data_kind=c.data_kind, item_shape=tuple(c.item_shape), latent_dim=c.latent_dim,
                         class_names=tuple(self.class_names) if c.conditional else (),
                         latent_prior=chains.latent_prior, decoding=chains.decoding, text=self.text, **domains)

    def _draw(self, name: str, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(self.rng.standard_normal((n, *shape)).astype(np.float32))

    @torch.no_grad()
    def _sampled(self, graph: str, n: int, through: bool = False) -> dict[str, np.ndarray]:
        """The values sampling computes on the way to `graph` (`through`: and `graph` itself), with the graph's own
        noise drawn. A graph outside the sampling chain (a translation model's decoder_b) takes N(0, I) latents."""
        chain = CHAINS[self.cfg.kind].sampling
        before = chain[:chain.index(graph)] if graph in chain else ()
        values = run_chain(self.trained, before + ((graph,) if through else ()), self._conditions(n), n, self._draw)
        for name, _, shape in self.trained[graph].inputs:
            if name not in values and name != item_name(self.cfg.data_kind):
                values[name] = self._draw(name, n, shape)
        return {k: v.numpy() for k, v in values.items()}

    def feeds(self, graph: str, sizes) -> list[dict[str, np.ndarray]]:
        feeds, start = [], 0
        names = [name for name, _, _ in self.trained[graph].inputs]
        for n in sizes:
            if graph in self.items:
                feeds.append({name: self.items[graph][name][start:start + n] for name in names})
                start += n
            else:
                values = self._sampled(graph, n)
                feeds.append({name: values[name] for name in names})
        return feeds


def _torch_reference(module: torch.nn.Module):
    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(a) for a in feed.values()))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
    return run


def _export_graph(graph: str, run: RunModel, inputs: _Inputs, folder: Path, precisions, opset: int,
                  allow_mismatch: bool, log) -> list[GraphEntry]:
    cfg = run.config.model
    trained: Graph = inputs.trained[graph]
    module = trained
    if graph in ("decoder", "decoder_b"):
        # The exported decoder is the exact sub-pixel rewrite (faster on every backend); it is validated
        # against the decoder as trained.
        module = graph_modules(cfg, run.nets, {"decoder": inference_decoder(run.nets["decoder"])})[graph]
    specs_in, specs_out = contract(trained)
    reference = _torch_reference(trained)
    fp32_path = folder / f"{graph}.onnx"
    started = time.perf_counter()
    model = export_onnx(module, specs_in, specs_out, fp32_path, opset)
    flops = _count_flops(graph, model, log)
    check_feeds = inputs.feeds(graph, VALIDATION_BATCHES)
    chain = CHAINS[cfg.kind].sampling
    if graph in inputs.notes:  # an encoder's items
        note = inputs.notes[graph]
    elif graph == CAPTION_GRAPH:
        note = "the held-out captions' sentence embeddings"
    elif graph in chain[1:]:
        note = f"seeded N(0, I) noise through {' -> '.join(chain[:chain.index(graph)])}"
    else:
        note = "seeded N(0, I) latents"
    # Vector items (a decoder's, hier's coarse and detail stages') are in data units: judged per data std, like
    # images on their [-1, 1] scale
    in_data_units = cfg.data_kind == "vector" and specs_out[0].name in ("vectors", "coarse")
    scale = tuple(cfg.vector_std) if in_data_units else ()
    if graph == TEXT_GRAPH:  # unit-length embeddings: differences judged against an entry's typical size, 1/sqrt(dim)
        scale = (cfg.text_dim ** -0.5,)  # one value: it divides every entry alike
    entries = []
    for precision in PRECISIONS:
        if precision not in precisions:
            continue
        path = fp32_path if precision == "fp32" else folder / f"{graph}.{precision}.onnx"
        if precision == "fp16":
            to_fp16(fp32_path, path)
        elif precision == "int8" and graph in WEIGHT_ONLY_INT8:
            to_int8_weights(fp32_path, path)
        elif precision == "int8":
            kind = run.config.model.kind
            to_int8(fp32_path, path, inputs.feeds(graph, [CALIBRATION_BATCH] * (CALIBRATION_ITEMS // CALIBRATION_BATCH)),
                    ("Conv", "Gemm") if (kind, graph) in INT8_CONV_ONLY else None,
                    float_last_conv=(kind, graph) in INT8_FLOAT_OUTPUT)
        validation = validate_graph(path, specs_out, reference, check_feeds, precision, note, scale,
                                    by_cosine=graph == TEXT_GRAPH and precision == "int8")
        verdict = "ok" if validation.passed else "MISMATCH"
        units = " per typical entry" if graph == TEXT_GRAPH else " in data stds" if scale else ""
        cosine = f", worst 1 - cosine {validation.cosine_gap:.2e}" if validation.metric == "cosine" else ""
        log(f"{graph} {precision}: {path.stat().st_size / 1024:,.0f} KiB, max |diff| {validation.max_abs_diff:.2e}, "
            f"mean |diff| {validation.mean_abs_diff:.2e}{units}{cosine} ({validation.metric} tolerance "
            f"{validation.tolerance:g}) {verdict}")
        if not validation.passed and not allow_mismatch:
            raise ExportValidationError(
                f"{graph} {precision} differs from torch: {validation.metric.replace('_', ' ')} "
                f"{validation.judged:.3g} "
                f"> tolerance {validation.tolerance:g}; no bundle written (--allow-mismatch records it instead)")
        entries.append(GraphEntry(graph=graph, precision=precision, file=path.name, sha256=sha256_file(path),
                                  bytes=path.stat().st_size, opset=opset, ir_version=model.ir_version,
                                  inputs=specs_in, outputs=specs_out, validation=validation, flops_per_item=flops))
    log(f"{graph}: exported and validated in {time.perf_counter() - started:.1f} s")
    return entries


def _count_flops(graph: str, model, log) -> int | None:
    """FLOPs per item of the fp32 graph, recorded on every precision (see export/flops.py); None if uncountable."""
    try:
        flops = flops_per_item(model)
    except ValueError as error:  # a count is information, not a reason to lose the export
        log(f"{graph}: FLOPs per item not counted ({error})")
        return None
    log(f"{graph}: {flops / 1e6:,.2f} MFLOPs per item")
    return flops
