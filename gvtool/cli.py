"""The `gvtool` command. Each command parses, calls one library function, and prints with rich.

This is the only place that exits: a GvtoolError becomes one red line and exit code 1, never a
traceback. Layers are imported inside their commands, so `gvtool sample` starts without torch.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

from gvtool.manifest import MODEL_KINDS


@functools.cache
def _console():
    """rich, for tables and progress bars only: plain status lines go through click, so a command like
    `gvtool sample` never pays rich's import (~30 ms of a ~0.3 s start)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False)


def _wrote(text: str, replaced: bool) -> None:
    say("wrote", text + (" (replaced the file that was there)" if replaced else ""), "green")


def say(label: str, text: str, color: str) -> None:
    """One status line on stderr: `label` in colour, then the text as it is (no markup is read in it). Under
    torchrun with several processes, each line names its rank."""
    import os

    rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ else ""
    click.echo(f"{rank}{click.style(label, fg=color, bold=color == 'red')} {text}", err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    say("warning:", str(message), "yellow")


def reports_errors(command):
    """Turn gvtool's own errors, and the operating system's (permissions, disk space), into one red line
    and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from gvtool.errors import GvtoolError

        with warnings.catch_warnings():
            warnings.simplefilter("once")  # one line per distinct warning, not one per image
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except GvtoolError as error:
                say("error:", str(error), "red")
                sys.exit(1)
            except OSError as error:  # a folder that cannot be written, a full disk: the machine's answer, not a bug
                where = f": {error.filename}" if error.filename else ""
                say("error:", f"{error.strerror or error}{where}", "red")
                sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gvtool", prog_name="gvtool")
def main() -> None:
    """Train a compact VAE-GAN, export it to ONNX/TensorRT, and run it fast on edge devices."""


@main.command()
@click.option("--data", default="mnist", show_default=True,
              help="mnist, digits (scikit-learn's UCI digits), mnist-m (MNIST over photo patches), stacked-mnist, ring8, "
                   "grid25, a folder of images (one subfolder per class for labels), or an .npz with x (and y).")
@click.option("--data-b", help="--model cyclevae: domain B, any image source --data takes (e.g. --data mnist "
                               "--data-b digits); resized to domain A's images.")
@click.option("--model", "kind", type=click.Choice(MODEL_KINDS), default="vaegan", show_default=True,
              help="vaegan (Larsen et al. 2016), vae, gan; ali (ALI/BiGAN: a discriminator of (item, latent) pairs); "
                   "prior (a second VAE over a --base run's latent codes, sampled in place of N(0, I)); hier (a VAE "
                   "for the coarse structure, a GAN for the detail); cyclevae (UNIT: translation between --data and "
                   "--data-b through one shared latent).")
@click.option("--base", type=click.Path(path_type=Path),
              help="--model prior: the vaegan, vae or ali run whose codes it learns [default: the newest run].")
@click.option("--conditional", is_flag=True, help="Class-conditional model (labels go to the decoder and the discriminator).")
@click.option("--captions", help="Text-conditioned model (vaegan, vae, gan), or a joint model's (mvae) third modality: "
                                 "'builtin' describes each digit of mnist or digits from its label and measured "
                                 "stroke, slant and width; or a captions file for --data (.txt one per line, .json, "
                                 ".csv with file,caption).")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Passes over the training data [default: 35; stacked-mnist 9; 2-D mixtures 170; "
                                                             "images on CUDA 4x: 140, stacked-mnist 36].")
@click.option("--batch-size", type=click.IntRange(min=2), help="[default: 32; 2-D mixtures 128]")
@click.option("--latent-dim", type=click.IntRange(1, 4096), help="Latent size [default: 16; 2-D mixtures 8].")
@click.option("--image-size", type=int, help="Resize images to this square side (multiple of 4, 16..64) [default: native].")
@click.option("--width", type=click.IntRange(min=4),
              help="Conv channels of the first stage, doubled at each stride [default: 32].")
@click.option("--extra-convs", type=click.IntRange(0, 8),
              help="Images: 3x3 convs at the base resolution of every network (depth) [default: 1].")
@click.option("--mapping-layers", type=click.IntRange(0, 8),
              help="Images: fully connected layers of --hidden units between the latent and the decoder [default: 0].")
@click.option("--hidden", type=click.IntRange(min=4),
              help="MLP hidden units: vector data's networks, the image decoder's mapping layers [default: 128].")
@click.option("--mlp-layers", type=click.IntRange(min=1), help="Vector data: MLP hidden layers of every network [default: 2].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate of every network [default: 5e-4, betas (0, 0.9); 2-D mixtures 1e-3, "
                   "betas (0.5, 0.999)].")
@click.option("--kl-weight", type=click.FloatRange(min=0), help="beta on the KL term (vae, vaegan) [default: 2; 2-D mixtures 1].")
@click.option("--feature-weight", type=click.FloatRange(min=0),
              help="vaegan: gamma on the feature-space reconstruction in the decoder's loss [default: 0.1; 2-D mixtures 0.03].")
@click.option("--r1-weight", type=click.FloatRange(min=0),
              help="gan, vaegan: R1 gradient penalty on real items (Mescheder et al. 2018) [default: 0].")
@click.option("--gan-loss", type=click.Choice(["hinge", "bce"]),
              help="gan, vaegan: adversarial loss [default: hinge; 2-D mixtures bce].")
@click.option("--spectral-norm/--no-spectral-norm", default=None,
              help="gan, vaegan: spectral norm on the discriminator's weights [default: on; 2-D mixtures off].")
@click.option("--augment", help="Images: DiffAugment policies for the discriminator's inputs, comma-separated "
                                "(translation, cutout) or none [default: none].")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True),
              help="Decay of the decoder's weight average, which samples and exports; 0 turns it off [default: 0.999].")
@click.option("--prior-latent-dim", type=click.IntRange(1, 4096), help="prior: its own latent size [default: the base's].")
@click.option("--prior-hidden", type=click.IntRange(min=4), help="prior: hidden units of its MLPs [default: 256].")
@click.option("--prior-layers", type=click.IntRange(1, 16), help="prior: hidden layers of its MLPs [default: 3].")
@click.option("--prior-free-bits", type=click.FloatRange(0, 100),
              help="prior: nats per latent dimension its KL term leaves free, against collapse [default: 0.5].")
@click.option("--detail-dim", type=click.IntRange(1, 4096), help="hier: size of the detail stage's noise [default: 16].")
@click.option("--structure-weight", type=click.FloatRange(min=0),
              help="hier: how strongly the detail keeps the coarse structure it is given [default: 1; 2-D mixtures 0].")
@click.option("--latent-channels", type=click.IntRange(0, 256),
              help="cyclevae: a spatial latent of this many maps at the convs' base resolution (its size is then "
                   "channels x base^2, 392 at 28 px); 0 for a flat --latent-dim vector [default: 0].")
@click.option("--class-weight", type=click.FloatRange(min=0),
              help="cyclevae: a classifier learns domain A's labels (and one B's, where B is labelled with the "
                   "same classes), and the encoders learn to give translations the class the target domain's "
                   "classifier reads, with this weight (10 on the built-in pairs) [default: 0, unsupervised].")
@click.option("--style-dim", type=click.IntRange(min=0),
              help="cyclevae: the last this many values of the latent are each domain's style (a photograph's "
                   "background), the rest the content both domains share; translations take the target's "
                   "typical style; with labelled domains 4 keeps more classes [default: 0, all shared].")
@click.option("--content-adv-weight", type=click.FloatRange(min=0),
              help="cyclevae: a discriminator learns which domain each content code came from and the encoders "
                   "learn to leave it guessing, with this weight (DRIT's content adversary) [default: 0, off].")
@click.option("--invariance-weight", type=click.FloatRange(min=0),
              help="cyclevae with --style-dim: each domain's content code must not change when an image's colours "
                   "are inverted or its channels reordered (the style keeps them), with this weight [default: 0, off].")
@click.option("--cycle-weight", type=click.FloatRange(min=0),
              help="cyclevae: weight of the cycle terms A -> B -> A and B -> A -> B [default: 1].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:I (auto takes CUDA when present).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: fp32 on the CPU, bf16 (fp16 without bf16) autocast on CUDA.")
@click.option("--cuda-graphs", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Capture the training step as one CUDA graph: auto where it can (CUDA, one process, fp32/bf16).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Run folder [default: runs/<model>-<data>-<time>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out (default: the newest run) from its checkpoint.")
@click.pass_context
@reports_errors
def train(ctx: click.Context, data, kind, conditional, out, resume, **options) -> None:
    """Train a model and write a run folder (config, checkpoint, metrics, sample grids, loss curves).

    Several processes train one run when torchrun starts them: torchrun --nproc-per-node N -m gvtool train ...
    (--batch-size is the global batch, split over the processes; rank 0 writes the run folder)."""
    import dataclasses

    from gvtool.errors import BadInputError
    from gvtool.train import distributed, rundir
    from gvtool.train.config import ModelConfig, TrainConfig
    from gvtool.train.device import resolve_device
    from gvtool.train.loop import train as run_training

    if resume:
        run_dir = out or rundir.newest_run()
        config = _resumed_config(ctx, run_dir)
    else:
        # The defaults live in the config (images train longer on CUDA); the options given replace them. Each option
        # is named after its config field, so a new hyperparameter is one click option and nothing here.
        given = {name: value for name, value in options.items() if value is not None}
        if "augment" in given:
            given["augment"] = _augmentations(given["augment"])
        if kind == "prior":
            config = _prior_config(ctx, data, conditional, given)
            data = config.data
        else:
            if "base" in given:
                raise BadInputError(f"--base applies to --model prior, not to --model {kind}")
            config = TrainConfig.defaults_for(data, resolve_device(options["device"]).type, kind)
            # a sentence embedding in place of labels; a joint model's labels are one of its modalities
            conditional = conditional or "captions" in given or kind == "mvae"
            config = config.replace(model=dataclasses.replace(config.model, conditional=conditional))
        # A name in both (image_size) is the train config's: the size asked for; the model's is filled from the data
        model_only = {f.name for f in dataclasses.fields(ModelConfig)} - {f.name for f in dataclasses.fields(TrainConfig)}
        model = dataclasses.replace(config.model, **{k: v for k, v in given.items() if k in model_only})
        if model.latent_channels and "latent_dim" in given:
            raise BadInputError(f"a spatial latent's size is --latent-channels x the base side squared "
                                f"({model.latent_dim} here); give --latent-channels 0 for a flat --latent-dim")
        config = config.replace(model=model, **{k: v for k, v in given.items() if k not in model_only})
        run_dir = out or rundir.default_run_dir(kind, data, given.get("data_b"))
    from gvtool.ui import TrainProgress

    with distributed.launched(config.device):
        run_dir = distributed.from_rank_0(run_dir)  # a default folder is named by the time: rank 0's names it
        is_main = distributed.current().is_main
        with TrainProgress(_console(), shown=is_main) as reporter:
            result = run_training(config, run_dir, resume=resume, reporter=reporter)
    if not is_main:  # rank 0 tells the user how the run went
        sys.exit(130 if result.interrupted else 0)
    if result.interrupted:
        say("interrupted", f"at step {result.step}; checkpoint saved. "
                           f"Continue with: gvtool train --resume --out {result.run_dir}", "yellow")
        sys.exit(130)
    say("done:", f"{result.epoch} epochs, {result.step} steps, {result.items_per_s:,.0f} items/s -> {result.run_dir}",
        "green")


# What a prior run may set of its own: the rest of its model (and its data) is its base run's
PRIOR_OPTIONS = ("base", "epochs", "batch_size", "lr", "seed", "device", "precision", "cuda_graphs", "prior_latent_dim",
                 "prior_hidden", "prior_layers", "prior_free_bits")


def _prior_config(ctx: click.Context, data: str, conditional: bool, given: dict):
    """--model prior: the config of a prior over --base's codes (default: the newest run), refusing the options that
    would describe another model than the base's."""
    from gvtool.errors import BadInputError
    from gvtool.train import rundir
    from gvtool.train.config import PRIOR_BASES, TrainConfig

    base = given.pop("base", None) or rundir.newest_run(kinds=PRIOR_BASES)
    config = TrainConfig.for_prior(TrainConfig.from_file(Path(base) / rundir.CONFIG_FILE), base)
    source = ctx.get_parameter_source
    stray = [f"--{name.replace('_', '-')}" for name in given
             if name not in PRIOR_OPTIONS and source(name) == click.core.ParameterSource.COMMANDLINE]
    if source("data") == click.core.ParameterSource.COMMANDLINE and data != config.data:
        stray.append(f"--data {data} (the base trained on {config.data})")
    if conditional:
        stray.append("--conditional (a prior is conditional when its base is)")
    if stray:
        raise BadInputError(f"a prior takes its model and data from its base run {base}; these options do not apply: "
                            f"{', '.join(stray)}")
    for name in list(given):
        if name not in PRIOR_OPTIONS:
            del given[name]
    return config


def _augmentations(text: str | None) -> tuple[str, ...] | None:
    """--augment "translation,cutout" -> ("translation", "cutout"); "none" -> (); not given -> None (the default)."""
    if text is None:
        return None
    return () if text.strip().lower() == "none" else tuple(_csv(text))


def _resumed_config(ctx: click.Context, run_dir: Path):
    """The run's own config, with the few options a resumed run may change."""
    from gvtool.errors import BadInputError
    from gvtool.train import rundir
    from gvtool.train.config import RESUME_OVERRIDES, TrainConfig

    path = Path(run_dir) / rundir.CONFIG_FILE
    try:
        config = TrainConfig.from_file(path)
    except BadInputError as error:
        raise BadInputError(f"cannot resume {run_dir}: {error}") from None
    given = {name for name, value in ctx.params.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE and name not in ("resume", "out")}
    # Option names are the config's field names ("kind" is the model's); the train config's image_size (as asked,
    # None for native) wins over the model's (as completed from the data).
    stored = config.model.to_dict() | {k: v for k, v in config.to_dict().items() if k != "model"}
    flags = {param.name: max(param.opts, key=len) for param in ctx.command.params}  # "kind" -> "--model"
    asked = ctx.params | {"augment": _augmentations(ctx.params["augment"])}
    clashes = [f"{flags[name]} {ctx.params[name]} (the run has {stored[name]})"
               for name in sorted(given - set(RESUME_OVERRIDES)) if asked[name] != stored[name]]
    if clashes:
        raise BadInputError(f"a resumed run keeps its config; these options differ: {', '.join(clashes)}. "
                            f"Only {', '.join('--' + n for n in RESUME_OVERRIDES)} may change on --resume")
    return config.replace(**{name: ctx.params[name] for name in given & set(RESUME_OVERRIDES)})


@main.command()
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Bundle folder [default: bundles/<run name>].")
@click.option("--precision", "precisions", default=None,
              help="Comma-separated variants: the ONNX graphs to write [default: fp32,fp16,int8; vector data "
                   "fp32,fp16] and the engines to "
                   "build with --trt [default: one per graph in the bundle].")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset (17 loads on TensorRT 10.3 and older onnxruntime).")
@click.option("--allow-mismatch", is_flag=True, help="Write the bundle even if a graph fails validation, recording the error.")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines for this machine's GPU (needs tensorrt, not torch).")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--opt-batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workspace-mb", type=click.IntRange(min=1), default=1024, show_default=True,
              help="TensorRT builder workspace limit.")
