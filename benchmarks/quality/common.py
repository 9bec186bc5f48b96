"""What the quality scripts share: reading a figure out of evaluate()'s result, and training a run unless a
finished run of the same config is already there."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from gvtool.train import rundir
from gvtool.train.checkpoint import read_meta
from gvtool.train.config import TrainConfig
from gvtool.train.data import load_dataset
from gvtool.train.loop import complete_config, train

TIMING_FILE = "train_seconds.json"  # beside the checkpoint: the wall time of the training that wrote it


def get(result: dict, path: tuple):
    """result[path[0]][path[1]]..., or None where a key is missing."""
    for key in path:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def holds(run_dir: Path, config: TrainConfig) -> bool:
    """Whether run_dir's checkpoint was trained with `config`, up to what a resume may change (epochs, device,
    precision). The stored config was completed from the data (shape, vector statistics), so `config` is completed
    the same way before comparing, as `train --resume` does."""
    checkpoint = run_dir / rundir.CHECKPOINT_FILE
    if not checkpoint.is_file():
        return False
    data = load_dataset(config.data, image_size=config.image_size, seed=config.seed, n_vectors=config.n_vectors)
    stored = TrainConfig.from_dict(read_meta(checkpoint)["config"])
    return not complete_config(config, data).resume_differences(stored)


def trained(config: TrainConfig, run_dir: Path) -> float:
    """Train `config` into `run_dir` unless it holds a finished run of that very config (and its timing); return
    the training's wall seconds. Anything else in `run_dir` (another config, an unfinished run) is removed first."""
    checkpoint, timing = run_dir / rundir.CHECKPOINT_FILE, run_dir / TIMING_FILE
    if checkpoint.is_file():
        meta = read_meta(checkpoint)
        if not (holds(run_dir, config) and meta["config"]["epochs"] == config.epochs and meta.get("complete")
                and timing.is_file()):
            shutil.rmtree(run_dir)
    if not checkpoint.is_file():
        start = time.perf_counter()
        train(config, run_dir)
        timing.write_text(json.dumps({"train_seconds": time.perf_counter() - start}) + "\n")
    return json.loads(timing.read_text())["train_seconds"]
