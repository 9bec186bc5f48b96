"""Building the networks, their shapes and losses; the configs that describe them; device resolution."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gvtool.errors import BackendUnavailableError, BadInputError
from gvtool.train.config import CUDA_EPOCH_FACTOR, LEGACY_MODEL_FIELDS, ModelConfig, TrainConfig
from gvtool.train.data import IMAGE_SIZES
from gvtool.train.device import resolve_device, resolve_precision
from gvtool.train.models import build_networks, conv_stages
from gvtool.train import objectives
from gvtool.train.objectives import compute_losses, d_loss_fake, d_loss_real, g_loss

KINDS = ("vaegan", "vae", "gan")
NETWORKS = {
    "vaegan": {"encoder", "decoder", "discriminator"},
    "vae": {"encoder", "decoder"},
    "gan": {"decoder", "discriminator"},
}
DATA = {
    "grey16": {"data_kind": "image", "channels": 1, "image_size": 16},
    "rgb32": {"data_kind": "image", "channels": 3, "image_size": 32},
    "vector2": {"data_kind": "vector", "vector_dim": 2},
}
CLASSES = 4
B = 4  # batch norm in training mode needs at least two items

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cases(kinds=KINDS, data=tuple(DATA)):
    """(kind, conditional, data) for every combination, as indirect parameters of the `cfg` fixture."""
    return [pytest.param((k, c, d), id=f"{d}-{k}-{'conditional' if c else 'unconditional'}")
            for d in data for k in kinds for c in (False, True)]


ALL = _cases()
WITH_ENCODER = _cases(kinds=("vaegan", "vae"))
WITH_DISCRIMINATOR = _cases(kinds=("vaegan", "gan"))
IMAGES = _cases(data=("grey16", "rgb32"))
CONDITIONAL = [case for case in ALL if case.values[0][1]]


@pytest.fixture
def cfg(request, make_model_config) -> ModelConfig:
    kind, conditional, data = request.param
    return make_model_config(kind=kind, conditional=conditional, num_classes=CLASSES if conditional else 0,
                             **DATA[data])


@pytest.fixture
def nets(cfg):
    torch.manual_seed(0)
    return build_networks(cfg)


def _batch(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Items in model range (B, *item) and labels (B,) for conditional models."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, *cfg.item_shape, generator=gen) * 2 - 1
    y = torch.arange(B) % CLASSES if cfg.conditional else None
    return x, y


class TestBuildNetworks:
    @pytest.mark.parametrize("cfg", ALL, indirect=True)
    def test_has_exactly_the_networks_of_its_kind(self, cfg, nets):
        assert set(nets) == NETWORKS[cfg.kind]

    @pytest.mark.parametrize("cfg", WITH_ENCODER, indirect=True)
    def test_encoder_returns_mean_and_logvar_of_batch_by_latent(self, cfg, nets):
        x, _ = _batch(cfg)
        mean, logvar = nets["encoder"](x)
        assert mean.shape == logvar.shape == (B, cfg.latent_dim)

    @pytest.mark.parametrize("cfg", ALL, indirect=True)
    def test_decoder_maps_latents_to_items(self, cfg, nets):
        _, y = _batch(cfg)
        out = nets["decoder"](torch.randn(B, cfg.latent_dim), y)
        assert out.shape == (B, *cfg.item_shape)

    @pytest.mark.parametrize("cfg", IMAGES, indirect=True)
    def test_decoder_images_stay_in_minus_one_to_one(self, cfg, nets):
        _, y = _batch(cfg)
        out = nets["decoder"](100 * torch.randn(B, cfg.latent_dim), y)  # large latents push the tanh to saturation
        assert out.min() >= -1 and out.max() <= 1

    @pytest.mark.parametrize("cfg", WITH_DISCRIMINATOR, indirect=True)
    def test_discriminator_returns_logits_and_features(self, cfg, nets):
        x, y = _batch(cfg)
        logits, features = nets["discriminator"](x, y)
        assert logits.shape == (B,)
        assert features.ndim == 2 and features.shape[0] == B

    @pytest.mark.parametrize("cfg", CONDITIONAL, indirect=True)
    def test_conditional_networks_depend_on_the_labels(self, cfg, nets):
        nets.eval()  # batch statistics would couple the items
        x, y = _batch(cfg)
        z = torch.randn(B, cfg.latent_dim)
        other = (y + 1) % CLASSES
        assert not torch.allclose(nets["decoder"](z, y), nets["decoder"](z, other))
        if "discriminator" in nets:
            assert not torch.allclose(nets["discriminator"](x, y)[0], nets["discriminator"](x, other)[0])


@pytest.mark.parametrize("cfg", ALL, indirect=True)
class TestLosses:
    def test_losses_are_finite_scalars_named_by_network(self, cfg, nets):
        out = compute_losses(cfg, nets, *_batch(cfg))
        assert set(out.losses) == NETWORKS[cfg.kind]
        for name, loss in out.losses.items():
            assert loss.shape == (), name
            assert torch.isfinite(loss), name

    def test_metrics_are_finite_detached_scalars(self, cfg, nets):
        out = compute_losses(cfg, nets, *_batch(cfg))
        assert out.metrics
        for name, value in out.metrics.items():
            assert value.shape == () and not value.requires_grad, name
            assert torch.isfinite(value), name

    def test_each_loss_reaches_every_parameter_of_its_network(self, cfg, nets):
        out = compute_losses(cfg, nets, *_batch(cfg))
        for name, loss in out.losses.items():
            params = list(nets[name].parameters())
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            assert all(g is not None for g in grads), f"{name}: some parameters get no gradient"
            assert all(torch.isfinite(g).all() for g in grads), name
            assert any(g.abs().sum() > 0 for g in grads), f"{name}: all gradients are zero"


@pytest.mark.parametrize("cfg", WITH_DISCRIMINATOR, indirect=True)
class TestR1Penalty:
    GAMMA = 3.0

    @pytest.fixture
    def nets(self, cfg):  # fixed weights: spectral norm's power iteration would move D between the calls
        torch.manual_seed(0)
        return build_networks(dataclasses.replace(cfg, spectral_norm=False))

    def _losses(self, cfg, nets, gamma):
        torch.manual_seed(5)  # the same latents and noise for both calls
        return compute_losses(dataclasses.replace(cfg, r1_weight=gamma), nets, *_batch(cfg)).losses

    def test_adds_half_gamma_times_the_squared_input_gradient_on_real_items(self, cfg, nets):
        x, y = _batch(cfg)
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(nets["discriminator"](x, y)[0].sum(), x)
        expected = 0.5 * self.GAMMA * grad.pow(2).flatten(1).sum(dim=1).mean()
        on, off = self._losses(cfg, nets, self.GAMMA), self._losses(cfg, nets, 0.0)
        torch.testing.assert_close(on["discriminator"] - off["discriminator"], expected, rtol=1e-4, atol=1e-6)
        for name in set(on) - {"discriminator"}:  # the penalty is the discriminator's alone
            torch.testing.assert_close(on[name], off[name])

    def test_penalty_trains_the_discriminator(self, cfg, nets):
        params = list(nets["discriminator"].parameters())
        on = torch.autograd.grad(self._losses(cfg, nets, self.GAMMA)["discriminator"], params, allow_unused=True)
        off = torch.autograd.grad(self._losses(cfg, nets, 0.0)["discriminator"], params, allow_unused=True)
        assert any(a is not None and b is not None and not torch.allclose(a, b) for a, b in zip(on, off))


@pytest.mark.parametrize("cfg", WITH_DISCRIMINATOR, indirect=True)
class TestSpectralNorm:
    def test_every_weight_of_the_discriminator_is_normalised(self, cfg, nets):
        d = nets["discriminator"]
        weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
        assert weighted and all(parametrize.is_parametrized(m, "weight") for m in weighted)

    def test_no_other_network_is_normalised(self, cfg, nets):
        for name in set(nets) - {"discriminator"}:
            assert not any(parametrize.is_parametrized(m) for m in nets[name].modules()), name

    def test_normalised_weights_have_unit_largest_singular_value(self, cfg, nets):
        d = nets["discriminator"].train()
        x, y = _batch(cfg)
        for _ in range(30):  # the power iteration converges over forward passes
            d(x, y)
        d.eval()
        for m in d.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
                assert sigma == pytest.approx(1.0, abs=0.05)

    def test_off_leaves_plain_weights(self, cfg):
        d = build_networks(dataclasses.replace(cfg, spectral_norm=False))["discriminator"]
        assert not any(parametrize.is_parametrized(m) for m in d.modules())


class TestGanLosses:
    LOGITS = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])

    def test_hinge_values_on_known_logits(self, make_model_config):
        cfg = make_model_config(gan_loss="hinge")
        # D real: mean max(0, 1 - l) = (3 + 1.5 + 1 + 0.5 + 0) / 5; D fake: mean max(0, 1 + l) = (0 + .5 + 1 + 1.5 + 3) / 5
        assert d_loss_real(cfg, self.LOGITS).item() == pytest.approx(6.0 / 5)
        assert d_loss_fake(cfg, self.LOGITS).item() == pytest.approx(6.0 / 5)
        assert g_loss(cfg, self.LOGITS).item() == pytest.approx(0.0)
        assert g_loss(cfg, torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)

    def test_hinge_ignores_items_beyond_the_margin(self, make_model_config):
        cfg = make_model_config(gan_loss="hinge")
        logits = torch.tensor([1.5, 3.0], requires_grad=True)  # real items already past the margin of 1
        (grad,) = torch.autograd.grad(d_loss_real(cfg, logits), logits)
        assert torch.equal(grad, torch.zeros(2))

    def test_bce_values_on_known_logits(self, make_model_config):
        cfg = make_model_config(gan_loss="bce")
        softplus = torch.nn.functional.softplus
        assert d_loss_real(cfg, self.LOGITS).item() == pytest.approx(softplus(-self.LOGITS).mean().item())
        assert d_loss_fake(cfg, self.LOGITS).item() == pytest.approx(softplus(self.LOGITS).mean().item())
        assert g_loss(cfg, self.LOGITS).item() == pytest.approx(softplus(-self.LOGITS).mean().item())


@pytest.mark.parametrize("cfg", [c for c in WITH_DISCRIMINATOR if c.values[0][2] != "vector2"], indirect=True)
class TestAugmentationInTheLosses:
    def _seen(self, cfg, nets, monkeypatch, augment):
        calls = []

        def spy(x, policies, draw=None, n_draws=None):
            calls.append((x.detach().clone(), policies, draw, n_draws))
            return x

        monkeypatch.setattr(objectives, "diff_augment", spy)
        compute_losses(dataclasses.replace(cfg, augment=augment), nets, *_batch(cfg))
        return calls

    def test_every_item_the_discriminator_sees_goes_through_the_same_augmentation(self, cfg, nets, monkeypatch):
        (seen, policies, draw, _), = self._seen(cfg, nets, monkeypatch, ("translation", "cutout"))
        x, _ = _batch(cfg)
        fakes = 2 if cfg.kind == "vaegan" else 1  # vaegan: reconstructions and prior samples
        assert policies == ("translation", "cutout")
        assert seen.shape[0] == (1 + fakes) * B
        torch.testing.assert_close(seen[:B], x)  # the real items, then the generated ones, in one call

    def test_vaegan_gives_a_real_item_and_its_reconstruction_one_draw(self, cfg, nets, monkeypatch):
        (_, _, draw, n_draws), = self._seen(cfg, nets, monkeypatch, ("cutout",))
        if cfg.kind == "vaegan":
            assert draw[:B].tolist() == draw[B:2 * B].tolist() == list(range(B))
            assert sorted(draw[2 * B:].tolist()) == list(range(B, 2 * B))  # prior samples: draws of their own
            assert n_draws == 2 * B
        else:
            assert draw is None and n_draws is None  # the GAN pairs nothing: every item its own draw

    def test_augmented_inputs_change_the_discriminator_loss(self, cfg):
        cfg = dataclasses.replace(cfg, spectral_norm=False)  # a power iteration per call would change it anyway
        torch.manual_seed(0)
        nets = build_networks(cfg)
        torch.manual_seed(3)
        plain = compute_losses(cfg, nets, *_batch(cfg)).losses["discriminator"]
        torch.manual_seed(3)
        again = compute_losses(cfg, nets, *_batch(cfg)).losses["discriminator"]
        torch.manual_seed(3)
        augmented = compute_losses(dataclasses.replace(cfg, augment=("cutout",)), nets, *_batch(cfg))
        torch.testing.assert_close(plain, again)  # the same noise gives the same loss ...
        assert not torch.allclose(plain, augmented.losses["discriminator"])  # ... so the change is the augmentation


class TestVectorStandardization:
    MEAN, STD = (10.0, -5.0), (2.0, 0.5)

    def _pair(self, make_model_config, kind="vaegan"):
        """Networks with and without the data statistics, sharing every weight."""
        plain = make_model_config(kind=kind, **DATA["vector2"])
        scaled = dataclasses.replace(plain, vector_mean=self.MEAN, vector_std=self.STD)
        torch.manual_seed(0)
        a = build_networks(scaled).eval()
        b = build_networks(plain).eval()
        b.load_state_dict(a.state_dict())  # the statistics are config constants, not checkpoint state
        return a, b

    def test_encoder_and_discriminator_see_standardised_items(self, make_model_config):
        scaled, plain = self._pair(make_model_config)
        x = torch.randn(5, 2) * torch.tensor(self.STD) + torch.tensor(self.MEAN)
        z = (x - torch.tensor(self.MEAN)) / torch.tensor(self.STD)
        for got, want in zip(scaled["encoder"](x), plain["encoder"](z)):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(scaled["discriminator"](x)[0], plain["discriminator"](z)[0])

    def test_decoder_returns_data_units(self, make_model_config):
        scaled, plain = self._pair(make_model_config)
        z = torch.randn(5, plain["decoder"].cfg.latent_dim)
        torch.testing.assert_close(scaled["decoder"](z), plain["decoder"](z) * torch.tensor(self.STD) + torch.tensor(self.MEAN))

    def test_statistics_round_trip_through_json_as_equal_configs(self, make_model_config):
        cfg = make_model_config(**DATA["vector2"], vector_mean=self.MEAN, vector_std=self.STD)
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    @pytest.mark.parametrize("changes", [
        {"vector_mean": (0.0,), "vector_std": (1.0,)},          # one value for two features
        {"vector_mean": (0.0, 0.0), "vector_std": ()},           # mean without std
        {"vector_mean": (0.0, 0.0), "vector_std": (1.0, 0.0)},   # zero std
        {"vector_mean": (0.0, float("nan")), "vector_std": (1.0, 1.0)},
    ], ids=str)
    def test_invalid_statistics_raise_bad_input(self, changes, make_model_config):
        with pytest.raises(BadInputError, match="vector_"):
            make_model_config(**DATA["vector2"], **changes)


class TestConvStages:
    @pytest.mark.parametrize("size, stages", [(16, 2), (28, 2), (32, 3), (64, 4), (36, 2)])
    def test_stages_for_size(self, size, stages):
        assert conv_stages(size) == stages

    @pytest.mark.parametrize("size", list(IMAGE_SIZES))
    def test_every_valid_image_size_round_trips_through_the_networks(self, size, make_model_config):
        cfg = make_model_config(kind="vaegan", image_size=size)
        nets = build_networks(cfg).eval()
        x = torch.zeros(2, 1, size, size)
        mean, _ = nets["encoder"](x)
        logits, _ = nets["discriminator"](x)
        assert nets["decoder"](mean).shape == x.shape
        assert logits.shape == (2,)


class TestDepth:
    @pytest.mark.parametrize("extra, mapping", [(1, 0), (0, 2), (2, 1)])
    @pytest.mark.parametrize("size", [16, 28, 32])
    def test_extra_layers_keep_every_shape(self, size, extra, mapping, make_model_config):
        cfg = make_model_config(kind="vaegan", image_size=size, extra_convs=extra, mapping_layers=mapping)
        nets = build_networks(cfg).eval()
        x = torch.zeros(2, 1, size, size)
        mean, _ = nets["encoder"](x)
        assert nets["decoder"](mean).shape == x.shape and nets["discriminator"](x)[0].shape == (2,)

    def test_extra_convs_add_one_3x3_conv_per_network_at_the_base_resolution(self, make_model_config):
        def convs(cfg):
            return {name: [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
                           and m.in_channels == m.out_channels] for name, net in build_networks(cfg).items()}

        plain = convs(make_model_config(kind="vaegan", extra_convs=0))
        deeper = convs(make_model_config(kind="vaegan", extra_convs=1))
        for name in ("encoder", "decoder", "discriminator"):
            assert len(deeper[name]) == len(plain[name]) + 1, name

    def test_mapping_layers_put_hidden_units_between_latent_and_projection(self, make_model_config):
        cfg = make_model_config(kind="gan", mapping_layers=2, hidden=24)
        linears = [m for m in build_networks(cfg)["decoder"].project if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears[:2]] == [(cfg.latent_dim, 24), (24, 24)]
        assert linears[2].in_features == 24 and len(linears) == 3


class TestModelConfig:
    @pytest.mark.parametrize("changes", [
        {"kind": "diffusion"},
        {"data_kind": "audio"},
        {"image_size": 70},
        {"image_size": 12},
        {"image_size": 30},
        {"image_size": 17},
        {"channels": 2},
        {"latent_dim": 0},
        {"width": 2},
        {"kl_weight": -1.0},
        {"adv_weight": -0.1},
        {"r1_weight": -1.0},
        {"feature_weight": float("nan")},
        {"recon_sigma": 0.0},
        {"num_classes": 3},                        # unconditional with classes
        {"conditional": True, "num_classes": 1},
        {"gan_loss": "wasserstein"},
        {"augment": ("colour",)},
        {"augment": ("translation",), "data_kind": "vector"},  # shifting pixels means nothing to a 2-D point
        {"ema_decay": 1.0},
        {"ema_decay": -0.1},
        {"spectral_norm": "yes"},
        {"extra_convs": -1},
        {"mapping_layers": 9},
    ], ids=str)
    def test_invalid_field_raises_bad_input(self, changes, make_model_config):
        with pytest.raises(BadInputError):
            make_model_config(**changes)

    def test_message_says_what_was_got_and_expected(self):
        with pytest.raises(BadInputError, match=r"multiple of 4 from 16 to 64, got 70"):
            ModelConfig(image_size=70)

    def test_round_trips_through_json(self, make_model_config):
        cfg = make_model_config(kind="gan", conditional=True, num_classes=10, data_kind="vector", kl_weight=0.5)
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    def test_unknown_key_is_rejected(self):
        with pytest.raises(BadInputError, match="unknown keys.*'depth'"):
            ModelConfig.from_dict(ModelConfig().to_dict() | {"depth": 3})

    def test_augmentations_round_trip_through_json_as_a_tuple(self, make_model_config):
        cfg = make_model_config(augment=["translation", "cutout"])
        assert cfg.augment == ("translation", "cutout")
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    def test_a_config_written_before_the_quality_fields_keeps_its_old_meaning(self):
        old = {k: v for k, v in ModelConfig().to_dict().items() if k not in LEGACY_MODEL_FIELDS}
        cfg = ModelConfig.from_dict(old)
        assert (cfg.gan_loss, cfg.spectral_norm, cfg.augment, cfg.ema_decay) == ("bce", False, (), 0.0)


class TestTrainConfig:
    @pytest.mark.parametrize("changes", [
        {"batch_size": 1},
        {"epochs": 0},
        {"lr": 0.0},
        {"beta1": 1.0},
        {"precision": "fp8"},
        {"val_fraction": 0.6},
        {"n_vectors": 5},
        {"log_every": 0},
        {"model": {"kind": "vae"}},
    ], ids=str)
    def test_invalid_field_raises_bad_input(self, changes):
        with pytest.raises(BadInputError):
            TrainConfig(**changes)

    def test_fp16_is_a_valid_precision_string(self):
        assert TrainConfig(precision="fp16").precision == "fp16"

    def test_round_trips_through_json(self, make_train_config):
        cfg = make_train_config("ring8", kind="vae", conditional=True, image_size=None, lr=1e-3, seed=7)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    def test_unknown_key_is_rejected(self):
        with pytest.raises(BadInputError, match="unknown keys.*'steps'"):
            TrainConfig.from_dict(TrainConfig().to_dict() | {"steps": 3})

    @pytest.mark.parametrize("data", ["ring8", "grid25"])
    def test_the_mixtures_keep_the_loss_and_optimizer_they_were_measured_with(self, data):
        cfg = TrainConfig.defaults_for(data)
        assert (cfg.model.gan_loss, cfg.model.spectral_norm, cfg.beta1, cfg.beta2) == ("bce", False, 0.5, 0.999)
        assert (cfg.batch_size, cfg.epochs, cfg.lr) == (128, 170, 1e-3)  # ~24k updates, measured in README

    @pytest.mark.parametrize("data", ["mnist", "stacked-mnist", "my_images/"])
    def test_images_train_hinge_and_spectral_norm_with_sngan_adam(self, data):
        cfg = TrainConfig.defaults_for(data)
        assert (cfg.model.gan_loss, cfg.model.spectral_norm, cfg.beta1, cfg.beta2) == ("hinge", True, 0.0, 0.9)

    @pytest.mark.parametrize("data", ["mnist", "stacked-mnist", "my_images/"])
    def test_images_train_longer_on_cuda_on_the_same_networks_and_batch(self, data):
        cpu, cuda = TrainConfig.defaults_for(data), TrainConfig.defaults_for(data, "cuda")
        assert cuda.epochs == CUDA_EPOCH_FACTOR * cpu.epochs > cpu.epochs
        assert cuda.replace(epochs=cpu.epochs) == cpu

    @pytest.mark.parametrize("data", ["ring8", "grid25"])
    def test_the_mixtures_keep_their_defaults_on_cuda(self, data):
        assert TrainConfig.defaults_for(data, "cuda") == TrainConfig.defaults_for(data)

    def test_defaults_take_a_device_type_not_a_device_spec(self):
        with pytest.raises(ValueError, match="device type"):
            TrainConfig.defaults_for("mnist", "cuda:0")

    def test_unknown_model_key_is_rejected(self):
        data = TrainConfig().to_dict()
        data["model"]["depth"] = 3
        with pytest.raises(BadInputError, match="model config has unknown keys"):
            TrainConfig.from_dict(data)


class TestDevice:
    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    def test_cuda_without_cuda_raises_backend_unavailable(self):
        with pytest.raises(BackendUnavailableError, match=r"--device cuda asked for CUDA.*no CUDA device.*--device cpu"):
            resolve_device("cuda")

    def test_unknown_device_type_raises_bad_input(self):
        with pytest.raises(BadInputError, match="'tpu'"):
            resolve_device("tpu")

    def test_cpu_resolves_to_cpu(self):
        assert resolve_device("cpu") == torch.device("cpu")

    def test_fp16_on_cpu_raises_bad_input(self):
        with pytest.raises(BadInputError, match="fp16 needs a CUDA device"):
            resolve_precision("fp16", torch.device("cpu"))

    @pytest.mark.parametrize("spec, resolved", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")])
    def test_cpu_precisions(self, spec, resolved):
        assert resolve_precision(spec, torch.device("cpu")) == resolved