@click.option("--dla-core", type=click.IntRange(min=0), default=None, help="Jetson: build for this DLA core, with GPU fallback.")
@reports_errors
def export(source, out, precisions, opset, allow_mismatch, trt, min_batch, opt_batch, max_batch, workspace_mb,
           dla_core) -> None:
    """Export a run (default: the newest) to an ONNX bundle; with --trt, build TensorRT engines.

    SOURCE may also be an existing bundle: `gvtool export BUNDLE --trt` builds engines on the device
    itself and needs only the runtime and tensorrt, no torch.
    """
    from gvtool.errors import BadInputError
    from gvtool.manifest import is_bundle

    precisions = tuple(_csv(precisions)) if precisions else None
    if not min_batch <= opt_batch <= max_batch:
        raise BadInputError(f"batch profile must satisfy --min-batch <= --opt-batch <= --max-batch, "
                            f"got {min_batch} / {opt_batch} / {max_batch}")
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    if trt:  # what --trt needs, checked before minutes of export: TensorRT and the CUDA runtime bindings
        from gvtool.runtime.gpu import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
    if source is not None and is_bundle(source):
        if not trt:
            raise BadInputError(f"{source} is already a bundle; pass --trt to build TensorRT engines from it, "
                                "or give a run folder to export again")
        bundle = source
    else:
        from gvtool.export.bundle import export_bundle
        from gvtool.train import rundir

        bundle, manifest = export_bundle(source or rundir.newest_run(), out, precisions=precisions,
                                         opset=opset, allow_mismatch=allow_mismatch, log=log)
        say("bundle", f"{bundle}: {len(manifest.graphs)} graphs", "green")
    if trt:
        from gvtool.export.trt_build import build_engines

        manifest = build_engines(bundle, precisions=precisions, min_batch=min_batch, opt_batch=opt_batch,
                                 max_batch=max_batch, workspace_mb=workspace_mb, dla_core=dla_core, log=log)
        say("engines", f"{len(manifest.engines)} in {bundle}/engines", "green")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@reports_errors
