"""A trained model rebuilt from its run folder: the checkpoint describes itself. Export, eval and the PyTorch
baseline of `gvtool bench` all load runs through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gvtool.errors import BadInputError
from gvtool.manifest import sha256_file
from gvtool.train import rundir
from gvtool.train.checkpoint import load_weights, read_meta
from gvtool.train.config import TrainConfig
from gvtool.train.ema import average_name
from gvtool.train.models import build_networks


@dataclass(frozen=True)
class RunModel:
    run_dir: Path
    config: TrainConfig
    nets: torch.nn.ModuleDict          # eval mode, on the CPU
    checkpoint_sha256: str
    step: int
    complete: bool                     # False: exported from a run that stopped before its last epoch


def load_run(run_dir: str | Path) -> RunModel:
    """The networks of a run in eval mode, from its checkpoint alone (never unpickled); the generator (the decoder,
    hier's detail stage) is the weight average where the run keeps one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(f"no run folder at {run_dir}")
    path = run_dir / rundir.CHECKPOINT_FILE
    if not path.is_file():
        raise BadInputError(f"{run_dir} has no {rundir.CHECKPOINT_FILE}: a run that never finished an epoch? "
                            "Train it further (gvtool train --resume --out ...) before exporting")
    meta = read_meta(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
    except (KeyError, TypeError) as error:
        raise BadInputError(f"{path} does not describe its model config: {error}") from None
    except BadInputError as error:
        raise BadInputError(f"{path} holds a config that is not valid: {error}") from None
    nets = build_networks(config.model)
    for name, net in nets.items():
        # A run that keeps a weight average samples with it: the average is the decoder that exports.
        stored = average_name(name) if name == config.model.averaged else name
        try:
            net.load_state_dict(load_weights(path, stored))
        except RuntimeError as error:
            raise BadInputError(f"{path}: the {name} weights do not fit its config: {str(error).splitlines()[0]}") from None
    nets.eval()
    return RunModel(run_dir, config, nets, sha256_file(path), int(meta.get("step", 0)), bool(meta.get("complete")))
