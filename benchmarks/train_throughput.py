"""Training-step throughput (items/s) of vaegan, vae and gan with the default MNIST networks.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--precision fp32|bf16|fp16] [--batch-size 32]
                                          [--graphs] [--windows 7] [--steps 20] [--json out.json]

Runs the loop's own step (gvtool.train.objectives.compute_losses, gvtool.train.loop._update with the loop's
fused Adam, and the decoder's weight average) on synthetic MNIST-shaped batches already on the device,
interleaving the models window by window so that a noisy machine slows them alike; reports the median items/s
per model and the ratios. --graphs (CUDA) adds each model's step captured as one CUDA graph, as the loop runs
it with --cuda-graphs (gvtool.train.captured.CapturedStep: batches gathered by index inside the graph), beside
the eager step. benchmarks/train_loop_speed.py measures the whole loop, per-epoch work included.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.device import AUTOCAST_DTYPES, resolve_device, resolve_precision
from gvtool.train.captured import CapturedStep
from gvtool.train.ema import WeightAverage
from gvtool.train.loop import _adam, _update
from gvtool.train.models import build_networks
from gvtool.train.objectives import compute_losses


def make_step(kind: str, device: torch.device, precision: str, batch: int, graph: bool = False):
    defaults = TrainConfig()
    cfg = ModelConfig(kind=kind)
    fmt = torch.channels_last
    nets = build_networks(cfg).to(device, memory_format=fmt)
    optimizers = {n: _adam(list(m.parameters()), defaults, capturable=graph) for n, m in nets.items()}
    average = WeightAverage(nets["decoder"], cfg.ema_decay) if cfg.ema_decay > 0 else None
    params = {n: list(m.parameters()) for n, m in nets.items()}
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    x = (torch.rand(batch, *cfg.item_shape, device=device) * 2 - 1).contiguous(memory_format=fmt)
    dtype = AUTOCAST_DTYPES[precision]
    if graph:  # the loop's captured step: a dataset on the device, the batch gathered by index inside the graph
        data = (torch.rand(4 * batch, *cfg.item_shape, device=device) * 2 - 1).contiguous(memory_format=fmt)
        index = torch.randperm(4 * batch, device=device)[:batch]

        def body(i):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
                out = compute_losses(cfg, nets, data[i], None)
            _update(out.losses, params, optimizers, scaler)
            return {f"loss_{k}": v.detach() for k, v in out.losses.items()}

        runner = CapturedStep(body, batch, device, average, nets["decoder"], 25)
        return lambda: runner(index, 1_000)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = compute_losses(cfg, nets, x, None)
        _update(out.losses, params, optimizers, scaler)
        if average is not None:
            average.update(nets["decoder"], step=1_000)  # past the warm-up: the decay the run mostly steps with

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--graphs", action="store_true", help="CUDA: add each model's step captured as a CUDA graph")
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {kind: make_step(kind, device, precision, args.batch_size) for kind in ("vaegan", "vae", "gan")}
    if args.graphs:
        if device.type != "cuda" or precision == "fp16":
            parser.error("--graphs needs --device cuda and fp32 or bf16")
        steps |= {f"{kind}+graph": make_step(kind, device, precision, args.batch_size, graph=True)
                  for kind in ("vaegan", "vae", "gan")}
    for step in steps.values():  # warm-up: allocator, oneDNN/cuDNN kernel choice
        for _ in range(5):
            step()
    rates: dict[str, list[float]] = {kind: [] for kind in steps}
    for _ in range(args.windows):
        for kind, step in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            rates[kind].append(args.steps * args.batch_size / (time.perf_counter() - t0))
    medians = {kind: statistics.median(r) for kind, r in rates.items()}
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "precision": precision, "batch_size": args.batch_size, "torch": torch.__version__,
              "items_per_s_median": medians, "items_per_s_windows": rates,
              "vaegan_vs_gan": medians["vaegan"] / medians["gan"], "vaegan_vs_vae": medians["vaegan"] / medians["vae"]}
    print(f"{device} {result['device_name']} threads={result['threads']} {precision} batch {args.batch_size}")
    for kind, value in medians.items():
        spread = f"{min(rates[kind]):,.0f}..{max(rates[kind]):,.0f}"
        print(f"  {kind:7s} {value:9,.0f} items/s median  ({spread} over {args.windows} windows)")
    print(f"  vaegan step costs {1 / result['vaegan_vs_gan']:.2f}x a gan step, {1 / result['vaegan_vs_vae']:.2f}x a vae step")
    for kind in ("vaegan", "vae", "gan"):
        if f"{kind}+graph" in medians:
            result[f"{kind}_graph_vs_eager"] = medians[f"{kind}+graph"] / medians[kind]
            print(f"  {kind} captured: {result[f'{kind}_graph_vs_eager']:.2f}x the eager step's items/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