def info(bundle) -> None:
    """Show a bundle's manifest: graphs, shapes, precisions, sizes, validation, engines, and whether each file
    still matches its sha256 (exit code 1 when one does not)."""
    from gvtool.errors import BadBundleError
    from gvtool.manifest import check_files, read_manifest
    from gvtool.ui import manifest_tables

    manifest = read_manifest(bundle)
    files = check_files(bundle, manifest)
    for renderable in manifest_tables(bundle, manifest, files):
        _stdout_console().print(renderable)
    bad = {name: state for name, state in files.items() if state != "ok"}
    if bad:
        raise BadBundleError(f"{len(bad)} of the bundle's {len(files)} files do not match its manifest: "
                             + ", ".join(f"{name} ({state})" for name, state in bad.items()) + "; re-export the bundle")


def runtime_options(command):
    """--backend, --device and --precision, shared by every command that runs a bundle."""
    command = click.option("--precision", default="fp32", show_default=True,
                           type=click.Choice(["fp32", "fp16", "int8"]), help="Which graph variant (or engine) runs.")(command)
    command = click.option("--device", default="auto", show_default=True,
                           help="auto, cpu, cuda or cuda:I.")(command)
    command = click.option("--backend", default="auto", show_default=True,
                           type=click.Choice(["auto", "tensorrt", "onnxruntime", "onnxruntime-tensorrt"]),
                           help="auto: a TensorRT engine for this GPU, else onnxruntime on CUDA, else on the CPU.")(command)
    return command


