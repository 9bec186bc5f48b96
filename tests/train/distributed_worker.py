"""One rank of a tiny torchrun world, for test_distributed.py (not a test itself).

    torchrun --standalone --nproc-per-node N tests/train/distributed_worker.py NPZ OUT STOP_AFTER_STEPS [KIND [BASE]]
    (a cyclevae's BASE is its domain B's data)

Trains a tiny image VAE-GAN (convolutions, batch norm, spectral norm; or another KIND, a prior over the run BASE)
on NPZ into OUT/run through train.loop.train,
as `gvtool train` does under torchrun, then writes OUT/rank<R>.json: the rank's world, the step it stopped at,
and a hash of each network's parameters as this rank ended with them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from gvtool.train import distributed, loop
from gvtool.train.config import ModelConfig, TrainConfig

built = []


def _recording(build):
    def build_and_record(cfg):
        nets = build(cfg)
        if next(nets.parameters()).device.type != "meta":  # the loop's memory check counts parameters on meta
            built.append(nets)
        return nets
    return build_and_record


def _digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    npz, out, stop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    loop.build_networks = _recording(loop.build_networks)
    kind = sys.argv[4] if len(sys.argv) > 4 else "vaegan"
    if kind == "prior":
        config = TrainConfig.for_prior(TrainConfig.from_file(Path(sys.argv[5]) / "config.json"), sys.argv[5])
        config = config.replace(epochs=2, batch_size=8, device="cpu", n_fixed=16, log_every=2)
    else:  # a cyclevae's domain B is the fifth argument
        config = TrainConfig(model=ModelConfig(kind=kind, width=4, latent_dim=4, hidden=16), data=npz, epochs=2,
                             batch_size=8, device="cpu", n_fixed=16, log_every=2,
                             data_b=sys.argv[5] if kind == "cyclevae" else None)
    with distributed.launched(config.device):
        world = distributed.current()
        result = loop.train(config, out / "run", stop_after_steps=stop or None)
    (out / f"rank{world.rank}.json").write_text(json.dumps({
        "rank": world.rank, "size": world.size, "step": result.step, "interrupted": result.interrupted,
        "params": {name: _digest(net) for name, net in built[0].items()}}))


if __name__ == "__main__":
    main()
