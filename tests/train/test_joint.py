"""The joint model of images and labels (mvae): the product of experts on known Gaussians, the masks training draws,
the image expert seeing only the observed pixels, the losses' wiring, its graphs, and its training runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_helpers import assert_same_training_state
from gvtool.errors import BadInputError
from gvtool.masks import make_masks
from gvtool.runtime.model import combine_posteriors
from gvtool.train import rundir
from gvtool.train.checkpoint import load_checkpoint
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.graphs import graph_modules, run_chain, torch_draw
from gvtool.train.loop import train
from gvtool.train.models import build_networks, product_of_experts
from gvtool.train.objectives import MASK_MIX, compute_losses, training_masks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cfg(make_model_config):
    return make_model_config(kind="mvae", conditional=True, num_classes=4, image_size=16)


class TestProductOfExperts:
    def test_one_expert_times_the_prior(self):
        # N(2, 1) x N(0, 1): precision 2, mean (2 * 1 + 0 * 1) / 2
        mean, logvar = product_of_experts((torch.tensor([[2.0]]), torch.tensor([[0.0]])))
        assert mean.item() == pytest.approx(1.0) and logvar.exp().item() == pytest.approx(0.5)

    def test_precisions_add_and_the_mean_is_precision_weighted(self):
        # N(3, 1/4) x N(-1, 1/2) x N(0, 1): precisions 4 + 2 + 1 = 7, mean (12 - 2) / 7
        mean, logvar = product_of_experts((torch.tensor([[3.0]]), torch.tensor([[np.log(0.25)]])),
                                          (torch.tensor([[-1.0]]), torch.tensor([[np.log(0.5)]])))
        assert mean.item() == pytest.approx(10 / 7) and logvar.exp().item() == pytest.approx(1 / 7)

    def test_the_runtime_combines_two_posteriors_into_the_product_of_all_experts(self):
        g = torch.Generator().manual_seed(0)
        experts = [(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)) for _ in range(2)]
        want = product_of_experts(*experts)
        got = combine_posteriors(*(tuple(t.numpy() for t in product_of_experts(e)) for e in experts))
        np.testing.assert_allclose(got[0], want[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1].numpy(), rtol=1e-5, atol=1e-6)

    def test_no_expert_is_a_bug(self):
        with pytest.raises(ValueError, match="at least one expert"):
            product_of_experts()


class TestTrainingMasks:
    def test_shares_of_whole_images_and_of_each_kind(self):
        torch.manual_seed(0)
        masks = training_masks(4000, 16, "cpu")
        whole = (masks == 1).flatten(1).all(dim=1).float().mean().item()
        assert whole == pytest.approx(MASK_MIX[0], abs=0.03)
        hidden = 1 - masks.flatten(1).mean(dim=1)
        assert 0.05 < hidden[hidden > 0].min() and hidden.max() < 0.95  # MASK_MISSING: 10% to 90% hidden

    def test_every_mask_is_whole_a_band_from_an_edge_or_scattered_pixels(self):
        torch.manual_seed(1)
        bands = {kind: 0 for kind in ("top", "bottom", "left", "right", "random")}
        for mask in training_masks(300, 16, "cpu")[:, 0].numpy():
            if mask.all():
                continue
            hidden_rows, hidden_cols = (mask == 0).all(axis=1), (mask == 0).all(axis=0)
            for kind, lines in (("top", hidden_rows), ("bottom", hidden_rows[::-1]), ("left", hidden_cols),
                                ("right", hidden_cols[::-1])):
                k = int(lines.sum())
                if k and lines[:k].all() and (mask == 0).sum() == 16 * k:  # a band of k lines from that edge
                    # the rule make_masks uses, for the share that hides k lines
                    assert (mask == make_masks(kind, 1, 16, (k - 0.5) / 16 + 1e-6)[0, 0]).all()
                    bands[kind] += 1
                    break
            else:
                bands["random"] += 1
        assert all(count > 10 for count in bands.values()), bands


class TestNetworks:
    def test_the_image_expert_sees_only_the_observed_pixels(self, cfg):
        encoder = build_networks(cfg)["encoder"].eval()
        x = torch.rand(3, 1, 16, 16) * 2 - 1
        mask = torch.from_numpy(make_masks("top", 3, 16, 0.5))
        changed = torch.where(mask > 0, x, torch.rand_like(x))  # other values where nothing is observed
        for a, b in zip(encoder(x, mask), encoder(changed, mask)):
            torch.testing.assert_close(a, b)
        assert not torch.allclose(encoder(x, mask)[0], encoder(x)[0])  # and the mask itself is seen

    def test_a_whole_image_is_an_all_ones_mask(self, cfg):
        encoder = build_networks(cfg)["encoder"].eval()
        x = torch.rand(2, 1, 16, 16)
        for a, b in zip(encoder(x), encoder(x, torch.ones(2, 1, 16, 16))):
            torch.testing.assert_close(a, b)

    def test_experts_log_variances_are_bounded(self, cfg):
        nets = build_networks(cfg)
        with torch.no_grad():
            nets["label_encoder"].net[-1].bias.fill_(1e4)  # a runaway expert
        _, logvar = nets["label_encoder"].expert(torch.arange(4))
        assert logvar.abs().max() <= 10.0

    def test_the_decoder_and_discriminator_take_no_labels(self, cfg):
        nets = build_networks(cfg)
        assert nets["discriminator"].embed is None
        assert nets["decoder"](torch.randn(2, cfg.latent_dim)).shape == (2, 1, 16, 16)


class TestLosses:
    @pytest.mark.parametrize("p, q, want", [((0.0, 0.0), (0.0, 0.0), 0.0), ((1.0, 0.0), (0.0, 0.0), 0.5),
                                            ((0.0, 0.0), (0.0, np.log(4.0)), 0.5 * (np.log(4.0) + 0.25 - 1))])
    def test_kl_between_known_gaussians(self, p, q, want):
        from gvtool.train.objectives import kl_between

        tensors = [torch.tensor([[v]]) for v in (*p, *q)]
        assert kl_between(*tensors).item() == pytest.approx(want, abs=1e-6)

    def test_each_network_gets_its_loss(self, cfg):
        nets = build_networks(cfg)
        out = compute_losses(cfg, nets, torch.rand(6, 1, 16, 16) * 2 - 1, torch.arange(6) % 4)
        assert set(out.losses) == {"encoder", "label_encoder", "decoder", "classifier", "discriminator"}
        assert out.losses["encoder"] is out.losses["classifier"]  # one ELBO
        assert {"kl", "recon", "inpaint", "label_acc", "label_cover"} <= set(out.metrics)
        # the label's posterior learns to cover the joint one, which it does not move
        grads = torch.autograd.grad(out.losses["label_encoder"], list(nets["encoder"].parameters()), allow_unused=True,
                                    retain_graph=True)
        assert all(g is None for g in grads)
        out.losses["classifier"].backward(inputs=list(nets["classifier"].parameters()))
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets["classifier"].parameters())

    def test_label_weight_scales_the_label_term(self, cfg):
        x, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.arange(4)
        losses = []
        for weight in (0.0, 100.0):
            torch.manual_seed(3)
            nets = build_networks(dataclasses.replace(cfg, label_weight=0.0))
            torch.manual_seed(4)
            losses.append(compute_losses(dataclasses.replace(cfg, label_weight=weight), nets, x, y).losses["encoder"])
        # 100 x the cross-entropy of 4 classes from untrained logits (about log 4 each)
        assert (losses[1] - losses[0]).item() == pytest.approx(100 * np.log(4), rel=0.3)


class TestGraphs:
    def test_graphs_and_their_tensors(self, cfg):
        graphs = graph_modules(cfg, build_networks(cfg))
        assert [name for name, _, _ in graphs["encoder"].inputs] == ["images", "mask"]
        assert [name for name, _, _ in graphs["label_encoder"].inputs] == ["labels", "latent_noise"]
        assert [name for name, _, _ in graphs["label_encoder"].outputs] == ["latents", "label_mean", "label_logvar"]
        assert [name for name, _, _ in graphs["decoder"].inputs] == ["latents"]  # no labels: a modality, not a condition
        assert graphs["classifier"].outputs == (("logits", "float32", (4,)),)

    def test_sampling_from_a_label_draws_from_its_posterior(self, cfg):
        nets = build_networks(cfg)
        graphs = graph_modules(cfg, nets)
        labels = torch.tensor([0, 1, 2, 3])
        noise = torch.randn(4, cfg.latent_dim)
        values = run_chain(graphs, ("label_encoder",), {"labels": labels, "latent_noise": noise}, 4, torch_draw())
        mean, logvar = nets["label_encoder"].eval()(labels)
        torch.testing.assert_close(values["latents"], mean + (0.5 * logvar).exp() * noise)


class TestCaptions:
    """A caption as a third modality: its expert learns, as the label's, to cover the joint posteriors."""

    @pytest.fixture
    def captioned(self, cfg):
        return dataclasses.replace(cfg, text_dim=12)

    def test_a_caption_expert_beside_the_others_and_the_image_networks_take_no_text(self, captioned):
        nets = build_networks(captioned)
        assert "caption_encoder" in nets and captioned.trained[-1] == "caption_encoder"
        assert nets["caption_encoder"].net[0].in_features == 12
        assert nets["decoder"].cfg.text_dim == 0 and not nets["decoder"].cfg.conditional

    def test_the_caption_posterior_covers_the_joint_one_and_moves_nothing_else(self, captioned):
        nets = build_networks(captioned)
        x, y, text = torch.rand(6, 1, 16, 16) * 2 - 1, torch.arange(6) % 4, torch.randn(6, 12)
        out = compute_losses(captioned, nets, x, y, text=text)
        assert set(out.losses) == {"encoder", "label_encoder", "decoder", "classifier", "discriminator",
                                   "caption_encoder"}
        assert out.metrics["caption_cover"] > 0
        others = [p for name in ("encoder", "label_encoder", "decoder") for p in nets[name].parameters()]
        grads = torch.autograd.grad(out.losses["caption_encoder"], others, allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads)
        out.losses["caption_encoder"].backward(inputs=list(nets["caption_encoder"].parameters()))
        assert all(p.grad.abs().sum() > 0 for p in nets["caption_encoder"].parameters())

    def test_a_step_without_captions_is_a_bug(self, captioned):
        with pytest.raises(ValueError, match="a caption per item"):
            compute_losses(captioned, build_networks(captioned), torch.rand(2, 1, 16, 16), torch.arange(2))

    def test_the_caption_graph_draws_from_the_captions_posterior(self, captioned):
        from gvtool.train.graphs import CaptionEncoderGraph

        nets = build_networks(captioned)
        graph = CaptionEncoderGraph(captioned, nets["caption_encoder"]).eval()
        assert [name for name, _, _ in graph.inputs] == ["text_embedding", "latent_noise"]
        assert [name for name, _, _ in graph.outputs] == ["latents", "label_mean", "label_logvar"]
        text, noise = torch.randn(3, 12), torch.randn(3, captioned.latent_dim)
        latents, mean, logvar = graph(text, noise)
        torch.testing.assert_close(latents, mean + (0.5 * logvar).exp() * noise)
        torch.testing.assert_close((mean, logvar), nets["caption_encoder"].eval()(text))

    def test_a_text_conditioned_model_has_no_caption_expert(self, make_model_config):
        cfg = make_model_config(kind="vaegan", conditional=True, text_dim=12)
        assert cfg.text_conditioned and "caption_encoder" not in cfg.networks
        assert not dataclasses.replace(cfg, kind="mvae", num_classes=4).text_conditioned

    def test_unlabelled_captioned_data_is_refused(self, unlabelled_npz, make_train_config, tmp_path):
        (tmp_path / "c.txt").write_text("a digit\n" * 40)
        config = make_train_config(unlabelled_npz, kind="mvae", conditional=True, captions=str(tmp_path / "c.txt"))
        with pytest.raises(BadInputError, match="--model mvae learns images with their labels, and .* has no labels"):
            train(config, tmp_path / "run")