def _load(bundle, backend, device, precision, operation):
    """The bundle (default: the newest) with the graphs `operation` needs (None: all it has)."""
    from gvtool.runtime.bundles import newest_bundle
    from gvtool.runtime.model import load

    model = load(bundle or newest_bundle(), backend=backend, device=device, precision=precision, operation=operation)
    click.echo(click.style(model.description, dim=True), err=True)
    return model


def _read_images(paths, model, shape: tuple[int, ...] | None = None) -> "list":
    """The image files as the model takes them (or as `shape`, (C, H, W): a translation model's domain B), read one
    at a time and fitted at once (centre crop, resize, colour mode), so that only one full-size image is ever held in
    memory, however many are given."""
    import warnings

    from gvtool.imaging import convert_channels, fit_square, open_image

    shape = shape or model.item_shape
    channels, size = shape[0], shape[1]
    fitted, converted = [], 0
    for path in paths:
        image = open_image(path, draft_size=size)
        converted += image.size != (size, size) or image.mode != ("L" if channels == 1 else "RGB")
        fitted.append(fit_square(convert_channels(image, channels), size))
        del image
    if converted:
        warnings.warn(f"{converted} image(s) converted to the model's {shape[1:] + shape[:1]} "
                      "(centre crop, resize, colour mode)", stacklevel=2)
    return fitted


