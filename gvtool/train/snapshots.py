"""What a run shows each epoch: samples from fixed latents, held-out reconstruction error, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from gvtool.fileio import atomic_write_text
from gvtool.imaging import save_grid
from gvtool.manifest import CHAINS, cycled_labels, item_name
from gvtool.masks import make_masks
from gvtool.train.config import ModelConfig
from gvtool.train.graphs import condition_input, graph_modules, run_chain, torch_draw, translate
from gvtool.train.data import MIXTURES, Dataset, mixture_centres, to_model, to_uint8
from gvtool.train.metrics_log import read_rows
from gvtool.train.plots import plot_losses, plot_points
from gvtool.train.text import embed_captions

N_POINTS = 2_000  # 2-D samples per scatter: enough to see every mode and its spread
MAX_SAMPLE_IMAGES = 30  # longer runs write samples every few epochs: a 2-D scatter takes 0.2 s, 140 of them 20% of a run


def writes_samples(epoch: int, epochs: int) -> bool:
    """Whether epoch (1-based) of a run of `epochs` writes its sample image: every epoch up to 30 epochs, else
    every ceil(epochs / 30)-th, and always the last."""
    return epoch == epochs or epoch % math.ceil(epochs / MAX_SAMPLE_IMAGES) == 0
EVAL_BATCH = 256
PROMPTS_FILE = "prompts.txt"  # a text-conditioned run: the caption of each image of the sample grids, in grid order
INPAINTED_ITEMS = 8  # mvae: held-out items inpainted under its samples (a row each: items, seen, completed)
TRANSLATED_ITEMS = 8  # cyclevae: held-out items per domain in each epoch's translations (a row of originals, a row
                      # of their translations, per direction)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) images with 3 channels (grey repeated), so that two domains' images tile in one grid."""
    return images.expand(-1, -1, -1, 3) if images.shape[3] == 1 else images


