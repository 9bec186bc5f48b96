"""metrics.jsonl: per-step rows buffered on the device and written in one transfer per flush."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

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
    checkpoint a resumed run starts from) are dropped first, so no step appears twice. With no path (the
    ranks of a torchrun world but rank 0) nothing is written, and flush only returns the means.
    """

    def __init__(self, path: Path | None, keep_until_step: int = -1):
        self.path = None if path is None else Path(path)
        self._file = None
        if self.path is not None:
            kept = [] if keep_until_step < 0 else [r for r in read_rows(self.path) if r.get("step", 0) <= keep_until_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            self._file = open(self.path, "a", encoding="utf-8")
        self._pending: list[tuple[int, int, dict[str, torch.Tensor]]] = []

    def record(self, step: int, epoch: int, values: dict[str, torch.Tensor]) -> None:
        self._pending.append((step, epoch, values))

    def flush(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Write the pending step rows; return the mean of each value over them (for display). `reduce` maps the
        (steps, values) table on the device first (the mean over a torchrun world's ranks)."""
        if not self._pending:
            return {}
        keys = list(self._pending[0][2])
        table = torch.stack([torch.stack([v[k].float() for k in keys]) for _, _, v in self._pending])
        if reduce is not None:
            table = reduce(table)
        table = table.cpu()  # (steps, keys) in one device-to-host copy: the only sync of the window
        pending, self._pending = self._pending, []
        if self._file is None:
            return dict(zip(keys, table.mean(dim=0).tolist()))
        for (step, epoch, _), values in zip(pending, table.tolist()):
            row = {"type": "step", "step": step, "epoch": epoch} | {k: round(x, 6) for k, x in zip(keys, values)}
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        return dict(zip(keys, table.mean(dim=0).tolist()))

    def write_epoch(self, row: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"type": "epoch"} | row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
