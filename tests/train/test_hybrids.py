"""The hybrids beyond the VAE-GAN: ali (ALI/BiGAN), prior (a second VAE over a base run's codes) and hier (a coarse
VAE, then a detail GAN). Their losses on known inputs, their graphs' wiring, and their training runs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from checkpoint_helpers import assert_same_training_state
from gvtool.errors import BadInputError
from gvtool.manifest import CHAINS
from gvtool.train import rundir
from gvtool.train.checkpoint import load_checkpoint, load_weights
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.graphs import graph_modules, run_chain, torch_draw
from gvtool.train.loop import train
from gvtool.train.models import PriorDecoder, PriorEncoder, build_networks, coarsen
from gvtool.train.objectives import compute_losses, e_loss, g_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- ALI --------------------------------------------------------------------------------------------------------


class _Recorder(nn.Module):
    """A discriminator of pairs that records what it was shown and answers with fixed logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.seen = logits, None
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, z, labels=None):
        self.seen = (x.detach().clone(), z.detach().clone(), labels)
        return self.logits + 0 * self.weight, torch.zeros(len(x), 1)


class _Encoder(nn.Module):
    """Codes 10 * (the item's first value), with a variance so small the sample is the mean."""

    def forward(self, x):
        mean = x.flatten(1)[:, :1].repeat(1, 2) * 10
        return mean, torch.full_like(mean, -60.0)


class _Decoder(nn.Module):
    """Items that record their latent: the latent's first value in every pixel."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, z, labels=None):
        return z[:, :1].view(-1, *([1] * len(self.shape))).expand(-1, *self.shape).contiguous()


class TestAliLoss:
    def setup_method(self):
        torch.manual_seed(0)
        self.cfg = ModelConfig(kind="ali", data_kind="vector", vector_dim=3, latent_dim=2, hidden=8)
        self.x = torch.randn(4, 3)

    def _nets(self, logits):
        return {"encoder": _Encoder(), "decoder": _Decoder((3,)), "discriminator": _Recorder(logits)}

    def test_the_discriminator_sees_real_pairs_x_with_its_code_then_fake_pairs_g_z_with_z(self):
        nets = self._nets(torch.zeros(8))
        compute_losses(self.cfg, nets, self.x, None)
        items, codes, _ = nets["discriminator"].seen
        torch.testing.assert_close(items[:4], self.x)                       # real items ...
        torch.testing.assert_close(codes[:4], self.x[:, :1].repeat(1, 2) * 10)  # ... with their encoder's codes
        z = codes[4:]                                                       # fake pairs: (G(z), z)
        torch.testing.assert_close(items[4:], z[:, :1].expand(-1, 3))

    @pytest.mark.parametrize("gan_loss", ["hinge", "bce"])
    def test_losses_on_known_logits(self, gan_loss):
        cfg = dataclasses.replace(self.cfg, gan_loss=gan_loss)
        real, fake = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([-3.0, 1.0, 0.0, 0.25])
        out = compute_losses(cfg, self._nets(torch.cat([real, fake])), self.x, None)
        if gan_loss == "hinge":
            d = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
            game = -fake.mean() + real.mean()  # the decoder wants its pairs called real, the encoder its pairs fake
        else:
            bce = nn.functional.binary_cross_entropy_with_logits
            d = bce(real, torch.ones(4)) + bce(fake, torch.zeros(4))
            game = bce(fake, torch.ones(4)) + bce(real, torch.zeros(4))
        torch.testing.assert_close(out.losses["discriminator"], d)
        torch.testing.assert_close(out.losses["decoder"], game)
        assert out.losses["encoder"] is out.losses["decoder"]  # one game, one backward pass
        torch.testing.assert_close(game, g_loss(cfg, fake) + e_loss(cfg, real))

    def test_the_encoder_is_trained_by_the_game_alone(self):
        """No reconstruction term: an encoder whose codes D cannot tell from the prior's gets no gradient."""
        cfg = dataclasses.replace(ModelConfig(kind="ali", data_kind="vector", vector_dim=3, latent_dim=2, hidden=8),
                                  spectral_norm=False)
        nets = build_networks(cfg)
        for p in nets["discriminator"].parameters():
            nn.init.zeros_(p)
        out = compute_losses(cfg, nets, self.x, None)
        grads = torch.autograd.grad(out.losses["encoder"], list(nets["encoder"].parameters()), allow_unused=True)
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


# --- prior ------------------------------------------------------------------------------------------------------