class TestTraining:
    def test_trains_and_writes_metrics_and_samples(self, labelled_npz, make_train_config, tmp_path):
        result = train(make_train_config(labelled_npz, kind="mvae", conditional=True), tmp_path / "run")
        assert result.step > 0 and (tmp_path / "run" / "samples" / "epoch_0001.png").is_file()
        steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert {"inpaint", "label_acc", "loss_classifier"} <= set(next(r for r in steps if r["type"] == "step"))
        assert "val_inpaint" in next(r for r in steps if r["type"] == "epoch")
        # the samples (16 fixed latents, a column per class: 4 rows) over three rows of held-out items: as they
        # are, with the top half missing, completed
        grid = Image.open(tmp_path / "run" / "samples" / "epoch_0001.png")
        assert grid.size[1] == 2 + (4 + 3) * 18

    def test_resumes_exactly(self, labelled_npz, make_train_config, tmp_path):
        config = make_train_config(labelled_npz, kind="mvae", conditional=True)
        train(config, tmp_path / "whole")
        train(config, tmp_path / "parts", stop_after_steps=2)
        train(config, tmp_path / "parts", resume=True)
        assert_same_training_state(load_checkpoint(tmp_path / "parts" / rundir.CHECKPOINT_FILE),
                                   load_checkpoint(tmp_path / "whole" / rundir.CHECKPOINT_FILE))

    def test_the_defaults_are_conditional_with_mvae_epochs(self):
        from gvtool.train.config import MVAE_EPOCHS

        config = TrainConfig.defaults_for("mnist", "cpu", "mvae")
        assert config.model.conditional and config.epochs == MVAE_EPOCHS


