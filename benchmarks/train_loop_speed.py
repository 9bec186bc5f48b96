"""Items/s of the training loop itself (train.loop.train, as `gvtool train` runs it), eager against the captured
CUDA-graph step, per precision and batch size, side by side in one process.

    python benchmarks/train_loop_speed.py [--device cuda] [--data mnist] [--epochs 3] [--batch-sizes 32,256,1024]
                                          [--precisions fp32,bf16] [--graphs off,on] [--json out.json]

Each combination trains a fresh run of the data set's default model for --epochs epochs in a temporary folder and
reports:
- steady items/s: items of one epoch over the median wall time of epochs 2.. (sample grids, held-out
  reconstruction and the checkpoint included: what the per-epoch work costs shows here);
- loop items/s: the loop's own figure (TrainResult.items_per_s, epoch-end work excluded, the first epoch's
  warm-up and capture included);
- the whole run's wall seconds.
Then the ratios of each captured combination to its eager twin, and of bf16 to fp32. Combinations the machine
cannot run (a graph on the CPU, bf16 where the GPU lacks it) are skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gvtool.errors import GvtoolError
from gvtool.train.config import TrainConfig
from gvtool.train.device import resolve_device
from gvtool.train.loop import train


class EpochClock:
    """A Reporter that notes the wall clock at the start and at each epoch's end."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def started(self, info: dict) -> None:
        self.info = info
        self.marks.append(time.perf_counter())

    def advanced(self, step, total, epoch, metrics) -> None:
        pass

    def epoch_done(self, row: dict) -> None:
        self.marks.append(time.perf_counter())


def measure(data: str, device: str, epochs: int, batch: int, precision: str, graphs: str) -> dict:
    config = TrainConfig.defaults_for(data, resolve_device(device).type).replace(
        epochs=epochs, batch_size=batch, precision=precision, cuda_graphs=graphs, device=device)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train(config, Path(folder) / "run", reporter=clock)
        wall = time.perf_counter() - start
    epoch_walls = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    steps_per_epoch = result.step // epochs
    steady = steps_per_epoch * batch / statistics.median(epoch_walls[1:] or epoch_walls)
    return {"data": data, "batch_size": batch, "precision": precision, "cuda_graphs": graphs,
            "captured": clock.info["cuda_graph"], "steps": result.step, "steady_items_per_s": steady,
            "loop_items_per_s": result.items_per_s, "wall_s": wall, "epoch_walls_s": epoch_walls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="32,256,1024")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--graphs", default="off,on")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows, skipped = [], []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for precision in args.precisions.split(","):
            for graphs in args.graphs.split(","):
                try:
                    row = measure(args.data, args.device, args.epochs, batch, precision, graphs)
                except GvtoolError as error:
                    skipped.append(f"batch {batch} {precision} graphs {graphs}: {error}")
                    print(f"skipped: {skipped[-1]}", flush=True)
                    continue
                rows.append(row)
                print(f"batch {batch:5d} {precision} graph {'yes' if row['captured'] else 'no '}: steady "
                      f"{row['steady_items_per_s']:10,.0f} items/s, loop {row['loop_items_per_s']:10,.0f} items/s, "
                      f"{row['wall_s']:.1f} s for {row['steps']} steps", flush=True)
    ratios = []
    for row in rows:
        twin = next((r for r in rows if r["batch_size"] == row["batch_size"] and r["precision"] == row["precision"]
                     and not r["captured"]), None)
        if row["captured"] and twin:
            ratios.append({"what": f"graph / eager, batch {row['batch_size']} {row['precision']}",
                           "steady": row["steady_items_per_s"] / twin["steady_items_per_s"]})
        fp32 = next((r for r in rows if r["batch_size"] == row["batch_size"] and r["precision"] == "fp32"
                     and r["captured"] == row["captured"]), None)
        if row["precision"] == "bf16" and fp32:
            ratios.append({"what": f"bf16 / fp32, batch {row['batch_size']} graph {row['captured']}",
                           "steady": row["steady_items_per_s"] / fp32["steady_items_per_s"]})
    for r in ratios:
        print(f"  {r['what']}: {r['steady']:.2f}x")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "device_name": name, "torch": torch.__version__,
                                               "rows": rows, "ratios": ratios, "skipped": skipped}, indent=2) + "\n")


if __name__ == "__main__":
    main()