class TestPriorLoss:
    def test_the_likelihood_has_a_learnt_variance(self):
        cfg = ModelConfig(kind="prior", base_kind="vae", data_kind="vector", vector_dim=2, latent_dim=3,
                          prior_hidden=8, prior_layers=1, prior_free_bits=0.2)
        nets = build_networks(cfg)
        gamma = torch.tensor([0.25, 1.0, 4.0])
        nets["prior_decoder"].log_gamma.data.copy_(gamma.log())
        torch.manual_seed(0)
        out = compute_losses(cfg, nets, torch.randn(5, 2), None)
        # recompute from the same draws
        torch.manual_seed(0)
        with torch.no_grad():
            mean, logvar = nets["encoder"](torch.randn(5, 2))
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            u_mean, u_logvar = nets["prior_encoder"](z)
            z_rec = nets["prior_decoder"](u_mean + torch.randn_like(u_mean) * (0.5 * u_logvar).exp())
            kl_per_dim = 0.5 * (u_mean.pow(2) + u_logvar.exp() - 1 - u_logvar).mean(0)
            free = kl_per_dim.clamp_min(0.2).sum()  # free bits: no dimension costs less than 0.2 nats
            want = ((z - z_rec).pow(2) / (2 * gamma)).sum(1).mean() + 0.5 * gamma.log().sum() + free
        assert (kl_per_dim < 0.2).any() and free > kl_per_dim.sum()  # the free bits are in play here
        torch.testing.assert_close(out.losses["prior_decoder"], want)
        assert set(out.losses) == {"prior_encoder", "prior_decoder"}  # the base networks are not trained
        torch.testing.assert_close(out.metrics["gamma"], torch.tensor(1.0))  # the geometric mean
        torch.testing.assert_close(out.metrics["kl"], kl_per_dim.sum())    # reported without the free bits

    def test_the_prior_learns_the_codes_distribution_on_a_toy_case(self):
        """Codes at -3 or +3 (one per item's sign) in their first dimension, which N(0, I) would not sample, and N(0, 1)
        noise in the second (a dimension the base left unused): after training, sampling through the prior gives
        first dimensions near -3 and near +3, in about equal shares and few between, and second ones of spread 1."""
        torch.manual_seed(0)
        cfg = ModelConfig(kind="prior", base_kind="vae", data_kind="vector", vector_dim=1, latent_dim=2,
                          prior_hidden=32, prior_layers=2, prior_free_bits=0.0)

        class Codes(nn.Module):
            def forward(self, x):
                mean = torch.cat([3 * torch.sign(x), torch.zeros_like(x)], dim=1)
                return mean, torch.tensor([math.log(0.05 ** 2), 0.0]).expand_as(mean)

        nets = {"encoder": Codes(), "prior_encoder": PriorEncoder(cfg), "prior_decoder": PriorDecoder(cfg)}
        params = [*nets["prior_encoder"].parameters(), *nets["prior_decoder"].parameters()]
        opt = torch.optim.Adam(params, lr=3e-3)
        for _ in range(1500):
            loss = compute_losses(cfg, nets, torch.randn(128, 1), None).losses["prior_decoder"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            graph = graph_modules(cfg, nets | {"decoder": nn.Identity()})["prior"]
            z = graph(torch.randn(4000, 2), torch.randn(4000, 2))
        near = (z[:, 0].abs() - 3).abs() < 0.5
        assert near.float().mean() > 0.7, near.float().mean()  # with the likelihood noise sampled; N(0, I): 4%
        assert 0.35 < (z[near, 0] > 0).float().mean() < 0.65
        assert 0.8 < z[:, 1].std() < 1.2, z[:, 1].std()
        assert (torch.randn(4000).abs() - 3).abs().lt(0.5).float().mean() < 0.05  # what N(0, I) would have given


# --- hier -------------------------------------------------------------------------------------------------------


class TestHierStages:
    def setup_method(self):
        torch.manual_seed(0)

    @pytest.mark.parametrize("conditional", [False, True])
    def test_the_stages_compose_coarse_then_detail(self, make_model_config, conditional):
        cfg = make_model_config(kind="hier", conditional=conditional, num_classes=3 if conditional else 0,
                                image_size=16)
        nets = build_networks(cfg).eval()
        graphs = graph_modules(cfg, nets)
        z, noise = torch.randn(5, cfg.latent_dim), torch.randn(5, cfg.detail_dim)
        labels = torch.tensor([0, 1, 2, 0, 1]) if conditional else None
        values = {"latents": z} | ({"labels": labels} if conditional else {})
        got = run_chain(graphs, CHAINS["hier"].decoding, values, 5, lambda name, n, shape: noise)
        with torch.no_grad():
            coarse = nets["coarse"](z, labels)
            want = nets["detail"](coarse, noise, labels)
        assert coarse.shape == (5, 1, 4, 4)  # 16 / 4
        torch.testing.assert_close(got["coarse"], coarse)
        torch.testing.assert_close(got["images"], want)

    def test_the_encoder_sees_only_the_coarse_image(self, make_model_config):
        cfg = make_model_config(kind="hier", image_size=16)
        encoder = build_networks(cfg)["encoder"].eval()
        x = torch.rand(3, 1, 16, 16) * 2 - 1
        detail = x - nn.functional.interpolate(coarsen(cfg, x), scale_factor=4)  # zero in each 4x4 block's mean
        torch.testing.assert_close(encoder(x)[0], encoder(x - detail)[0])

    def test_losses_pair_the_real_item_with_its_reconstruction_and_keep_the_structure(self, make_model_config):
        cfg = make_model_config(kind="hier", image_size=16, structure_weight=2.0, adv_weight=0.5)
        nets = build_networks(cfg)
        seen = {}
        forward = nets["discriminator"].forward

        def recording(x, coarse, labels=None):
            seen["x"], seen["coarse"] = x.detach(), coarse.detach()
            seen["logits"], features = forward(x, coarse, labels)
            return seen["logits"], features

        nets["discriminator"].forward = recording
        x = torch.rand(4, 1, 16, 16) * 2 - 1
        out = compute_losses(cfg, nets, x, None)
        assert seen["x"].shape == (12, 1, 16, 16)  # 4 real, then 4 from reconstructions and 4 from prior samples
        torch.testing.assert_close(seen["x"][:4], x)
        torch.testing.assert_close(seen["coarse"][:4], seen["coarse"][4:8])  # the real item beside its own coarse
        structure = out.metrics["structure"]
        fakes, given = seen["x"][4:], seen["coarse"][4:]
        sigma = cfg.recon_sigma
        torch.testing.assert_close(structure, (coarsen(cfg, fakes) - given).pow(2).flatten(1).sum(1).mean() / (2 * sigma ** 2))
        torch.testing.assert_close(out.losses["detail"].detach(), 0.5 * -seen["logits"][4:].detach().mean() + 2 * structure)
        assert structure > 0 and set(out.losses) == {"encoder", "coarse", "detail", "discriminator"}
        assert out.losses["encoder"] is out.losses["coarse"]  # one ELBO

    def test_vector_detail_is_a_correction_of_the_coarse_item_in_data_stds(self):
        cfg = ModelConfig(kind="hier", data_kind="vector", vector_dim=2, vector_mean=(1.0, -1.0),
                          vector_std=(2.0, 0.5), hidden=8)
        detail = build_networks(cfg)["detail"].eval()
        for p in detail.net[-1].parameters():
            nn.init.zeros_(p)
        coarse = torch.randn(6, 2)
        torch.testing.assert_close(detail(coarse, torch.randn(6, cfg.detail_dim)), coarse)


# --- training runs ----------------------------------------------------------------------------------------------


HYBRIDS = [("ali", False), ("ali", True), ("hier", False), ("hier", True)]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, labelled_npz, make_train_config, one_torch_thread):
    """A finished tiny vaegan run (conditional or not) that priors learn the codes of."""
    runs = {}

    def get(conditional: bool = False):
        if conditional not in runs:
            run_dir = tmp_path_factory.mktemp("base") / "run"
            train(make_train_config(labelled_npz, conditional=conditional, epochs=1), run_dir)
            runs[conditional] = run_dir
        return runs[conditional]

    return get


