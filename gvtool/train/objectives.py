"""The losses of every model kind: each returns one named loss per trained network, plus metrics.

The networks are models.py's. Losses are per-item sums (nats), averaged over the batch,
so the weights in ModelConfig keep their meaning across image sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Callable

import torch
from torch.nn import functional as F

from gvtool.train.augment import diff_augment, random_recolour
from gvtool.train.config import ModelConfig
from gvtool.train.device import filled
from gvtool.masks import MASK_KINDS
from gvtool.train.models import coarsen, product_of_experts


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


def e_loss(cfg: ModelConfig, logits: torch.Tensor) -> torch.Tensor:
    """ALI's encoder side of the game: it wants its (item, code) pairs called fake. Hinge +D, or BCE towards fake."""
    logits = logits.float()
    return logits.mean() if cfg.gan_loss == "hinge" else _bce(logits, False)


def _ali(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """Dumoulin et al. 2016 (ALI) / Donahue et al. 2016 (BiGAN): one discriminator of (item, latent) pairs tells the
    encoder's (x, E(x)) from the decoder's (G(z), z); encoder and decoder play one game against it and are trained
    by one loss (each only reaches its own half). No reconstruction term: that the decoder inverts the encoder is
    what the game's equilibrium means, not what a loss asks."""
    b = x.shape[0]
    mean, logvar = nets["encoder"](x)
    z_enc = reparameterize(mean, logvar)
    z_prior = torch.randn_like(z_enc)
    fakes = nets["decoder"](z_prior, y)
    x_d = _real_for_d(cfg, x)
    seen = diff_augment(torch.cat([x_d, fakes]), cfg.augment)
    logits, _ = nets["discriminator"](seen, torch.cat([z_enc, z_prior]), None if y is None else torch.cat([y, y]))
    l_real, l_fake = logits[:b], logits[b:]
    game = cfg.adv_weight * (g_loss(cfg, l_fake) + e_loss(cfg, l_real))
    return StepLosses(
        {"encoder": game, "decoder": game,
         "discriminator": d_loss_real(cfg, l_real) + d_loss_fake(cfg, l_fake) + _r1(cfg, l_real, x_d)},
        {"d_real_acc": _accuracy(l_real, True), "d_fake_acc": _accuracy(l_fake, False),
         "latent_std": z_enc.detach().float().std()},
    )


PRIOR_KL_WEIGHT = 1.0  # the second stage is a plain VAE (Dai & Wipf 2019): its learnt gamma, not beta, sets the fit


def _prior(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """Dai & Wipf 2019's second stage: a VAE over the base model's codes z ~ q(z | x) (its aggregate posterior), with
    a learnt decoder variance gamma. The base encoder is frozen and runs without gradients; sampling then draws
    u ~ N(0, I) and decodes z = prior_decoder(u) in place of z ~ N(0, I)."""
    with torch.no_grad():
        mean, logvar = nets["encoder"](x)
        z = reparameterize(mean, logvar).float()
    u_mean, u_logvar = nets["prior_encoder"](z, y)
    z_rec = nets["prior_decoder"](reparameterize(u_mean, u_logvar), y).float()
    # The variance is a parameter of its own, read outside forward (through DistributedDataParallel's module in a
    # torchrun world, where its gradient is averaged like every other parameter's)
    log_gamma = getattr(nets["prior_decoder"], "module", nets["prior_decoder"]).log_gamma
    # -log N(z; z_rec, diag(gamma)) = sum_k (z_k - z_rec_k)^2 / (2 gamma_k) + log(gamma_k) / 2 + const, per item
    nll = ((z - z_rec).pow(2) / (2 * log_gamma.exp())).sum(dim=1).mean() + 0.5 * log_gamma.sum()
    kl_per_dim = 0.5 * (u_mean.float().pow(2) + u_logvar.float().exp() - 1.0 - u_logvar.float()).mean(dim=0)
    kl = kl_per_dim.sum()
    # Free bits: a dimension's KL costs nothing below cfg.prior_free_bits nats, so the codes' structure is worth
    # encoding from the first step (without them the second stage collapsed to one Gaussian)
    loss = nll + PRIOR_KL_WEIGHT * kl_per_dim.clamp_min(cfg.prior_free_bits).sum()
    return StepLosses({"prior_encoder": loss, "prior_decoder": loss},
                      {"kl": kl.detach(), "recon": F.mse_loss(z_rec.detach(), z),
                       "gamma": log_gamma.detach().mean().exp()})  # the geometric mean over the latent dimensions


def _hier(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None) -> StepLosses:
    """The paper's hierarchical hybrid: a VAE models the coarse item (images pooled to 1/4 of their side; vectors
    whole), and a conditional GAN draws the detail on top of it.

    Encoder, coarse: the ELBO of the coarse item (Gaussian, recon_sigma; beta = kl_weight)
    Detail:          the adversarial loss on items drawn from the coarse stage's reconstructions and prior samples,
                     + structure_weight * the likelihood of that coarse input given the item pooled back down
    Discriminator:   real (x, the reconstruction of its coarse item) against (detail item, its coarse input)
    The detail stage never sees a real coarse item, only what the coarse stage makes of one, so at sampling time
    it gets what it trained on."""
    b = x.shape[0]
    target = coarsen(cfg, x)
    mean, logvar = nets["encoder"](x)
    c_rec = nets["coarse"](reparameterize(mean, logvar), y)
    kl = kl_to_prior(mean, logvar)
    elbo = gaussian_nll(c_rec, target, cfg.recon_sigma) + cfg.kl_weight * kl
    c_prior = nets["coarse"](torch.randn_like(mean), y)
    given = torch.cat([c_rec, c_prior]).detach()  # the detail stage does not train the coarse one
    labels = None if y is None else torch.cat([y, y])
    noise = torch.randn(2 * b, cfg.detail_dim, device=x.device, dtype=mean.dtype)
    fakes = nets["detail"](given, noise, labels)
    x_d = _real_for_d(cfg, x)
    seen = diff_augment(torch.cat([x_d, fakes]), cfg.augment)
    logits, _ = nets["discriminator"](seen, torch.cat([given[:b], given]), None if y is None else torch.cat([y, labels]))
    l_real, l_fake = logits[:b], logits[b:]
    structure = gaussian_nll(coarsen(cfg, fakes), given, cfg.recon_sigma)
    detail = cfg.adv_weight * g_loss(cfg, l_fake) + cfg.structure_weight * structure
    return StepLosses(
        {"encoder": elbo, "coarse": elbo, "detail": detail,
         "discriminator": d_loss_real(cfg, l_real) + d_loss_fake(cfg, l_fake) + _r1(cfg, l_real, x_d)},
        {"kl": kl.detach(), "recon": F.mse_loss(c_rec.detach(), target), "structure": structure.detach(),
         "d_real_acc": _accuracy(l_real, True), "d_fake_acc": _accuracy(l_fake, False)},
    )


def _domain_terms(cfg: ModelConfig, disc, domain: int, x: torch.Tensor, rec: torch.Tensor, cycled: torch.Tensor,
                  translated: torch.Tensor, sampled: torch.Tensor) -> dict[str, torch.Tensor]:
    """One domain's side of the cyclevae step: its discriminator on its real items against its reconstructions, its
    items translated from the other domain and its prior samples; the likelihoods of x given its reconstruction and
    given its cycle through the other domain, in the discriminator's features (Larsen et al.'s learned similarity)
    and, with pixel_weight, in pixels."""
    b = x.shape[0]
    x_d = _real_for_d(cfg, x)
    # x, its reconstruction and its cycle take one augmentation, so that their features compare like with like
    draw = torch.cat([torch.arange(b, device=x.device).repeat(3), torch.arange(b, 3 * b, device=x.device)])
    seen = diff_augment(torch.cat([x_d, rec, cycled, translated, sampled]), cfg.augment, draw, n_draws=3 * b)
    logits, feats = disc(seen, None, domain)
    l_real, l_rec, _, l_trans, l_prior = logits.chunk(5)
    f_real, f_rec, f_cyc = feats[:b].detach(), feats[b:2 * b], feats[2 * b:3 * b]
    return {
        "feat_nll": gaussian_nll(f_rec, f_real, 1.0), "feat_cycle": gaussian_nll(f_cyc, f_real, 1.0),
        "pix_nll": gaussian_nll(rec, x, cfg.recon_sigma), "pix_cycle": gaussian_nll(cycled, x, cfg.recon_sigma),
        "adv": g_loss(cfg, l_rec) + g_loss(cfg, l_trans) + g_loss(cfg, l_prior),
        "d": d_loss_real(cfg, l_real) + (d_loss_fake(cfg, l_rec) + d_loss_fake(cfg, l_trans)
                                         + d_loss_fake(cfg, l_prior)) / 3 + _r1(cfg, l_real, x_d),
        "d_real_acc": _accuracy(l_real, True), "d_trans_acc": _accuracy(l_trans, False),
        "recon": F.mse_loss(rec.detach(), x), "cycle": F.mse_loss(cycled.detach(), x),
    }


def _in_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Images with `channels` channels: colour averaged to grey, or grey repeated into colour."""
    if images.shape[1] == channels:
        return images
    return images.mean(dim=1, keepdim=True) if channels == 1 else images.expand(-1, channels, -1, -1)


def _kept_classes(classifier, x: torch.Tensor, y: torch.Tensor, x_b: torch.Tensor, ab: torch.Tensor, ba: torch.Tensor,
                  classifier_b=None, y_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """cyclevae with domain A's labels, as CyCADA's semantic consistency (Hoffman et al. 2018): a classifier of
    domain A's images learns A's labels from A's real images ("learnt"), and reads the translations ("kept"): A's
    images translated into B must read as their label, B's translated into A as the class it reads from the B image
    itself (a pseudo-label, held fixed; B's images shown to it in A's colour mode). The classifier never learns from
    translations, so the decoders cannot teach it to read what they make; the realism of each domain's translations
    is its discriminator's to judge.

    Where B is labelled too (with A's classes; `classifier_b`, `y_b`), each domain's classifier learns its own
    domain's labels and reads the translations into its domain: A's translated into B by B's classifier, B's into A
    by A's, each against its true label. An A classifier reading translations into B asks them to look like A's
    images, which B's discriminator forbids (mnist -> digits seed 0, 6 epochs: 39% kept with A's classifier alone)."""
    channels = x.shape[1]
    logits_a = classifier(x)
    out = {"learnt": F.cross_entropy(logits_a.float(), y), "acc_a": (logits_a.detach().argmax(dim=1) == y).float().mean()}
    if classifier_b is None:
        with torch.no_grad():
            pseudo = classifier(_in_channels(x_b, channels)).argmax(dim=1)
        logits_ab = classifier(_in_channels(ab, channels))
        kept_ba = F.cross_entropy(classifier(ba).float(), pseudo)
    else:
        logits_b = classifier_b(x_b)
        out |= {"learnt_b": F.cross_entropy(logits_b.float(), y_b),
                "acc_b": (logits_b.detach().argmax(dim=1) == y_b).float().mean()}
        logits_ab = classifier_b(ab)
        kept_ba = F.cross_entropy(classifier(ba).float(), y_b)
    return out | {"kept": F.cross_entropy(logits_ab.float(), y) + kept_ba,
                  "acc_ab": (logits_ab.detach().argmax(dim=1) == y).float().mean()}


def _content_adversary(disc, content: torch.Tensor) -> dict[str, torch.Tensor]:
    """cyclevae with content_adv_weight (DRIT, Lee et al. 2018): the content codes of a batch of A's items, then as
    many of B's (2B, ...). The discriminator learns which domain's encoder gave each code (from the codes detached:
    it never moves the encoders); the encoders' loss is its cross-entropy against 1/2 for every code, least (ln 2)
    when it cannot tell."""
    b = content.shape[0] // 2
    from_a = torch.cat([torch.ones(b, device=content.device), torch.zeros(b, device=content.device)])
    l_d = disc(content.detach()).float()
    l_e = disc(content).float()
    return {"d": F.binary_cross_entropy_with_logits(l_d, from_a),
            "fool": F.binary_cross_entropy_with_logits(l_e, torch.full_like(l_e, 0.5)),
            "acc": ((l_d > 0).float() == from_a).float().mean()}


def _cyclevae(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None, x_b: torch.Tensor,
              y_b: torch.Tensor | None = None) -> StepLosses:
    """UNIT (Liu et al. 2017) built from the VAE-GAN: each domain is a VAE-GAN, both share one latent space (the
    encoders' inner layers and the decoders' are one set of weights, models.Domain*), and translating A -> B is
    decoding A's code with B's decoder. A batch of each domain (unpaired) per step; for each domain d, other o:

    Encoder:       KL(q(z|x_d)) + feature NLL of the reconstruction
                   + cycle_weight * (KL(q(z|x_d->o)) + feature NLL of x_d->o->d)       (UNIT's cycle terms)
    Decoder:       gamma * (feature NLL + cycle_weight * cycle feature NLL) + GAN terms on the reconstructions, the
                   translations into each domain and prior samples of each
    Discriminators (one per domain): real items against those three kinds of fakes
    The KL terms have weight kl_weight, and pixel_weight adds the pixel likelihoods beside the feature ones.
    With style_dim (MUNIT, Huang et al. 2018) a translation keeps the source's content and draws the target's style
    from the prior, the cycle's way back takes the source's own style, and the translation's encoding must give the
    drawn style back (L1, on the encoder and the decoders); with invariance_weight each domain's content code must
    not move when the image is recoloured (its colours inverted, its channels reordered: augment.random_recolour),
    squared distance averaged over both domains' items. With content_adv_weight a discriminator of the content
    codes learns which domain each came from, and the encoders learn to leave it guessing (_content_adversary)."""
    b = x.shape[0]
    enc, dec, disc = nets["encoder"], nets["decoder"], nets["discriminator"]
    mean, logvar = enc((x, x_b), (0, 1))  # (2B, K): A's codes, then B's
    z = reparameterize(mean, logvar)
    z_prior = torch.randn_like(z[:b])
    if cfg.style_dim:  # a translation: the source's content, a style of the target's prior (MUNIT)
        styles = torch.randn_like(z[:, :cfg.style_dim])  # (2B, S): for A's translations into B, then B's into A
        moved = torch.cat([z[:, :-cfg.style_dim], styles], dim=1)
        # Into A: A's codes, B's translated, prior draws; then into B: A's translated, B's codes, prior draws
        to_a, to_b = dec(torch.cat([z[:b], moved[b:], z_prior, moved[:b], z[b:], z_prior]), None, (0, 1))
    else:
        to_a, to_b = dec(torch.cat([z, z_prior]), None, None)  # every code into both domains: (3B, *item) each
    rec_a, ba, prior_a = to_a.chunk(3)
    ab, rec_b, prior_b = to_b.chunk(3)
    # The cycle: the translations encoded in their new domain, decoded back (A -> B -> A first, then B -> A -> B)
    # with the source's own style
    mean_c, logvar_c = enc((ab, ba), (1, 0))
    z_c = reparameterize(mean_c, logvar_c)
    if cfg.style_dim:
        z_c = torch.cat([z_c[:, :-cfg.style_dim], z[:, -cfg.style_dim:]], dim=1)
    aba, bab = dec(z_c, None, (0, 1))
    terms = [_domain_terms(cfg, disc, 0, x, rec_a, aba, ba, prior_a),
             _domain_terms(cfg, disc, 1, x_b, rec_b, bab, ab, prior_b)]

    def total(name: str) -> torch.Tensor:
        return terms[0][name] + terms[1][name]

    # Per domain, as the other models' terms are per item: the KL of a batch of both domains counts each once
    kl, kl_cycle = 2 * kl_to_prior(mean, logvar), 2 * kl_to_prior(mean_c, logvar_c)
    likelihood = total("feat_nll") + cfg.pixel_weight * total("pix_nll")
    cycle = total("feat_cycle") + cfg.pixel_weight * total("pix_cycle")
    losses = {
        "encoder": cfg.kl_weight * kl + likelihood + cfg.cycle_weight * (cfg.kl_weight * kl_cycle + cycle),
        "decoder": cfg.feature_weight * (total("feat_nll") + cfg.cycle_weight * total("feat_cycle"))
                   + cfg.pixel_weight * (total("pix_nll") + cfg.cycle_weight * total("pix_cycle"))
                   + cfg.adv_weight * total("adv"),
        "discriminator": total("d"),
    }
    metrics = {"kl": kl.detach() / 2, "recon": total("recon") / 2, "cycle": total("cycle") / 2}
    if cfg.style_dim:  # a translation's style read back from it: the decoders must show the style they are given
        style_rec = F.l1_loss(mean_c[:, -cfg.style_dim:], styles)
        losses["encoder"] = losses["encoder"] + style_rec
        losses["decoder"] = losses["decoder"] + style_rec
        metrics["style_rec"] = style_rec.detach()
    if cfg.invariance_weight > 0:  # the content code blind to the colours (the style keeps them)
        mean_r, _ = enc((random_recolour(x), random_recolour(x_b)), (0, 1))
        content = cfg.content_dim
        invariance = (mean_r[:, :content] - mean[:, :content]).float().pow(2).sum(dim=1).mean()
        losses["encoder"] = losses["encoder"] + cfg.invariance_weight * invariance
        metrics["invariance"] = invariance.detach()
    if cfg.content_adv_weight > 0:  # both domains' content codes alike (DRIT's content adversary)
        adversary = _content_adversary(nets["content_discriminator"], z[:, :cfg.content_dim])
        losses["encoder"] = losses["encoder"] + cfg.content_adv_weight * adversary["fool"]
        losses["content_discriminator"] = adversary["d"]
        metrics["content_d_acc"] = adversary["acc"]
    if cfg.class_weight > 0:  # domain A's labels kept through translation (a domain-adaptation setting)
        semantic = _kept_classes(nets["classifier"], x, y, x_b, ab, ba, nets["classifier_b"] if cfg.classes_b else None,
                                 y_b)
        # The encoders alone learn it: they must give each image the code whose translation shows its class. Decoders
        # that learnt it too drew what the classifier reads rather than what the domain looks like (mnist-m -> mnist,
        # seed 0, weight 10: FD 470 and 77% kept, against FD 32 and 88% with the encoders alone)
        losses["encoder"] = losses["encoder"] + cfg.class_weight * semantic["kept"]
        losses["classifier"] = semantic["learnt"]
        metrics |= {"class_acc_a": semantic["acc_a"], "class_kept_ab": semantic["acc_ab"]}
        if cfg.classes_b:
            losses["classifier_b"] = semantic["learnt_b"]
            metrics["class_acc_b"] = semantic["acc_b"]
    for d, name in enumerate("ab"):
        metrics |= {f"d_real_acc_{name}": terms[d]["d_real_acc"], f"d_trans_acc_{name}": terms[d]["d_trans_acc"]}
    return StepLosses(losses, metrics)


# mvae's training masks: the share of items seen whole, then of each masks.MASK_KINDS kind; the share hidden by a
# mask is uniform on MASK_MISSING
MASK_MIX = (0.3, 0.125, 0.125, 0.125, 0.125, 0.2)
MASK_MISSING = (0.1, 0.9)


def training_masks(n: int, side: int, device: torch.device | str) -> torch.Tensor:
    """n masks (n, 1, side, side) float32, 1 observed, drawn on the device (no host sync: it runs in a captured step):
    MASK_MIX[0] of the items whole, the rest one of masks.MASK_KINDS each (masks.make_masks's rule: a band of rows
    or columns, or independent pixels) hiding a share uniform on MASK_MISSING."""
    cumulative = filled(list(accumulate(MASK_MIX[:-1])), device)
    kind = (torch.rand(n, 1, device=device) > cumulative).sum(dim=1)  # 0: whole, 1 + index in MASK_KINDS
    low, high = MASK_MISSING
    missing = (low + (high - low) * torch.rand(n, device=device)).view(n, 1, 1, 1)
    centres = (torch.arange(side, device=device) + 0.5) / side
    rows, cols = centres.view(1, 1, side, 1), centres.view(1, 1, 1, side)
    # in MASK_KINDS' order: top, bottom, left, right, random -> (kinds, n, 1, side, side)
    hidden = torch.stack(torch.broadcast_tensors(rows < missing, rows > 1 - missing, cols < missing, cols > 1 - missing,
                                                 torch.rand(n, 1, side, side, device=device) < missing))
    chosen = F.one_hot(kind, len(MASK_KINDS) + 1)[:, 1:].T.view(len(MASK_KINDS), n, 1, 1, 1).bool()
    return (~(hidden & chosen).any(dim=0)).float()


def kl_between(mean_p: torch.Tensor, logvar_p: torch.Tensor, mean_q: torch.Tensor, logvar_q: torch.Tensor
               ) -> torch.Tensor:
    """KL(N(mean_p, exp(logvar_p)) || N(mean_q, exp(logvar_q))) summed over latent dims, averaged over the batch."""
    mean_p, logvar_p, mean_q, logvar_q = (t.float() for t in (mean_p, logvar_p, mean_q, logvar_q))
    return 0.5 * (logvar_q - logvar_p + (logvar_p.exp() + (mean_p - mean_q).pow(2)) / logvar_q.exp() - 1.0
                  ).sum(dim=1).mean()


def _mvae(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor, text: torch.Tensor | None = None) -> StepLosses:
    """A joint model of images and labels (MVAE, Wu & Goodman 2018) with the VAE-GAN's decoder (Larsen et al.): an
    expert per modality, the posterior of any observed subset the product of their Gaussians with the prior. The
    image is seen through a random mask (training_masks); the codes of two subsets, image and label together and
    the image alone, are decoded into both modalities: the whole image, so that a partly seen image is completed
    (inpainting), and the label (classification). The label alone is not decoded: its posterior learns to cover
    the joint posteriors of its class, KL(q(z|x, y) || q(z|y)) with the joint one held fixed (JMVAE-kl, Suzuki et
    al. 2016). MNIST seed 0, drawing from labels: decoding the label's posterior instead (MVAE's own subsampling)
    aimed it at the class's average digit (FD 44, recall 0.49, the class drawn 98.6% of the time); covering the joint
    posteriors, FD 26, recall 0.51, 98.1%; covering the whole images' posteriors (no label in them), recall 0.82 but
    the class drawn 83% of the time (FD 37); covering the masked images' posteriors, 70% (FD 55).

    With captions (`text`: one caption's sentence embedding per item), the caption's expert learns as the label's
    does, to cover the joint posteriors of the images it describes: the posterior given "a thick, slanted seven" lies
    over the thick, slanted sevens' codes, not over every seven's.

    Encoder, classifier: KL + feature NLL of the decoded image + label_weight * cross-entropy, over the two subsets
    Label encoder:       KL(joint posterior || the label's)
    Caption encoder:     KL(joint posterior || the caption's)
    Decoder:             gamma * feature NLL + GAN terms on the two subsets' images and prior samples
    Discriminator:       real vs those fakes"""
    b = x.shape[0]
    mask = training_masks(b, cfg.image_size, x.device)
    image, label = nets["encoder"].expert(x, mask), nets["label_encoder"].expert(y)
    joint, alone = product_of_experts(image, label), product_of_experts(image)
    mean, logvar = torch.cat([joint[0], alone[0]]), torch.cat([joint[1], alone[1]])  # (2B, K)
    label_mean, label_logvar = product_of_experts(label)
    z = reparameterize(mean, logvar)
    fakes = nets["decoder"](torch.cat([z, torch.randn_like(z[:b])]))  # (3B, *item): two decodings, then samples
    logits = nets["classifier"](z)
    x_d = _real_for_d(cfg, x)
    # x and its two decodings take one augmentation, so that their features compare like with like
    draw = torch.cat([torch.arange(b, device=x.device).repeat(3), torch.arange(b, 2 * b, device=x.device)])
    seen = diff_augment(torch.cat([x_d, fakes]), cfg.augment, draw, n_draws=2 * b)
    d_logits, feats = nets["discriminator"](seen, None)
    l_real, l_dec, l_prior = d_logits[:b], d_logits[b:3 * b], d_logits[3 * b:]
    f_real, f_dec = feats[:b].detach().repeat(2, 1), feats[b:3 * b]
    decoded, x2, y2 = fakes[:2 * b], x.repeat(2, 1, 1, 1), y.repeat(2)

    kl = kl_to_prior(mean, logvar)
    feat_nll = gaussian_nll(f_dec, f_real, 1.0)
    pix_nll = gaussian_nll(decoded, x2, cfg.recon_sigma)
    label_nll = F.cross_entropy(logits.float(), y2)
    elbo = cfg.kl_weight * kl + feat_nll + cfg.pixel_weight * pix_nll + cfg.label_weight * label_nll
    target = joint[0].detach(), joint[1].detach()
    cover = kl_between(*target, label_mean, label_logvar)
    adv = g_loss(cfg, l_dec) + g_loss(cfg, l_prior)
    losses = {
        "encoder": elbo, "classifier": elbo, "label_encoder": cover,
        "decoder": cfg.feature_weight * feat_nll + cfg.pixel_weight * pix_nll + cfg.adv_weight * adv,
        "discriminator": d_loss_real(cfg, l_real) + 0.5 * (d_loss_fake(cfg, l_dec) + d_loss_fake(cfg, l_prior))
                         + _r1(cfg, l_real, x_d),
    }
    hidden = 1 - mask
    inpainted = ((decoded[b:].detach() - x).pow(2) * hidden).sum() / (hidden.sum() * x.shape[1]).clamp(min=1)
    metrics = {
        "kl": kl.detach(), "recon": F.mse_loss(decoded[:b].detach(), x), "inpaint": inpainted,
        "label_cover": cover.detach(),
        "label_acc": (logits[b:].detach().argmax(dim=1) == y).float().mean(),  # from the (partly seen) image alone
        "d_real_acc": _accuracy(l_real, True), "d_fake_acc": _accuracy(l_prior, False),
    }
    if text is not None:
        losses["caption_encoder"] = kl_between(*target, *nets["caption_encoder"](text))
        metrics["caption_cover"] = losses["caption_encoder"].detach()
    return StepLosses(losses, metrics)


OBJECTIVES: dict[str, Callable[..., StepLosses]] = {"vaegan": _vaegan, "vae": _vae, "gan": _gan, "ali": _ali,
                                                    "prior": _prior, "hier": _hier, "cyclevae": _cyclevae,
                                                    "mvae": _mvae}


def compute_losses(cfg: ModelConfig, nets, x: torch.Tensor, y: torch.Tensor | None,
                   x_b: torch.Tensor | None = None, text: torch.Tensor | None = None,
                   y_b: torch.Tensor | None = None) -> StepLosses:
    """x: (B, *item) in model range; y: (B,) int64 labels for conditional models (a text-conditioned model's: (B, D)
    sentence embeddings), else None; x_b: cyclevae's batch of domain B (B, *item_b), drawn apart from x (the domains
    are unpaired); text: a joint model's captions, (B, D) sentence embeddings, where it has a caption expert; y_b:
    x_b's labels, for a translation model that learns both domains' classes (classes_b)."""
    if cfg.kind == "cyclevae":
        if x_b is None:
            raise ValueError("a cyclevae step needs a batch of each domain")
        if cfg.classes_b and y_b is None:
            raise ValueError("a cyclevae step with both domains' classes needs domain B's labels")
        return _cyclevae(cfg, nets, x, y if cfg.class_weight > 0 else None, x_b, y_b)
    if cfg.kind == "mvae" and cfg.text_dim:
        if text is None:
            raise ValueError("a joint model with captions steps on a caption per item")
        return _mvae(cfg, nets, x, y, text)
    return OBJECTIVES[cfg.kind](cfg, nets, x, y if cfg.conditional else None)