class TestRefusals:
    def test_unlabelled_data(self, unlabelled_npz, make_train_config, tmp_path):
        with pytest.raises(BadInputError, match="--model mvae learns images with their labels, and .* has no labels"):
            train(make_train_config(unlabelled_npz, kind="mvae", conditional=True), tmp_path / "run")

    def test_vector_data(self):
        with pytest.raises(BadInputError, match="models images with their labels, not vector data"):
            ModelConfig(kind="mvae", conditional=True, data_kind="vector")

    def test_unconditional(self):
        with pytest.raises(BadInputError, match="learns images with their labels"):
            ModelConfig(kind="mvae")

    def test_captions_are_a_modality_of_the_joint_model_and_a_condition_of_three_kinds_only(self):
        assert ModelConfig(kind="mvae", conditional=True, num_classes=4, text_dim=384).networks[-1] == "caption_encoder"
        with pytest.raises(BadInputError, match="or give a joint model \\(mvae\\) a third modality; not a hier"):
            ModelConfig(kind="hier", conditional=True, text_dim=384)


class TestSpatialLatent:
    """cyclevae's --latent-channels: the shared latent as maps at the convs' base resolution."""

    def test_the_latent_is_channels_times_the_base_side_squared(self):
        assert ModelConfig(kind="cyclevae", channels_b=1, latent_channels=8).latent_dim == 8 * 7 * 7
        assert ModelConfig(kind="cyclevae", channels_b=1, latent_channels=3, image_size=32).latent_dim == 3 * 4 * 4

    def test_codes_keep_where_they_came_from(self, make_model_config):
        cfg = make_model_config(kind="cyclevae", channels_b=1, latent_channels=2, image_size=16)
        nets = build_networks(cfg)
        encoder = nets["encoder"].eval()
        x = torch.zeros(1, 1, 16, 16)
        shifted = x.clone()
        shifted[..., 0, 0] = 1.0  # a change in the top-left pixel
        (a, _), (b, _) = encoder(x, 0), encoder(shifted, 0)
        changed = (a - b).abs().view(2, 4, 4).sum(dim=0) > 1e-6
        assert changed[0, 0] and not changed[3, 3]  # moves the top-left codes, not the far corner's

    def test_decodes_both_domains(self, make_model_config):
        cfg = make_model_config(kind="cyclevae", channels_b=3, latent_channels=2, image_size=16)
        to_a, to_b = build_networks(cfg)["decoder"](torch.randn(2, cfg.latent_dim), None, None)
        assert to_a.shape == (2, 1, 16, 16) and to_b.shape == (2, 3, 16, 16)

    @pytest.mark.parametrize("changes, message", [
        ({"kind": "vaegan"}, "is for --model cyclevae"),
        ({"mapping_layers": 1}, "act on a flat latent"),
        ({"latent_channels": 300}, "from 0 to 256"),
        ({"latent_channels": 100}, "at most 4096"),
    ])
    def test_refusals(self, changes, message):
        with pytest.raises(BadInputError, match=message):
            ModelConfig(**({"kind": "cyclevae", "channels_b": 1, "latent_channels": 8} | changes))