def _prior_config(base_dir, **changes) -> TrainConfig:
    config = TrainConfig.for_prior(TrainConfig.from_file(base_dir / rundir.CONFIG_FILE), base_dir)
    model = dataclasses.replace(config.model, prior_hidden=16, prior_layers=1)
    return config.replace(model=model, epochs=2, batch_size=8, device="cpu", n_fixed=16, **changes)


class TestTraining:
    @pytest.mark.parametrize("kind, conditional", HYBRIDS)
    def test_a_run_trains_every_network_of_the_kind_and_resumes_exactly(self, make_train_config, labelled_npz,
                                                                        tmp_path, kind, conditional):
        config = make_train_config(labelled_npz, kind=kind, conditional=conditional, epochs=2)
        whole = train(config, tmp_path / "whole")
        train(config, tmp_path / "split", stop_after_steps=3)
        train(config, tmp_path / "split", resume=True)
        ckpt = load_checkpoint(whole.run_dir / rundir.CHECKPOINT_FILE)
        averaged = "detail" if kind == "hier" else "decoder"
        assert set(ckpt.models) == set(config.model.networks) | {f"{averaged}_ema"}
        assert set(ckpt.optimizers) == set(config.model.networks)
        assert_same_training_state(load_checkpoint(tmp_path / "split" / rundir.CHECKPOINT_FILE), ckpt)
        assert (whole.run_dir / rundir.SAMPLES_DIR / "epoch_0002.png").is_file()

    @pytest.mark.parametrize("conditional", [False, True])
    def test_a_prior_trains_its_own_networks_and_keeps_the_base_as_it_was(self, base_run, tmp_path, conditional):
        base = base_run(conditional)
        result = train(_prior_config(base), tmp_path / "prior")
        path = result.run_dir / rundir.CHECKPOINT_FILE
        ckpt = load_checkpoint(path)
        assert set(ckpt.optimizers) == {"prior_encoder", "prior_decoder"}
        assert set(ckpt.models) == {"encoder", "decoder", "prior_encoder", "prior_decoder"}
        base_path = base / rundir.CHECKPOINT_FILE
        for name, stored in (("encoder", "encoder"), ("decoder", "decoder_ema")):  # the decoder as the base samples
            want = load_weights(base_path, stored)
            for key, tensor in load_weights(path, name).items():  # batch-norm statistics included
                assert torch.equal(tensor, want[key]), f"{name}.{key}"
        assert ckpt.meta["config"]["model"]["conditional"] is conditional

    def test_a_prior_resumes_exactly(self, base_run, tmp_path):
        config = _prior_config(base_run())
        train(config, tmp_path / "whole")
        train(config, tmp_path / "split", stop_after_steps=3)
        train(config, tmp_path / "split", resume=True)
        assert_same_training_state(load_checkpoint(tmp_path / "split" / rundir.CHECKPOINT_FILE),
                                   load_checkpoint(tmp_path / "whole" / rundir.CHECKPOINT_FILE))

    def test_a_prior_trains_in_the_captured_step_exactly_like_the_eager_loop(self, base_run, tmp_path, monkeypatch):
        """The CPU stand-in of the CUDA-graph step (no weight average to keep, frozen networks inside)."""
        from gvtool.train import captured

        config = _prior_config(base_run())
        train(config.replace(cuda_graphs="off"), tmp_path / "eager")
        monkeypatch.setattr(captured, "can_capture", lambda device, precision, distributed: (True, ""))
        train(config, tmp_path / "static")
        assert_same_training_state(load_checkpoint(tmp_path / "static" / rundir.CHECKPOINT_FILE),
                                   load_checkpoint(tmp_path / "eager" / rundir.CHECKPOINT_FILE))

    def test_a_prior_of_a_run_without_an_encoder_is_refused(self, make_train_config, labelled_npz, tmp_path):
        gan = train(make_train_config(labelled_npz, kind="gan"), tmp_path / "gan").run_dir
        with pytest.raises(BadInputError, match="is a gan run; a prior learns the codes of a vaegan, vae, ali run"):
            _prior_config(gan)

    def test_a_prior_whose_base_no_longer_fits_is_refused_in_one_line(self, base_run, tmp_path):
        config = _prior_config(base_run())
        wider = config.replace(model=dataclasses.replace(config.model, width=8))
        with pytest.raises(BadInputError, match="its encoder does not fit this prior's config"):
            train(wider, tmp_path / "prior")

    def test_the_2d_mixtures_train_hier_with_no_structure_term(self, make_train_config, tmp_path):
        assert TrainConfig.defaults_for("ring8").model.structure_weight == 0
        config = make_train_config("ring8", kind="hier")
        config = config.replace(model=dataclasses.replace(config.model, structure_weight=0.0))
        result = train(config, tmp_path / "r")
        rows = [json.loads(line) for line in (result.run_dir / rundir.METRICS_FILE).read_text().splitlines()]
        steps = [r for r in rows if r["type"] == "step"]
        assert len(steps) == result.step > 0
        assert all(math.isfinite(r["loss_detail"]) and r["structure"] >= 0 for r in steps)

    def test_snapshots_sample_through_the_chain(self, base_run, tmp_path):
        """A prior run's per-epoch samples come from the prior, not from N(0, I) latents."""
        result = train(_prior_config(base_run()), tmp_path / "prior")
        assert (result.run_dir / rundir.SAMPLES_DIR / "epoch_0002.png").is_file()
        from gvtool.train.trained import load_run

        run = load_run(result.run_dir)
        graphs = graph_modules(run.config.model, run.nets)
        values = run_chain(graphs, CHAINS["prior"].sampling, {}, 8, torch_draw(torch.Generator().manual_seed(0)))
        assert values["noise"].shape == (8, run.config.model.noise_dim)
        prior = run.nets["prior_decoder"]
        with torch.no_grad():
            want = prior(values["noise"]) + (0.5 * prior.log_gamma).exp() * values["latent_noise"]
        torch.testing.assert_close(values["latents"], want)
