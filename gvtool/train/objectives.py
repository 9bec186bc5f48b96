"""The losses of vaegan, vae and gan: each returns one named loss per network, plus metrics.

All three share the networks of models.py. Losses are per-item sums (nats), averaged over the batch,
so the weights in ModelConfig keep their meaning across image sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from gvtool.train.augment import diff_augment
from gvtool.train.config import ModelConfig


@dataclass
class StepLosses:
    losses: dict[str, torch.Tensor]   # network name -> the loss its optimizer minimises
    metrics: dict[str, torch.Tensor]  # detached 0-d tensors; read once per flush, not per step


def kl_to_prior(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dims, averaged over the batch."""
    mean, logvar = mean.float(), logvar.float()  # sums of many terms: keep them out of bf16/fp16
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def gaussian_nll(pred: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """-log N(target; pred, sigma^2) up to a constant, summed per item, averaged over the batch."""
    return (pred.float() - target.float()).pow(2).flatten(1).sum(dim=1).mean() / (2.0 * sigma * sigma)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.randn_like(mean) * (0.5 * logvar).exp()


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def d_loss_real(cfg: ModelConfig, logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on items it should call real: hinge max(0, 1 - D) or BCE, batch mean."""
    logits = logits.float()
    return F.relu(1.0 - logits).mean() if cfg.gan_loss == "hinge" else _bce(logits, True)


def d_loss_fake(cfg: ModelConfig, logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on generated items: hinge max(0, 1 + D) or BCE, batch mean."""
    logits = logits.float()
    return F.relu(1.0 + logits).mean() if cfg.gan_loss == "hinge" else _bce(logits, False)


def g_loss(cfg: ModelConfig, logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial loss on its items: hinge -D (Lim & Ye 2017) or the non-saturating BCE."""
    logits = logits.float()
    return -logits.mean() if cfg.gan_loss == "hinge" else _bce(logits, True)


def _accuracy(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return ((logits > 0) == real).float().mean().detach()


def _real_for_d(cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """x as the discriminator should see it: tracked for the R1 penalty's input gradient when it is on."""
    return x.detach().requires_grad_(True) if cfg.r1_weight > 0 else x


def _r1(cfg: ModelConfig, l_real: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """gamma/2 * E ||d logit / d x||^2 on real items (0 when off). Differentiable, so D learns to be smooth there."""
    if cfg.r1_weight <= 0:
        return l_real.new_zeros(())
    (grad,) = torch.autograd.grad(l_real.float().sum(), x, create_graph=True)
    return 0.5 * cfg.r1_weight * grad.float().pow(2).flatten(1).sum(dim=1).mean()


def _vaegan(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """Larsen et al. 2016: reconstruction measured in the discriminator's feature space.

    Encoder:       KL + feature NLL                  (no adversarial gradient reaches it)
    Decoder:       gamma * feature NLL + GAN terms on reconstructions and prior samples
    Discriminator: real vs (reconstructions, prior samples)
    """
    b = x.shape[0]
    mean, logvar = nets["encoder"](x)
    z = reparameterize(mean, logvar)
    z_prior = torch.randn_like(z)
    labels = None if y is None else torch.cat([y, y])  # prior samples take the batch's labels
    fakes = nets["decoder"](torch.cat([z, z_prior]), labels)  # (2B, *item): reconstructions, then samples
    x_d = _real_for_d(cfg, x)
    # A real item and its reconstruction get the same augmentation, so their features compare like with like.
    draw = torch.cat([torch.arange(b, device=x.device).repeat(2), torch.arange(b, 2 * b, device=x.device)])
    seen = diff_augment(torch.cat([x_d, fakes]), cfg.augment, draw, n_draws=2 * b)
    logits, feats = nets["discriminator"](seen, None if y is None else torch.cat([y, labels]))
    l_real, l_rec, l_prior = logits[:b], logits[b:2 * b], logits[2 * b:]
    f_real, f_rec = feats[:b].detach(), feats[b:2 * b]
    x_rec = fakes[:b]

    kl = kl_to_prior(mean, logvar)
    feat_nll = gaussian_nll(f_rec, f_real, 1.0)
    pix_nll = gaussian_nll(x_rec, x, cfg.recon_sigma)
    adv = g_loss(cfg, l_rec) + g_loss(cfg, l_prior)
    r1 = _r1(cfg, l_real, x_d)
    losses = {
        "encoder": cfg.kl_weight * kl + feat_nll + cfg.pixel_weight * pix_nll,
        "decoder": cfg.feature_weight * feat_nll + cfg.pixel_weight * pix_nll + cfg.adv_weight * adv,
        "discriminator": d_loss_real(cfg, l_real) + 0.5 * (d_loss_fake(cfg, l_rec) + d_loss_fake(cfg, l_prior)) + r1,
    }
    metrics = {
        "kl": kl.detach(),
        "recon": F.mse_loss(x_rec.detach(), x),
        "feat_recon": F.mse_loss(f_rec.detach(), f_real),
        "d_real_acc": _accuracy(l_real, True),
        "d_fake_acc": _accuracy(l_prior, False),
        "d_rec_acc": _accuracy(l_rec, False),
    }
    return StepLosses(losses, metrics)


def _vae(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """Kingma & Welling 2014 with a Gaussian pixel likelihood; encoder and decoder share one ELBO."""
    mean, logvar = nets["encoder"](x)
    x_rec = nets["decoder"](reparameterize(mean, logvar), y)
    kl = kl_to_prior(mean, logvar)
    elbo_loss = gaussian_nll(x_rec, x, cfg.recon_sigma) + cfg.kl_weight * kl
    return StepLosses(
        {"encoder": elbo_loss, "decoder": elbo_loss},
        {"kl": kl.detach(), "recon": F.mse_loss(x_rec.detach(), x)},
    )


def _gan(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """Goodfellow et al. 2014: the decoder against the discriminator, with cfg.gan_loss's losses."""
    b = x.shape[0]
    z = torch.randn(b, cfg.latent_dim, device=x.device, dtype=x.dtype)
    fakes = nets["decoder"](z, y)
    x_d = _real_for_d(cfg, x)
    seen = diff_augment(torch.cat([x_d, fakes]), cfg.augment)
    logits, _ = nets["discriminator"](seen, None if y is None else torch.cat([y, y]))
    l_real, l_fake = logits[:b], logits[b:]
    return StepLosses(
        {"decoder": cfg.adv_weight * g_loss(cfg, l_fake),
         "discriminator": d_loss_real(cfg, l_real) + d_loss_fake(cfg, l_fake) + _r1(cfg, l_real, x_d)},
        {"d_real_acc": _accuracy(l_real, True), "d_fake_acc": _accuracy(l_fake, False)},
    )


OBJECTIVES: dict[str, Callable[..., StepLosses]] = {"vaegan": _vaegan, "vae": _vae, "gan": _gan}


def compute_losses(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """x: (B, *item) in model range; y: (B,) int64 labels for conditional models, else None."""
    return OBJECTIVES[cfg.kind](cfg, nets, x, y if cfg.conditional else None)
