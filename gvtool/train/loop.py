"""The training loop: one optimizer per network, written once and looped over.

Data lives on the device for the whole run (uint8 images are 4x smaller than floats), batches are
sliced there, and metrics stay on the device until a flush every `log_every` steps, so a step makes
no host-device sync of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from gvtool import __version__, system
from gvtool.errors import BadInputError
from gvtool.fileio import atomic_write_text, folder_lock, remove_leftovers
from gvtool.train import captured, distributed, rundir
from gvtool.train.checkpoint import load_checkpoint, read_meta, save_checkpoint
from gvtool.train.captions import captioned
from gvtool.train.config import FROZEN, RESUME_OVERRIDES, TrainConfig
from gvtool.train.data import Dataset, load_dataset, load_domain_b, split, to_model
from gvtool.train.device import AUTOCAST_DTYPES, resolve_device, resolve_precision
from gvtool.train.ema import WeightAverage, average_name
from gvtool.train.metrics_log import MetricsLog
from gvtool.train.models import build_networks, count_parameters
from gvtool.train.objectives import compute_losses
from gvtool.train.snapshots import Snapshots, writes_samples
from gvtool.train.text import embed_captions, text_dim


class Reporter(Protocol):
    """What the loop tells its caller (the CLI draws it with rich)."""

    def started(self, info: dict) -> None: ...
    def advanced(self, step: int, total: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def epoch_done(self, row: dict) -> None: ...


class _Silent:
    def started(self, info: dict) -> None: pass
    def advanced(self, step: int, total: int, epoch: int, metrics: dict[str, float]) -> None: pass
    def epoch_done(self, row: dict) -> None: pass


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    interrupted: bool       # Ctrl-C: a checkpoint was saved, `--resume` continues
    items_per_s: float      # training throughput of this invocation, epoch-end work excluded


def load_data(config: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """A run's data as training sees it: --data (with its --captions) and a translation model's domain B."""
    data = load_dataset(config.data, image_size=config.image_size, seed=config.seed, n_vectors=config.n_vectors)
    data = captioned(data, config.captions)
    data_b = load_domain_b(config.data_b, data) if config.model.kind == "cyclevae" else None
    return data, data_b


def complete_config(config: TrainConfig, data: Dataset, data_b: Dataset | None = None) -> TrainConfig:
    """Fill the model's data-dependent fields (shape, classes, vector statistics) from the loaded data (and a
    translation model's domain B)."""
    model = config.model
    text = data.captions is not None and model.conditional
    joint = model.kind == "mvae"  # its captions are a modality beside its labels, not in their place
    if model.conditional and data.num_classes == 0 and (not text or joint):
        needs = "--model mvae learns images with their labels" if model.kind == "mvae" else "--conditional needs labelled data"
        raise BadInputError(f"{needs}, and {data.source} has no labels "
                            "(use a folder with one subfolder per class, or an .npz with a `y` array)")
    shape = data.shape
    if data.kind == "image":
        fields = {"data_kind": "image", "channels": shape[0], "image_size": shape[1]}
    else:  # the networks standardise inside with these (rounded: the config is read by people too)
        std = data.x.double().std(dim=0).clamp_min(1e-6) if len(data) > 1 else torch.ones(shape[0], dtype=torch.float64)
        fields = {"data_kind": "vector", "vector_dim": shape[0],
                  "vector_mean": tuple(float(f"{v:.6g}") for v in data.x.double().mean(dim=0).tolist()),
                  "vector_std": tuple(float(f"{v:.6g}") for v in std.tolist())}
    if model.class_weight > 0 and data.num_classes == 0:
        raise BadInputError(f"--class-weight learns domain A's classes, and {data.source} has no labels (use a folder "
                            "with one subfolder per class, or an .npz with a `y` array)")
    fields["num_classes"] = (data.num_classes if (model.conditional or model.class_weight > 0) and (not text or joint)
                             else 0)
    if text:  # the networks take a sentence embedding where a conditional model takes labels (mvae: its caption expert)
        fields["text_dim"] = text_dim()
    if data_b is not None:
        fields["channels_b"] = data_b.shape[0]
        if model.class_weight > 0 and data_b.num_classes == data.num_classes:  # B labelled too, with A's classes
            fields["classes_b"] = data_b.num_classes
    return config.replace(model=dataclasses.replace(model, **fields))


