"""The run folder: its file names (the contract with export) and finding the newest run."""

from __future__ import annotations

import json
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


def default_run_dir(kind: str, data: str, data_b: str | None = None, root: Path = RUNS_ROOT) -> Path:
    """runs/<kind>-<data name>[-<domain B's name>]-<UTC time>; a numeric suffix keeps two runs in one second apart."""
    names = "-".join(Path(d).stem or "data" for d in (data, data_b) if d is not None)
    stem = f"{kind}-{names}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{n}"
    return path


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_FILE).is_file()


def newest_run(root: Path = RUNS_ROOT, kinds: tuple[str, ...] | None = None) -> Path:
    """The run under `root` whose checkpoint was written last; with `kinds`, the newest of a model of those kinds."""
    run = newest_holding(root, CHECKPOINT_FILE, accept=lambda folder: kinds is None or _kind(folder) in kinds)
    if run is None:
        which = f"a {' or '.join(kinds)} run" if kinds else "run"
        raise BadInputError(f"no {which} with a checkpoint under {root}/; train one first with `gvtool train`")
    return run


def _kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / CONFIG_FILE).read_text())["model"]["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