def _read_items(paths, model):
    """What the model encodes: image files for an image model; for a vector model, .npy files of (N, D) vectors,
    concatenated."""
    if model.is_image:
        return _read_images(paths, model)
    import numpy as np

    from gvtool.errors import BadInputError

    arrays = [_read_npy(path, f"vectors of shape (N, {model.item_shape[0]})") for path in paths]
    for path, array in zip(paths, arrays):
        if array.ndim != 2 or array.shape[1:] != model.item_shape or array.dtype.kind not in "iuf":
            raise BadInputError(f"{path} holds {array.dtype} {array.shape}; a vector model encodes numbers of shape "
                                f"(N, {model.item_shape[0]})")
    return np.concatenate(arrays).astype(np.float32)


def _read_npy(path: Path, what: str):
    import numpy as np

    from gvtool.errors import BadInputError

    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as error:
        raise BadInputError(f"{path}: cannot read {what}: {error.strerror or error}") from None
    if not magic.startswith(b"\x93NUMPY"):  # say what the file is, not what numpy guessed it might hold
        kind = ("a .npz archive of several arrays" if magic.startswith(b"PK") else
                "a PNG image" if magic.startswith(b"\x89PNG") else "a JPEG image" if magic.startswith(b"\xff\xd8") else
                "not a .npy array")
        raise BadInputError(f"{path} is {kind}; {what} must be one .npy array (as `gvtool encode` writes)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        reason = "it holds Python objects, which gvtool never loads" if "pickle" in str(error) else str(error)
        raise BadInputError(f"{path}: cannot read {what} as .npy ({reason})") from None


def _condition(model, label, prompt, default_label=None):
    """What a conditional model is given: a class (--label), or a text-conditioned model's --prompt (a joint model
    with captions takes either); refused in one line when it does not fit the model."""
    from gvtool.errors import BadInputError

    if model.text is not None and model.num_classes:  # a joint model with captions: a class or a prompt
        if label is not None and prompt is not None:
            raise BadInputError("give --label or --prompt, not both: this model takes either")
        return prompt if prompt is not None else default_label if label is None else label
    if model.text is not None:
        if label is not None:
            raise BadInputError("--label is for class-conditional models; this text-conditioned one takes --prompt")
        if prompt is None:
            raise BadInputError("this model is text-conditioned: give --prompt, e.g. --prompt \"a thin 4\"")
        return prompt
    if prompt is not None:
        raise BadInputError(f"--prompt is for text-conditioned models; {model.bundle} holds a {model.kind} model that "
                            "is not" + (" (it takes --label)" if model.conditional else ""))
    return default_label if label is None and model.conditional else label


PROMPT_OPTION = click.option("--prompt", default=None, help="Text-conditioned models: what to draw, e.g. \"a thin 4\".")


@main.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--n", "count", type=int, default=64, show_default=True, help="How many items.")
@click.option("--seed", type=int, default=None, help="Same seed, same samples.")
@click.option("--label", type=int, default=None, help="Conditional models: one class for all [default: cycle the classes].")
@click.option("--prompt", "prompts", multiple=True,
              help="Text-conditioned models (and joint models with captions): what to draw, e.g. \"a thin 4\"; repeat "
                   "for several (--n each, a row each).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Scale of the prior latents.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("samples.png"), show_default=True,
              help=".png (a grid) or .npy (streamed with bounded memory for large --n).")
@runtime_options
@reports_errors
def sample(bundle, count, seed, label, prompts, temperature, out, backend, device, precision) -> None:
    """Sample items from a bundle (default: the newest under bundles/)."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    from gvtool.runtime.outputs import check_output, save_items, stream_npy

    model = _load(bundle, backend, device, precision, "sample")
    _condition(model, label, prompts[0] if prompts else None)  # refuses what does not fit the model
    if prompts:
        label = [p for p in prompts for _ in range(count)]  # --n items per prompt, prompt by prompt
        count *= len(prompts)
    check_output(out, (".png", ".npy"), model.is_image)
    if out.suffix.lower() == ".png" and count > 4096:
        raise click.BadParameter(f"a PNG grid of {count} items would be unreadable; use --out FILE.npy", param_hint="--n")
    if out.suffix.lower() == ".npy":
        from gvtool.ui import count_progress

        item = model.item_shape[1:] + model.item_shape[:1] if model.is_image else model.item_shape
        with count_progress(_console(), count, "sampling") as advance:
            stream_npy(model.sample_chunks(count, seed, label, temperature), count, item,
                       "uint8" if model.is_image else "float32", out, advance)
    else:
        cols = model.num_classes if model.conditional and label is None and model.num_classes <= 16 else None
        if len(prompts) > 1:
            cols = count // len(prompts)  # a row per prompt
        save_items(model.sample(count, seed, label, temperature), out, ncols=cols)
    _wrote(f"{count} samples -> {out}", replaced)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("latents.npy"), show_default=True)
@click.option("--logvar", is_flag=True, help="Also write the log-variances, as OUT with -logvar before .npy.")
@runtime_options
@reports_errors
def encode(bundle, images, out, logvar, backend, device, precision) -> None:
    """Encode image files to latent means (N, K) in a .npy."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    from gvtool.runtime.outputs import check_output, save_npy

    check_output(out, (".npy",), True)
    model = _load(bundle, backend, device, precision, "encode")
    mean, log_var = model.encode(_read_items(images, model), return_logvar=True)
    save_npy(mean, out)
    if logvar:
        save_npy(log_var, out.with_name(out.stem + "-logvar.npy"))
    _wrote(f"latents {mean.shape} -> {out}", replaced)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("latents", type=click.Path(path_type=Path))
@click.option("--label", type=int, default=None, help="Conditional models: the class of every item.")
@PROMPT_OPTION
@click.option("--out", type=click.Path(path_type=Path), default=Path("decoded.png"), show_default=True)
@runtime_options
@reports_errors
def decode(bundle, latents, label, prompt, out, backend, device, precision) -> None:
    """Decode latents (a .npy of shape (N, K)) to items."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    from gvtool.runtime.outputs import check_output, save_items

    model = _load(bundle, backend, device, precision, "decode")
    check_output(out, (".png", ".npy"), model.is_image)
    z = _read_npy(latents, "latents")
    items = model.decode(z, _condition(model, label, prompt))  # one label or prompt for every item
    save_items(items, out)
    _wrote(f"{len(items)} items -> {out}", replaced)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@PROMPT_OPTION
@click.option("--out", type=click.Path(path_type=Path), default=Path("reconstructions.png"), show_default=True,
              help=".png: originals and reconstructions side by side; .npy: the reconstructions.")
@runtime_options
@reports_errors
def reconstruct(bundle, images, prompt, out, backend, device, precision) -> None:
    """Encode then decode image files: what the model keeps of them."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    import numpy as np

    from gvtool.runtime.outputs import check_output, save_items

    model = _load(bundle, backend, device, precision, "reconstruct")
    check_output(out, (".png", ".npy"), model.is_image)
    condition = _condition(model, None, prompt)
    if model.conditional and model.text is None:
        from gvtool.errors import BadInputError

        raise BadInputError("reconstruct needs each image's label for a conditional model; encode, then decode --label")
    items = _read_items(images, model)
    fitted = model.fit_images(items) if model.is_image else items
    rebuilt = model.reconstruct(fitted, condition)
    if out.suffix.lower() == ".npy":
        save_items(rebuilt, out)
    else:
        pairs = np.stack([fitted, rebuilt], axis=1).reshape(-1, *rebuilt.shape[1:])  # original, rebuilt, ...
        save_items(pairs, out, ncols=2 * min(4, len(rebuilt)))
    _wrote(f"{len(rebuilt)} reconstructions -> {out}", replaced)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "target", required=True,
              help="The domain to translate into: its name (gvtool info BUNDLE lists them), or a or b.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("translations.png"), show_default=True,
              help=".png: originals and translations side by side; .npy: the translations.")