class _StopFlag:
    """Ctrl-C sets a flag the loop checks between steps, so a checkpoint is never taken mid-update.
    A second Ctrl-C interrupts at once. Under torchrun, SIGTERM (how torchrun stops its workers when it is
    interrupted) sets it too, and the ranks agree on the step to stop at (see train)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT,)) -> None:
        self.set = False
        self.signals = signals

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    @contextlib.contextmanager
    def installed(self):
        try:
            previous = {s: signal.signal(s, self._handle) for s in self.signals}
        except ValueError:  # not the main thread: leave the signals alone
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _restore(path: Path, device: torch.device, nets, optimizers, ema: WeightAverage | None, ema_of: str | None,
             scaler, data_rng: torch.Generator, world: distributed.World) -> tuple[int, int, int]:
    """Load a checkpoint into the networks, optimizers, weight average, scaler and RNGs; return (step, epoch,
    batch in epoch). The checkpoint holds rank 0's noise generator; other ranks of a torchrun world reseed theirs
    from the step, so the data order resumes exactly at any world size and the noise at a world of one."""
    ckpt = load_checkpoint(path, map_location=device)
    try:
        for name, net in nets.items():
            net.load_state_dict(ckpt.models[name])
            if name in optimizers:  # a prior's frozen base networks have none
                optimizers[name].load_state_dict(_as_built(ckpt.optimizers[name], optimizers[name]))
                _match_layouts(optimizers[name])
        if ema is not None:
            ema.net.load_state_dict(ckpt.models[average_name(ema_of)])
    except (KeyError, RuntimeError, ValueError) as error:
        raise BadInputError(f"{path} does not fit the model its config describes (has the data changed?): "
                            f"{str(error).splitlines()[0]}") from None
    if ckpt.meta.get("scaler"):
        scaler.load_state_dict(ckpt.meta["scaler"])
    if world.is_main:
        torch.set_rng_state(ckpt.rng["torch"])
        if device.type == "cuda" and "cuda" in ckpt.rng:
            torch.cuda.set_rng_state(ckpt.rng["cuda"], device)
    else:
        torch.manual_seed(distributed.rank_seed(ckpt.meta["config"]["seed"], world) + ckpt.meta["step"])
    data_rng.set_state(ckpt.rng["data_epoch"])  # the state the current epoch's permutation was drawn from
    return ckpt.meta["step"], ckpt.meta["epoch"], ckpt.meta["batch_in_epoch"]


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor (Adam's moments) its parameter's memory layout. A checkpoint stores them
    contiguous, while conv weights train channels_last; fused Adam walks a parameter and its moments in memory
    order, so mismatched strides would pair the wrong elements."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param).copy_(value)  # empty_like keeps param's strides


# Bytes a parameter costs in training: fp32 weight, gradient, Adam's two moments, and the weight average's copy
BYTES_PER_PARAMETER = 4 * 5


def _check_memory(mcfg, device: torch.device) -> None:
    """Refuse networks whose weights and optimizer state could not fit in this device's free memory, before any is
    allocated: they are counted on the meta device, which holds shapes and no data (--width 1024, the bound, is
    about 200 M parameters on MNIST, 4 GB to train)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build_networks(mcfg).parameters())
    needed = count * BYTES_PER_PARAMETER
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = system.available_memory()
    if free is not None and needed > free:
        raise BadInputError(f"the networks have {count / 1e6:,.0f} M parameters: training them needs about "
                            f"{needed / 1e9:,.1f} GB, and {free / 1e9:,.1f} GB is free on {device}; pass a smaller "
                            "--width or --hidden")


