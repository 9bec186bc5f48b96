"""The run folder: its file names (the contract with export) and finding the newest run."""

from __future__ import annotations

import time
from pathlib import Path

from gvtool.errors import BadInputError
from gvtool.fileio import newest_holding

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
LOSSES_PNG = "losses.png"


def default_run_dir(kind: str, data: str, root: Path = RUNS_ROOT) -> Path:
    """runs/<kind>-<data name>-<UTC time>; a numeric suffix keeps two runs in one second apart."""
    stem = f"{kind}-{Path(data).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{n}"
    return path


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_FILE).is_file()


def newest_run(root: Path = RUNS_ROOT) -> Path:
    """The run under `root` whose checkpoint was written last."""
    run = newest_holding(root, CHECKPOINT_FILE)
    if run is None:
        raise BadInputError(f"no run with a checkpoint under {root}/; train one first with `gvtool train`")
    return run