@click.option("--style-seed", type=int,
              help="A model trained with --style-dim: draw each translation's style from the target domain's prior "
                   "with this seed [default: the target's typical style].")
@runtime_options
@reports_errors
def translate(bundle, images, target, out, style_seed, backend, device, precision) -> None:
    """Translate image files of one domain into the other (a cyclevae bundle)."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    import numpy as np

    from gvtool.runtime.outputs import check_output, save_items

    check_output(out, (".png", ".npy"), True)
    model = _load(bundle, backend, device, precision, "translate")
    source = 1 - model.domain(target)
    fitted = np.stack(_read_images(images, model, model.manifest.model.item_shape_of(source)))
    translated = model.translate(fitted, target, style_seed)
    if out.suffix.lower() == ".npy":
        save_items(translated, out)
    else:  # side by side, in colour when one domain is
        channels = max(fitted.shape[3], translated.shape[3])
        pairs = np.stack([np.repeat(fitted, channels // fitted.shape[3], axis=3),
                          np.repeat(translated, channels // translated.shape[3], axis=3)], axis=1)
        save_items(pairs.reshape(-1, *pairs.shape[2:]), out, ncols=2 * min(4, len(translated)))
    _wrote(f"{len(translated)} translations {model.domains[source]} -> {model.domains[1 - source]} -> {out}", replaced)


MASK_HELP = ("Which pixels are missing: top, bottom, left or right (a band of rows or columns), random (pixels drawn "
             "with --seed), or a mask image whose white pixels are missing.")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mask", default="top", show_default=True, help=MASK_HELP)
@click.option("--missing", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="The share of each image a mask kind hides.")
@click.option("--n", "count", type=click.IntRange(1, 64), default=4, show_default=True, help="Completions per image.")
@click.option("--label", type=int, default=None, help="The images' class, when known: the completions keep it.")
@click.option("--prompt", default=None,
              help="A joint model with captions: what the images show, in words (e.g. \"a thick 7\"); the completions "
                   "follow it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same completions (and random masks).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("imputed.png"), show_default=True,
              help=".png: a row per image: the original, what was seen (missing pixels grey), the completions; "
                   ".npy: the completions, (N, n, H, W, C) uint8.")
@runtime_options
@reports_errors
def impute(bundle, images, mask, missing, count, label, prompt, seed, out, backend, device, precision) -> None:
    """Fill in the missing part of image files (a joint model: gvtool train --model mvae), several ways each."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    import numpy as np

    from gvtool.masks import resolve_masks
    from gvtool.runtime.outputs import check_output, save_items

    check_output(out, (".png", ".npy"), True)
    model = _load(bundle, backend, device, precision, "impute")
    fitted = np.stack(_read_images(images, model))
    masks = resolve_masks(mask, len(fitted), model.item_shape[1], missing, seed)  # once: the completions and the grid
    completed = model.impute(fitted, masks, _condition(model, label, prompt), count, missing, seed)
    if out.suffix.lower() == ".npy":
        save_items(completed, out)
    else:
        seen = masks.transpose(0, 2, 3, 1)
        shown = np.where(seen > 0, fitted, 128).astype(np.uint8)
        rows = np.concatenate([fitted[:, None], shown[:, None], completed], axis=1)
        save_items(rows.reshape(-1, *rows.shape[2:]), out, ncols=rows.shape[1])
    _wrote(f"{len(fitted)} image(s) x {count} completion(s) -> {out}", replaced)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mask", default=None, help=MASK_HELP + " [default: the whole image]")