def _as_built(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved optimizer state with this process's `capturable` and `fused` flags: a run saved by an eager step (the
    CPU, a torchrun world) and resumed by a captured one needs its step counts on the device (load_state_dict puts
    them there for a capturable group), and a torch without a fused Adam for this device resumes a fused one."""
    groups = [saved | {key: built[key] for key in ("capturable", "fused") if key in built}
              for saved, built in zip(state["param_groups"], optimizer.param_groups)]
    return state | {"param_groups": groups}


def _adam(params: list, config: TrainConfig, capturable: bool = False) -> torch.optim.Adam:
    """Fused Adam (one kernel over all of a network's tensors) where this torch has it for the parameters'
    device: 1.22x the training items/s of a 2-D VAE-GAN run on this project's CPU, where the MLPs are so small
    that per-tensor overhead dominates. Older torch builds without it fall back to the default Adam.
    `capturable` keeps every step count on the device, for a step captured as a CUDA graph."""
    kwargs = {"lr": config.lr, "betas": (config.beta1, config.beta2)} | ({"capturable": True} if capturable else {})
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # fused Adam unsupported for this device or torch version
        return torch.optim.Adam(params, **kwargs)


def _update(losses: dict[str, torch.Tensor], params: dict[str, list], optimizers: dict, scaler) -> None:
    """One optimizer step per network, each on the gradient of its own loss only.

    backward(inputs=...) keeps one network's loss from leaking gradient into another network (the
    decoder's adversarial loss must not train the discriminator, nor reach the encoder). Networks
    that share one loss object (the VAE's ELBO) get one backward pass between them.
    """
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    groups: dict[int, tuple[torch.Tensor, list]] = {}
    for name, loss in losses.items():
        groups.setdefault(id(loss), (loss, []))[1].extend(params[name])
    for i, (loss, inputs) in enumerate(groups.values()):
        scaler.scale(loss).backward(inputs=inputs, retain_graph=i < len(groups) - 1)
    for opt in optimizers.values():
        scaler.step(opt)
    scaler.update()


RECALIBRATION_BATCHES = 16  # x 128 prior samples: the average's batch-norm statistics, ~0.2 s an epoch on 2 cores
RECALIBRATION_BATCH = 128


def _prior_batches(cfg, nets, device: torch.device, seed: int, epoch: int, conditions: torch.Tensor | None = None):
    """The averaged network's inputs for recalibrating its average, as sampling feeds it: prior latents (and uniform
    labels) for a decoder (a translation model's: into both domains); for hier's detail stage, the coarse stage's items
    from those latents and detail noise. From a generator of their own, so the training stream (and an exact resume)
    is untouched. A text-conditioned model's labels are training captions' embeddings (`conditions`, (N, K, D)) drawn
    at random."""
    gen = torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)
    for _ in range(RECALIBRATION_BATCHES):
        z = torch.randn(RECALIBRATION_BATCH, cfg.latent_dim, generator=gen, device=device)
        labels = (torch.randint(cfg.num_classes, (RECALIBRATION_BATCH,), generator=gen, device=device)
                  if cfg.conditional and not cfg.text_conditioned else None)
        if cfg.text_conditioned:
            pool = conditions.flatten(0, 1)
            labels = pool[torch.randint(len(pool), (RECALIBRATION_BATCH,), generator=gen, device=device)]
        if cfg.averaged == "detail":
            with torch.no_grad():
                coarse = nets["coarse"](z, labels)
            yield coarse, torch.randn(RECALIBRATION_BATCH, cfg.detail_dim, generator=gen, device=device), labels
        elif cfg.kind == "cyclevae":
            yield z, None, None
        else:
            yield z, labels


def _start_from_base(config: TrainConfig, nets) -> None:
    """A prior run starts from its base run's encoder and decoder (the decoder as it samples: its average), frozen."""
    from gvtool.train.trained import load_run

    base = load_run(config.base)
    for name in FROZEN[config.model.kind]:
        try:
            nets[name].load_state_dict(base.nets[name].state_dict())
        except (KeyError, RuntimeError) as error:
            raise BadInputError(f"--base {config.base}: its {name} does not fit this prior's config (was the base run "
                                f"trained again since?): {str(error).splitlines()[0]}") from None


def _train_mode(nets, cfg) -> None:
    """Training mode for the networks that train; a prior's frozen base networks stay in eval (batch norm keeps
    the base's statistics)."""
    nets.train()
    for name in FROZEN.get(cfg.kind, ()):
        nets[name].eval().requires_grad_(False)


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, reporter: Reporter | None = None,
          stop_after_steps: int | None = None) -> TrainResult:
    """Train (or, with resume, continue) the run in `run_dir`. `stop_after_steps` stops early as Ctrl-C would.

    The run folder is locked for the whole training (fileio.folder_lock): a second trainer of the same folder,
    fresh or resumed, is refused with the holder's pid and host, and what a killed trainer left half-written
    (hidden temp files) is removed first. In a torchrun world (distributed.launched has joined the process group)
    every rank calls this: each trains its slice of every batch of --batch-size items, DistributedDataParallel
    averages the gradients, and rank 0 alone locks and writes the run folder and reports."""
    run_dir = Path(run_dir)
    if not distributed.current().is_main:
        return _train(config, run_dir, resume, reporter, stop_after_steps)
    with folder_lock(run_dir, "gvtool train"):
        for name in (rundir.CONFIG_FILE, rundir.CHECKPOINT_FILE, rundir.METRICS_FILE, rundir.LOSSES_PNG):
            remove_leftovers(run_dir, f".{name}.*.tmp")  # atomic_write's temp names: only what a trainer writes
        remove_leftovers(run_dir / rundir.SAMPLES_DIR, ".epoch_*.png.*.tmp")
        return _train(config, run_dir, resume, reporter, stop_after_steps)


def _train(config: TrainConfig, run_dir: Path, resume: bool, reporter: Reporter | None,
           stop_after_steps: int | None) -> TrainResult:
    world = distributed.current()
    reporter = (reporter or _Silent()) if world.is_main else _Silent()
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / rundir.CHECKPOINT_FILE
    if resume and not checkpoint_path.is_file():
        raise BadInputError(f"cannot resume {run_dir}: it has no {rundir.CHECKPOINT_FILE}")
    if not resume and checkpoint_path.is_file():
        raise BadInputError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")

    device_spec = config.device
    if world.is_distributed:  # each rank on its own GPU (cuda:LOCAL_RANK) or on the CPU
        device_spec = distributed.device_spec(config.device, world, torch.cuda.is_available())
    device = resolve_device(device_spec)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    data, data_b = load_data(config)
    config = complete_config(config, data, data_b)
    if resume:
        try:
            stored = TrainConfig.from_dict(read_meta(checkpoint_path)["config"])
        except (KeyError, TypeError, BadInputError) as error:
            raise BadInputError(f"cannot resume {run_dir}: {checkpoint_path} holds no valid config ({error})") from None
        changed = config.resume_differences(stored)
        if changed:
            raise BadInputError(f"cannot resume {run_dir} with another config: {', '.join(changed)} differ from its "
                                f"checkpoint; only {', '.join(RESUME_OVERRIDES)} may change")
    train_set, held_out = split(data, config.val_fraction, config.split_seed)
    if len(train_set) < config.batch_size:
        raise BadInputError(f"--batch-size {config.batch_size} is larger than the {len(train_set)} training items of "
                            f"{config.data}")
    distributed.check_batch(config.batch_size, world)
    # A translation model's domain B: its own split, and batches drawn apart from A's (the domains are unpaired)
    train_b, held_out_b = split(data_b, config.val_fraction, config.split_seed) if data_b is not None else (None, None)

    graphed, why_not = captured.can_capture(device, precision, world.is_distributed)
    if config.cuda_graphs == "on" and not graphed:
        raise BadInputError(f"--cuda-graphs on cannot be met here: {why_not}; pass --cuda-graphs auto or off")
    graphed = graphed and config.cuda_graphs != "off"

    mcfg = config.model
    _check_memory(mcfg, device)
    # channels_last: oneDNN (CPU) and cuDNN's tensor-core kernels run these convs ~1.3x faster in NHWC
    memory_format = torch.channels_last if mcfg.data_kind == "image" else torch.contiguous_format
    nets = build_networks(mcfg).to(device, memory_format=memory_format)
    if mcfg.kind in FROZEN and not resume:
        _start_from_base(config, nets)
    _train_mode(nets, mcfg)
    optimizers = {name: _adam(list(nets[name].parameters()), config, capturable=graphed) for name in mcfg.trained}
    # Only rank 0 samples and saves, so only it keeps the average
    averaged = mcfg.averaged
    ema = WeightAverage(nets[averaged], mcfg.ema_decay) if averaged and world.is_main else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    data_rng = torch.Generator().manual_seed(config.seed)
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume:
        step, epoch, batch_in_epoch = _restore(checkpoint_path, device, nets, optimizers, ema, averaged, scaler, data_rng,
                                               world)
        if epoch >= config.epochs:
            raise BadInputError(f"{run_dir} already finished its {config.epochs} epochs; pass a larger --epochs to train on")
    elif not world.is_main:
        torch.manual_seed(distributed.rank_seed(config.seed, world))  # its own noise; the weights come from rank 0
    # What the step runs: the networks themselves, or (torchrun) their DistributedDataParallel wrappers, which
    # average each network's gradients over the ranks as its own backward pass produces them
    stepped = dict(nets.items()) if not world.is_distributed else {
        name: distributed.wrapped(net, device) if name in mcfg.trained else net for name, net in nets.items()}
    distributed.sync_buffers(nets.values(), world)  # the ranks start alike; their buffers are their own from there
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Written again on resume: --epochs, --device or --precision may have changed.
        atomic_write_text(run_dir / rundir.CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")

    log = MetricsLog(run_dir / rundir.METRICS_FILE if world.is_main else None, keep_until_step=step if resume else -1)
    snaps = (Snapshots(run_dir / rundir.SAMPLES_DIR, mcfg, data, held_out, config.n_fixed, config.seed, device,
                       held_out_b) if world.is_main else None)
    steps_per_epoch = len(train_set) // config.batch_size  # drop the ragged last batch: fixed shapes, steady BN
    total_steps = steps_per_epoch * config.epochs
    reporter.started({
        "run_dir": str(run_dir), "device": str(device), "precision": precision, "resumed_at_step": step,
        "train_items": len(train_set), "held_out_items": len(held_out), "item_shape": list(data.shape),
        "parameters": {name: count_parameters(net) for name, net in nets.items()}, "total_steps": total_steps,
        "cuda_graph": graphed, "processes": world.size,
    })

    x_all = train_set.x.to(device, memory_format=memory_format)  # (N, C, H, W) uint8 or (N, D) float32
    y_all = train_set.y.to(device) if train_set.y is not None else None
    # (N, captions per item, text_dim) sentence embeddings: a text-conditioned model's "labels", a joint model's captions
    captions_all = embed_captions(train_set.captions, device) if mcfg.text_dim else None
    if mcfg.text_conditioned:
        y_all = captions_all
    x_b_all = train_b.x.to(device, memory_format=memory_format) if train_b is not None else None
    y_b_all = train_b.y.to(device) if mcfg.classes_b else None
    autocast_dtype = AUTOCAST_DTYPES[precision]
    params = {name: list(nets[name].parameters()) for name in mcfg.trained}

    def body(index: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of every network on the items at `index` (a translation model's: A's items, then B's); its
        losses and metrics, left on the device."""
        x_b = y_b = None
        if x_b_all is not None:
            index, index_b = index.chunk(2)
            x_b = to_model(x_b_all[index_b])
            y_b = y_b_all[index_b] if y_b_all is not None else None
        x = to_model(x_all[index]) if data.kind == "image" else x_all[index]
        y = y_all[index] if y_all is not None else None
        text = None
        if captions_all is not None:  # one of each item's captions, drawn afresh at every step
            text = captions_all[index, torch.randint(captions_all.shape[1], (len(index),), device=device)]
            y = text if mcfg.text_conditioned else y
        # A captured step must not use autocast's cache of cast weights: the cache is filled at capture, and
        # PyTorch's CUDA-graph notes require cache_enabled=False under capture
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                            cache_enabled=not graphed):
            out = compute_losses(mcfg, stepped, x, y, x_b, text, y_b)
        _update(out.losses, params, optimizers, scaler)
        return {f"loss_{k}": v.detach() for k, v in out.losses.items()} | out.metrics

    # The captured step (CUDA; the CPU's StaticStep when a test stands in for it) or the plain one
    runner = None
    if graphed:
        kind = captured.CapturedStep if device.type == "cuda" else captured.StaticStep
        index_size = config.batch_size * (2 if x_b_all is not None else 1)  # a translation model's: A's, then B's
        runner = kind(body, index_size, device, ema, nets[averaged] if averaged else None, config.log_every)

    def save(epoch_rng_state: torch.Tensor) -> None:
        if not world.is_main:
            return
        rng = {"torch": torch.get_rng_state(), "data_epoch": epoch_rng_state}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        meta = {"config": config.to_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "gvtool_version": __version__,
                "precision": precision, "complete": epoch >= config.epochs}
        models = dict(nets.items()) | ({average_name(averaged): ema.net} if ema is not None else {})
        save_checkpoint(checkpoint_path, meta=meta, models=models, optimizers=optimizers, rng=rng)

    def flushed() -> dict[str, float]:
        return log.flush(reduce=lambda table: distributed.mean_over_ranks(table, world))

    interrupted, start_step, train_seconds = False, step, 0.0
    stop_signals = (signal.SIGINT, signal.SIGTERM) if world.is_distributed else (signal.SIGINT,)
    with _StopFlag(stop_signals).installed() as stop:
        while epoch < config.epochs and not interrupted:
            epoch_rng_state = data_rng.get_state()
            order = torch.randperm(len(train_set), generator=data_rng).to(device)
            order_b = torch.randperm(len(train_b), generator=data_rng).to(device) if train_b is not None else None
            _train_mode(nets, mcfg)
            t0 = time.perf_counter()
            while batch_in_epoch < steps_per_epoch:
                index = order[batch_in_epoch * config.batch_size:(batch_in_epoch + 1) * config.batch_size]
                index = distributed.shard(index, world)
                if order_b is not None:  # B's epoch is A's length: its order wraps around when it is shorter
                    at = torch.arange(batch_in_epoch * config.batch_size, (batch_in_epoch + 1) * config.batch_size)
                    index = torch.cat([index, distributed.shard(order_b[at % len(train_b)], world)])
                step += 1
                if runner is not None:
                    values = runner(index, step)
                else:
                    values = body(index)
                    if ema is not None:
                        ema.update(nets[averaged], step)
                batch_in_epoch += 1
                log.record(step, epoch + 1, values)
                flush_now = step % config.log_every == 0 or batch_in_epoch == steps_per_epoch
                reporter.advanced(step, total_steps, epoch + 1, flushed() if flush_now else {})
                # A signal reaches the ranks at different steps: they agree on it at each flush, a collective
                # every rank reaches at the same step (a world of one stops at the next step)
                signalled = stop.set if not world.is_distributed else (
                    flush_now and distributed.any_rank(stop.set, device, world))
                if signalled or (stop_after_steps is not None and step >= stop_after_steps):
                    interrupted = True
                    break
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - t0
            if interrupted:
                flushed()
                save(epoch_rng_state)
                break
            epoch += 1
            batch_in_epoch = 0
            if not world.is_main:
                continue
            if ema is not None:
                ema.recalibrate(_prior_batches(mcfg, nets, device, config.seed, epoch,
                                               y_all if mcfg.text_conditioned else None))
            shown = nn.ModuleDict(dict(nets.items()) | ({averaged: ema.net} if ema is not None else {}))
            row = {"epoch": epoch, "step": step} | snaps.epoch_end(shown, epoch, writes_samples(epoch, config.epochs))
            log.write_epoch(row)
            reporter.epoch_done(row)
            save(data_rng.get_state())
    log.close()
    if not interrupted and world.is_main:
        snaps.loss_curves(log.path, run_dir / rundir.LOSSES_PNG)
    distributed.barrier(world, device)  # the run folder is complete before any rank returns
    items = (step - start_step) * config.batch_size
    return TrainResult(run_dir, step, epoch, interrupted, items / train_seconds if train_seconds else 0.0)