class Snapshots:
    def __init__(self, folder: Path, cfg: ModelConfig, data: Dataset, held_out: Dataset, n_fixed: int, seed: int,
                 device: torch.device, held_out_b: Dataset | None = None):
        self.folder, self.cfg, self.held_out, self.device = Path(folder), cfg, held_out, device
        self.held_out_b = held_out_b  # a translation model's domain B
        n = N_POINTS if cfg.data_kind == "vector" else n_fixed
        # Conditional grids: one column per class, so each column should show one class.
        self.ncols = cfg.num_classes if cfg.conditional and 2 <= cfg.num_classes <= 16 else None
        if self.ncols:
            n = math.ceil(n / self.ncols) * self.ncols
        self.n = n
        self.seed = seed + 1  # apart from the training stream; the same noise every epoch
        self.labels = (torch.tensor(cycled_labels(n, cfg.num_classes), device=device)
                       if cfg.conditional and not cfg.text_conditioned else None)
        self.held_out_conditions = None
        if cfg.text_conditioned and len(held_out):  # the grid draws from held-out items' first captions, listed in prompts.txt
            self.held_out_conditions = embed_captions(tuple(c[:1] for c in held_out.captions), device)[:, 0]
            cycled = [i % len(held_out) for i in range(n)]
            self.labels = self.held_out_conditions[cycled]
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / PROMPTS_FILE, "".join(f"{held_out.captions[i][0]}\n" for i in cycled))
        self.centres = mixture_centres(data.source)[0] if data.source in MIXTURES else None
        self.reference = held_out.x[:N_POINTS].numpy() if cfg.data_kind == "vector" else None

    @torch.no_grad()
    def epoch_end(self, nets, epoch: int, write_samples: bool = True) -> dict:
        """Write samples/epoch_NNNN.png (when write_samples); return the epoch's held-out figures."""
        modes = [(m, m.training) for m in nets.modules()]  # as they were: a prior's frozen networks stay in eval
        nets.eval()
        try:
            if write_samples:
                (self._write_translations if CHAINS[self.cfg.kind].translates else self._write_samples)(nets, epoch)
            row = {"val_recon": self._held_out_recon(nets)} if "encoder" in nets and len(self.held_out) else {}
            if CHAINS[self.cfg.kind].translates and len(self.held_out):
                row["val_cycle"] = self._held_out_cycle(nets)
            if self.cfg.kind == "mvae" and len(self.held_out):
                row["val_inpaint"] = self._held_out_inpaint(nets)
            return row
        finally:
            for module, training in modes:
                module.train(training)

    def _write_samples(self, nets, epoch: int) -> None:
        graphs = graph_modules(self.cfg, nets)
        values = {} if self.labels is None else {condition_input(self.cfg)[0]: self.labels}
        chain = CHAINS[self.cfg.kind].sampling
        draw = torch_draw(torch.Generator().manual_seed(self.seed), self.device)
        out = run_chain(graphs, chain, values, self.n, draw)[item_name(self.cfg.data_kind)].float()
        path = self.folder / f"epoch_{epoch:04d}.png"
        if self.cfg.kind == "mvae" and len(self.held_out):
            out = torch.cat([out, *self._inpainted(nets, self.ncols or INPAINTED_ITEMS)])
        if self.cfg.data_kind == "image":
            save_grid(to_uint8(out).permute(0, 2, 3, 1).cpu().numpy(), path, ncols=self.ncols)
        else:
            plot_points(out.cpu().numpy(), path, centres=self.centres, reference=self.reference,
                        title=f"{self.cfg.kind}, epoch {epoch}")

    def _top_half_completed(self, nets, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A joint model's held-out items [start, stop) in model range, the mask hiding their top half (1 observed)
        and what the decoder makes of the posterior mean given the rest -> (x, mask, decoded)."""
        x = to_model(self.held_out.x[start:stop].to(self.device))
        mask = torch.from_numpy(make_masks("top", len(x), self.cfg.image_size, 0.5)).to(self.device)
        return x, mask, nets["decoder"](nets["encoder"](x, mask)[0]).float()

    def _inpainted(self, nets, n: int) -> list[torch.Tensor]:
        """A joint model's rows under its samples: n held-out items, what is seen of them with the top half
        missing (grey), and their completions (the observed pixels kept)."""
        x, mask, decoded = self._top_half_completed(nets, 0, n)
        return [x, x * mask, x * mask + decoded * (1 - mask)]

    def _held_out_inpaint(self, nets) -> float:
        """A joint model: the mean squared error (model range) on the missing pixels of held-out items whose top half
        is missing, completed from the posterior mean."""
        total, count = torch.zeros((), device=self.device), 0
        for start in range(0, len(self.held_out), EVAL_BATCH):
            x, mask, decoded = self._top_half_completed(nets, start, start + EVAL_BATCH)
            total += ((decoded - x).pow(2) * (1 - mask)).sum()
            count += (1 - mask).sum().item() * x.shape[1]
        return round(total.item() / count, 6)

    def _write_translations(self, nets, epoch: int) -> None:
        """A translation model's epoch image: held-out items of A over their translations into B, then B's over
        theirs into A (the same items every epoch)."""
        graphs = graph_modules(self.cfg, nets)
        rows = []
        for target, held_out in ((1, self.held_out), (0, self.held_out_b)):
            x = to_model(held_out.x[:TRANSLATED_ITEMS].to(self.device))
            rows += [x, translate(graphs, x, target, self.cfg.style_dim).float()]
        images = [as_rgb(to_uint8(row).permute(0, 2, 3, 1).cpu()) for row in rows]
        save_grid(torch.cat(images).numpy(), self.folder / f"epoch_{epoch:04d}.png", ncols=len(images[0]))

    def _held_out_cycle(self, nets) -> float:
        """Mean squared error per value (model range) of A's held-out items translated into B and back."""
        graphs = graph_modules(self.cfg, nets)
        total, count = torch.zeros((), device=self.device), 0
        for start in range(0, len(self.held_out), EVAL_BATCH):
            x = to_model(self.held_out.x[start:start + EVAL_BATCH].to(self.device))
            back = translate(graphs, translate(graphs, x, 1, self.cfg.style_dim), 0, self.cfg.style_dim)
            total += F.mse_loss(back.float(), x, reduction="sum")
            count += x.numel()
        return round(total.item() / count, 6)

    def _held_out_recon(self, nets) -> float:
        """Mean squared error per value (model range) of reconstructions from the posterior mean."""
        total, count = torch.zeros((), device=self.device), 0
        graphs, decoding = graph_modules(self.cfg, nets), CHAINS[self.cfg.kind].decoding
        draw = torch_draw(torch.Generator().manual_seed(self.seed), self.device)
        for start in range(0, len(self.held_out), EVAL_BATCH):
            x = self.held_out.x[start:start + EVAL_BATCH].to(self.device)
            x = to_model(x) if self.cfg.data_kind == "image" else x
            labels = (None if not self.cfg.conditional else self.held_out_conditions[start:start + EVAL_BATCH]
                      if self.cfg.text_conditioned else self.held_out.y[start:start + EVAL_BATCH].to(self.device))
            mean, _ = nets["encoder"](x)
            values = {"latents": mean} | ({} if labels is None else {condition_input(self.cfg)[0]: labels})
            out = run_chain(graphs, decoding, values, len(x), draw)[item_name(self.cfg.data_kind)]
            total += F.mse_loss(out.float(), x, reduction="sum")
            count += x.numel()
        return round(total.item() / count, 6)

    @staticmethod
    def loss_curves(metrics_path: Path, png_path: Path) -> None:
        plot_losses(read_rows(metrics_path), png_path)