@click.option("--missing", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="The share of each image a mask kind hides.")
@click.option("--seed", type=int, default=0, show_default=True, help="For --mask random.")
@click.option("--json", "json_out", type=click.Path(path_type=Path),
              help="Also write each image's class probabilities as JSON.")
@runtime_options
@reports_errors
def classify(bundle, images, mask, missing, seed, json_out, backend, device, precision) -> None:
    """The class of image files, from the whole image or the part --mask leaves (a joint model). Prints a line per
    image: the file, its class, the class's probability."""
    import numpy as np

    from gvtool.fileio import atomic_write_text

    model = _load(bundle, backend, device, precision, "classify")
    fitted = np.stack(_read_images(images, model))
    probabilities = model.classify(fitted, mask, missing, seed)
    names = list(model.manifest.model.class_names) or [str(i) for i in range(model.num_classes)]
    rows = []
    for path, p in zip(images, probabilities):
        best = int(p.argmax())
        click.echo(f"{path}\t{names[best]}\t{p[best]:.3f}")
        rows.append({"image": str(path), "class": best, "name": names[best],
                     "probabilities": [round(float(v), 6) for v in p]})
    if json_out:
        atomic_write_text(json_out, json.dumps({"classes": names, "images": rows}, indent=2) + "\n")
        say("wrote", str(json_out), "green")


