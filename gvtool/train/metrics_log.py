"""metrics.jsonl: per-step rows buffered on the device and written in one transfer per flush."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gvtool.fileio import atomic_write_text


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl; a torn last line (a crash mid-append) is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class MetricsLog:
    """Appends {"type": "step", ...} and {"type": "epoch", ...} rows.

    keep_until_step < 0 starts a new file; otherwise rows past that step (written after the
    checkpoint a resumed run starts from) are dropped first, so no step appears twice.
    """

    def __init__(self, path: Path, keep_until_step: int = -1):
        self.path = Path(path)
        kept = [] if keep_until_step < 0 else [r for r in read_rows(self.path) if r.get("step", 0) <= keep_until_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        self._pending: list[tuple[int, int, dict[str, torch.Tensor]]] = []

    def record(self, step: int, epoch: int, values: dict[str, torch.Tensor]) -> None:
        self._pending.append((step, epoch, values))

    def flush(self) -> dict[str, float]:
        """Write the pending step rows; return the mean of each value over them (for display)."""
        if not self._pending:
            return {}
        keys = list(self._pending[0][2])
        # (steps, keys) in one device-to-host copy: the only sync of the window
        table = torch.stack([torch.stack([v[k].float() for k in keys]) for _, _, v in self._pending]).cpu()
        for (step, epoch, _), values in zip(self._pending, table.tolist()):
            row = {"type": "step", "step": step, "epoch": epoch} | {k: round(x, 6) for k, x in zip(keys, values)}
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self._pending.clear()
        return dict(zip(keys, table.mean(dim=0).tolist()))

    def write_epoch(self, row: dict) -> None:
        self._file.write(json.dumps({"type": "epoch"} | row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