def _endpoint(value: str, model):
    """An interpolation end from the command line: an integer seed or an image file."""
    from gvtool.errors import BadInputError

    try:
        return int(value)
    except ValueError:
        pass
    if not Path(value).is_file():
        raise BadInputError(f"--from/--to {value!r} is neither an integer seed nor an image file")
    return _read_images([value], model)[0]


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--from", "start", required=True, help="An image file or an integer seed.")
@click.option("--to", "end", required=True, help="An image file or an integer seed.")
@click.option("--steps", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--method", type=click.Choice(["slerp", "lerp"]), default="slerp", show_default=True)
@click.option("--label", type=int, default=None, help="Conditional models: the class along the path.")
@PROMPT_OPTION
@click.option("--out", type=click.Path(path_type=Path), default=Path("interpolation.png"), show_default=True,
              help=".png (a strip), .gif (an animation) or .npy.")
@runtime_options
@reports_errors
def interpolate(bundle, start, end, steps, method, label, prompt, out, backend, device, precision) -> None:
    """Walk the latent space from one image or seed to another."""
    replaced = out.is_file()  # said after writing: the file is replaced, as asked
    from gvtool.runtime.outputs import check_output, save_items

    check_output(out, (".png", ".gif", ".npy"), True)
    model = _load(bundle, backend, device, precision, None)
    a, b = _endpoint(start, model), _endpoint(end, model)
    items = model.interpolate(a, b, steps, method, _condition(model, label, prompt, default_label=0))
    save_items(items, out, ncols=steps)
    _wrote(f"{steps} steps -> {out}", replaced)


@main.command("eval")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--data", "data_source", default=None, help="The real data to compare with [default: the run's own].")
@click.option("--n", "count", type=click.IntRange(min=10), default=None,
              help="Samples to draw [default: 2,500 for 2-D mixtures, 10,000 for stacked-mnist, 2,000 images].")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="For a bundle: which graph variant to evaluate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-b", "data_b_source", default=None,
              help="A translation model: the real data of domain B [default: the run's own].")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the metrics as JSON.")
@reports_errors
def evaluate_command(target, data_source, count, precision, seed, data_b_source, json_out) -> None:
    """Mode coverage and sample quality of a run (torch) or a bundle (any precision); a translation model's
    translations both ways (class kept, Fréchet distance, precision/recall, cycle error)."""
    from gvtool.eval.evaluate import evaluate, json_ready
    from gvtool.fileio import atomic_write_text
    from gvtool.ui import eval_table

    result = evaluate(target, data_source=data_source, n=count, precision=precision, seed=seed,
                      data_b_source=data_b_source, log=lambda line: click.echo(line, err=True))
    _stdout_console().print(eval_table(result))
    if json_out:
        atomic_write_text(json_out, json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n")
        say("wrote", str(json_out), "green")


class _DefaultToRun(click.Group):
    """`gvtool bench [BUNDLE] ...` runs a benchmark; `gvtool bench report A.json ...` merges results."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        """The group's help, then the options of `bench run`, which `gvtool bench [BUNDLE] ...` runs."""
        super().format_help(ctx, formatter)
        run = self.commands["run"]
        sub = click.Context(run, info_name="run", parent=ctx)
        records = [record for param in run.get_params(sub)
                   if isinstance(param, click.Option) and (record := param.get_help_record(sub))]
        with formatter.section("Options of `gvtool bench [run] [BUNDLE]`"):
            formatter.write_dl(records)


@main.group(cls=_DefaultToRun)
def bench() -> None:
    """Latency and throughput across backends, precisions, batch sizes and devices, against PyTorch."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@bench.command("run")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--graph", "graphs", default=None,
              help="Comma-separated graphs (encoder, decoder, prior, coarse, detail, text_encoder; paths translate_ab, "
                   "translate_ba, prompt_to_images) [default: every graph the bundle "
                   "has, each stage of its sampling chain timed on its own].")
@click.option("--batch-sizes", default="1,8,64,256", show_default=True)
@click.option("--backend", "backends", default="onnxruntime,tensorrt,torch", show_default=True,
              help="onnxruntime, tensorrt, onnxruntime-tensorrt, torch (the run's checkpoint in PyTorch eager).")
@click.option("--precision", "precisions", default="fp32,fp16,int8", show_default=True)
@click.option("--device", "devices", default="cpu", show_default=True, help="Comma-separated: cpu, cuda:0, ...")
@click.option("--warmup-ms", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Timed seconds per case (split into interleaved rounds).")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="A fixed number of timed calls instead.")
@click.option("--compile", "with_compile", is_flag=True, help="Also measure torch.compile of the checkpoint.")
@click.option("--cuda-graphs", is_flag=True, help="Also measure TensorRT engines replayed as CUDA graphs.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the results as JSON.")
@click.option("--markdown", "markdown_out", type=click.Path(path_type=Path), help="Write a markdown table.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), help="Write a PNG of latency and throughput.")
@reports_errors
def bench_run(bundle, graphs, batch_sizes, backends, precisions, devices, warmup_ms, duration_s, iterations,
              with_compile, cuda_graphs, json_out, markdown_out, plot_out) -> None:
    """Benchmark a bundle (default: the newest) on this machine."""
    from gvtool.errors import BadInputError
    from gvtool.bench.command import bench_bundle

    try:
        sizes = [int(b) for b in _csv(batch_sizes)]
    except ValueError:
        raise BadInputError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise BadInputError(f"--batch-sizes must be positive, got {batch_sizes!r}")
    report = bench_bundle(bundle, graphs=_csv(graphs) if graphs is not None else None, batch_sizes=sizes, backends=_csv(backends),
                          precisions=_csv(precisions), devices=_csv(devices), warmup_s=warmup_ms / 1000,
                          duration_s=duration_s, iterations=iterations, with_compile=with_compile,
                          cuda_graphs=cuda_graphs,
                          log=lambda line: click.echo(line, err=True))
    _show_bench([report], json_out, markdown_out, plot_out)


@bench.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--markdown", "markdown_out", type=click.Path(path_type=Path), help="Write a markdown table.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), help="Write a PNG of latency and throughput.")
@reports_errors
def bench_report(results, markdown_out, plot_out) -> None:
    """Merge results of several devices or machines (JSON from `gvtool bench --json`) into one table and plot."""
    from gvtool.bench.report import merge

    _show_bench(merge(results), None, markdown_out, plot_out)


def _show_bench(reports, json_out, markdown_out, plot_out) -> None:
    from gvtool.fileio import atomic_write_text
    from gvtool.bench.core import save_report
    from gvtool.bench.report import markdown_table, plot, ratios, result_rows
    from gvtool.ui import bench_table

    rows = result_rows(reports)
    _stdout_console().print(bench_table(rows, ratios(rows)))
    if json_out:
        save_report(reports[0], json_out)
    if markdown_out:
        atomic_write_text(markdown_out, markdown_table(rows) + "\n")
    if plot_out:
        plot(rows, plot_out)
    for path in (json_out, markdown_out, plot_out):
        if path:
            say("wrote", str(path), "green")


if __name__ == "__main__":
    main()
