"""cyclevae, translation between two image domains through one shared latent (UNIT): the built-in domains, the
shared-latent wiring, the cycle and reconstruction terms on known inputs, and training runs with their refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from checkpoint_helpers import assert_same_training_state
from gvtool.errors import BadInputError
from gvtool.train import rundir
from gvtool.train.checkpoint import load_checkpoint
from gvtool.train.config import ModelConfig, TrainConfig
from gvtool.train.data import load_dataset
from gvtool.train.graphs import graph_modules
from gvtool.train.loop import train
from gvtool.train.models import DomainDecoder, DomainEncoder, build_networks
from gvtool.train.objectives import _content_adversary, _domain_terms, compute_losses
from gvtool.train.snapshots import TRANSLATED_ITEMS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**changes) -> ModelConfig:
    return ModelConfig(**({"kind": "cyclevae", "width": 4, "latent_dim": 4, "hidden": 16, "image_size": 16,
                           "channels": 1, "channels_b": 3} | changes))


# --- the built-in domains ----------------------------------------------------------------------------------------


class TestBuiltInDomains:
    def test_uci_digits_are_the_1797_scikit_learn_digits_enlarged_to_28(self):
        from sklearn.datasets import load_digits

        data, uci = load_dataset("digits"), load_digits()
        assert tuple(data.x.shape) == (1797, 1, 28, 28) and data.x.dtype == torch.uint8
        assert data.y.tolist() == uci.target.tolist() and data.num_classes == 10
        # shrunk back to 8x8, each enlarged digit is its source digit (0..16 scaled to 0..255), up to resampling
        from PIL import Image

        for i in (0, 1, 500):
            shrunk = np.asarray(Image.fromarray(data.x[i, 0].numpy()).resize((8, 8), Image.Resampling.BOX), float)
            assert np.abs(shrunk - uci.images[i] * 255 / 16).mean() < 20

    def test_uci_digits_take_another_image_size(self):
        assert tuple(load_dataset("digits", image_size=16).x.shape) == (1797, 1, 16, 16)

    def test_mnist_m_is_mnist_over_photo_patches_with_mnists_labels(self):
        mnist, mnist_m = load_dataset("mnist"), load_dataset("mnist-m")
        assert tuple(mnist_m.x.shape) == (5000, 3, 28, 28) and mnist_m.x.dtype == torch.uint8
        assert torch.equal(mnist_m.y, mnist.y) and mnist_m.class_names == mnist.class_names
        # colour: the channels differ (a grey image would have three equal ones)
        assert (mnist_m.x[:, 0] != mnist_m.x[:, 1]).float().mean() > 0.5
        # |patch - digit|: under full ink (255) a pixel is 255 - the patch, where there is no ink it is the patch,
        # so the two sums of an image's ink and background pixels differ from a plain photo's
        digit = mnist.x[:, 0].float()
        ink, blank = digit == 255, digit == 0
        coloured = mnist_m.x.float().mean(dim=1)
        assert (coloured[ink].mean() - coloured[blank].mean()).abs() > 5

    def test_mnist_m_is_drawn_once_the_same_way(self):
        assert torch.equal(load_dataset("mnist-m").x[:50], load_dataset("mnist-m").x[:50])

    def test_domain_b_is_loaded_at_domain_a_size(self, labelled_npz, colour_npz):
        from gvtool.train.data import load_domain_b

        a = load_dataset(labelled_npz)
        b = load_domain_b(colour_npz, a)
        assert b.shape == (3, 16, 16) and a.shape == (1, 16, 16)

    def test_domain_b_of_vectors_is_refused(self, labelled_npz):
        from gvtool.train.data import load_domain_b

        with pytest.raises(BadInputError, match="between image domains; ring8 holds vectors"):
            load_domain_b("ring8", load_dataset(labelled_npz))
        with pytest.raises(BadInputError, match="--data-b"):
            load_domain_b(None, load_dataset(labelled_npz))


# --- the shared latent -----------------------------------------------------------------------------------------


class TestSharedLatent:
    def test_both_encoders_feed_one_latent_through_one_set_of_shared_weights(self):
        torch.manual_seed(0)
        encoder = DomainEncoder(_cfg()).eval()
        a, b = torch.randn(3, 1, 16, 16), torch.randn(3, 3, 16, 16)
        before_a, before_b = encoder(a, 0)[0], encoder(b, 1)[0]
        bias = encoder.shared[-1].bias.detach().clone()
        with torch.no_grad():  # one shared weight moved: both domains' codes move
            encoder.shared[-1].bias += 1.0
        assert not torch.equal(encoder(a, 0)[0], before_a) and not torch.equal(encoder(b, 1)[0], before_b)
        with torch.no_grad():  # A's own first layer moved: B's codes stay
            encoder.shared[-1].bias.copy_(bias)
            encoder.fronts[0][0].weight += 1.0
        assert not torch.equal(encoder(a, 0)[0], before_a) and torch.equal(encoder(b, 1)[0], before_b)

    def test_both_decoders_read_one_latent_through_one_set_of_shared_weights(self):
        torch.manual_seed(0)
        decoder = DomainDecoder(_cfg()).eval()
        z = torch.randn(3, 4)
        to_a, to_b = decoder(z, None, None)
        assert to_a.shape == (3, 1, 16, 16) and to_b.shape == (3, 3, 16, 16)
        assert torch.equal(to_a, decoder(z, None, 0)) and torch.equal(to_b, decoder(z, None, 1))
        with torch.no_grad():
            decoder.shared.project[0].weight += 0.5
        assert not torch.equal(decoder(z, None, 0), to_a) and not torch.equal(decoder(z, None, 1), to_b)

    def test_the_shared_layers_are_one_module_not_two_copies(self):
        nets = build_networks(_cfg())
        graphs = graph_modules(_cfg(), nets)
        shared = {id(p) for p in nets["encoder"].shared.parameters()}
        for name in ("encoder", "encoder_b"):
            assert shared <= {id(p) for p in graphs[name].parameters()}
        fronts = [{id(p) for p in front.parameters()} for front in nets["encoder"].fronts]
        assert not fronts[0] & fronts[1] and not (fronts[0] | fronts[1]) & shared

    def test_a_batch_of_both_domains_encodes_as_each_alone_in_eval_mode(self):
        torch.manual_seed(0)
        encoder = DomainEncoder(_cfg()).eval()
        a, b = torch.randn(3, 1, 16, 16), torch.randn(2, 3, 16, 16)
        mean, _ = encoder((a, b), (0, 1))
        torch.testing.assert_close(mean, torch.cat([encoder(a, 0)[0], encoder(b, 1)[0]]))

    def test_chunks_of_a_batch_decode_into_their_own_domains(self):
        torch.manual_seed(0)
        decoder = DomainDecoder(_cfg()).eval()
        z = torch.randn(4, 4)
        first, second = decoder(z, None, (0, 1))
        torch.testing.assert_close(first, decoder(z[:2], None, 0))
        torch.testing.assert_close(second, decoder(z[2:], None, 1))

    def test_a_style_reaches_its_domains_own_stages_alone_as_a_scale_and_shift(self):
        torch.manual_seed(0)
        decoder = DomainDecoder(_cfg(latent_dim=6, style_dim=2)).eval()
        assert decoder.shared.project[0].in_features == 4  # the shared layers read the content
        z = torch.randn(3, 6)
        restyled = torch.cat([z[:, :4], torch.randn(3, 2)], dim=1)
        torch.testing.assert_close(decoder(restyled, None, 1), decoder(z, None, 1))  # no change at the start
        with torch.no_grad():
            decoder.styles[1].weight.normal_()
        torch.testing.assert_close(decoder(restyled, None, 0), decoder(z, None, 0))  # B's style is not A's
        assert not torch.allclose(decoder(restyled, None, 1), decoder(z, None, 1))
        first, second = decoder(torch.cat([z, restyled]), None, (0, 1))  # each chunk with its own style
        torch.testing.assert_close(second, decoder(restyled, None, 1))

    def test_the_graphs_of_each_domain_take_and_give_its_own_images(self):
        graphs = graph_modules(_cfg(), build_networks(_cfg()))
        assert graphs["encoder"].inputs[0][2] == (1, 16, 16) and graphs["encoder_b"].inputs[0][2] == (3, 16, 16)
        assert graphs["decoder"].outputs[0][2] == (1, 16, 16) and graphs["decoder_b"].outputs[0][2] == (3, 16, 16)
        assert graphs["decoder_b"](torch.randn(2, 4)).shape == (2, 3, 16, 16)


# --- the loss terms on known inputs ---------------------------------------------------------------------------


class _Features(nn.Module):
    """A discriminator whose features are the pixels and whose logit is a fixed value per item kind."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = logits
        self.weight = nn.Parameter(torch.zeros(()))
        self.domains_seen = []

    def forward(self, x, labels=None, domain=0):
        self.domains_seen.append(domain)
        b = x.shape[0] // 5
        logit = torch.tensor(self.logits).repeat_interleave(b) + self.weight
        return logit, x.flatten(1)


class TestLossTerms:
    def test_the_cycle_and_reconstruction_likelihoods_on_known_items(self):
        cfg = _cfg(recon_sigma=0.5, gan_loss="hinge")
        x = torch.zeros(2, 1, 4, 4)
        rec, cycled = x + 0.5, x + 1.0  # 16 pixels off by 0.5, and by 1.0
        terms = _domain_terms(cfg, _Features([0.0] * 5), 0, x, rec, cycled, x.clone(), x.clone())
        # feature NLL (sigma 1): sum of squares / 2 per item; pixel NLL: sum of squares / (2 sigma^2)
        assert terms["feat_nll"].item() == pytest.approx(16 * 0.25 / 2)
        assert terms["feat_cycle"].item() == pytest.approx(16 * 1.0 / 2)
        assert terms["pix_nll"].item() == pytest.approx(16 * 0.25 / (2 * 0.25))
        assert terms["pix_cycle"].item() == pytest.approx(16 * 1.0 / (2 * 0.25))
        assert terms["cycle"].item() == pytest.approx(1.0) and terms["recon"].item() == pytest.approx(0.25)

    def test_the_discriminator_calls_real_real_and_the_three_fakes_fake(self):
        # logits per kind: real, reconstruction, cycle (not judged), translation, prior sample
        cfg = _cfg(gan_loss="hinge")
        x = torch.zeros(3, 1, 4, 4)
        disc = _Features([2.0, -3.0, 9.0, 0.5, -0.5])
        terms = _domain_terms(cfg, disc, 1, x, x, x, x, x)
        # hinge: real max(0, 1 - 2) = 0; fakes max(0, 1 + D): 0, 1.5, 0.5 -> their mean 2/3
        assert terms["d"].item() == pytest.approx(2 / 3)
        assert terms["adv"].item() == pytest.approx(3.0 - 0.5 + 0.5)  # -D of each fake kind the decoder makes
        assert terms["d_trans_acc"].item() == 0.0 and terms["d_real_acc"].item() == 1.0
        assert disc.domains_seen == [1]

    def test_each_network_gets_its_own_loss_and_the_encoder_no_adversarial_term(self):
        torch.manual_seed(0)
        cfg = _cfg()
        nets = build_networks(cfg)
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        out = compute_losses(cfg, nets, x, None, x_b)
        assert set(out.losses) == {"encoder", "decoder", "discriminator"}
        assert {"kl", "recon", "cycle", "d_real_acc_a", "d_trans_acc_b"} <= set(out.metrics)
        nets.eval()  # no power iteration or running statistics moving between the two calls
        torch.manual_seed(0)  # same draws: the encoder's loss does not hold the adversarial terms
        again = compute_losses(cfg, nets, x, None, x_b)
        torch.manual_seed(0)
        no_adv = compute_losses(dataclasses.replace(cfg, adv_weight=0.0), nets, x, None, x_b)
        assert again.losses["encoder"].item() == pytest.approx(no_adv.losses["encoder"].item())
        assert again.losses["decoder"].item() != pytest.approx(no_adv.losses["decoder"].item())

    def test_cycle_weight_scales_the_cycle_terms(self):
        cfg = _cfg()
        nets = build_networks(cfg).eval()
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        losses = {}
        for weight in (0.0, 1.0, 2.0):
            torch.manual_seed(0)
            losses[weight] = compute_losses(dataclasses.replace(cfg, cycle_weight=weight), nets, x, None, x_b).losses
        for name in ("encoder", "decoder"):
            one, two = losses[1.0][name] - losses[0.0][name], losses[2.0][name] - losses[0.0][name]
            assert one.item() > 0 and two.item() == pytest.approx(2 * one.item(), rel=1e-4)

    def test_with_styles_a_translation_takes_a_drawn_style_and_the_cycle_the_sources_own(self):
        cfg = _cfg(latent_dim=6, style_dim=2)
        nets = build_networks(cfg)
        decoded = []

        class Recording(nn.Module):
            def __init__(self, decoder):
                super().__init__()
                self.decoder = decoder

            def forward(self, z, labels=None, domain=0):
                decoded.append(z.detach().clone())
                return self.decoder(z, labels, domain)

        nets["decoder"] = Recording(nets["decoder"])
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        out = compute_losses(cfg, nets, x, None, x_b)
        first, cycle = decoded
        z_a, moved_b, _, moved_a, z_b, _ = first.chunk(6)  # into A: A's, B's translated, prior; into B: ...
        for own, moved in ((z_a, moved_a), (z_b, moved_b)):
            torch.testing.assert_close(moved[:, :4], own[:, :4])  # the content crosses
            assert not torch.allclose(moved[:, 4:], own[:, 4:])  # the style is drawn for the target
        torch.testing.assert_close(cycle[:, 4:], torch.cat([z_a, z_b])[:, 4:])  # the way back: the source's style
        assert out.metrics["style_rec"].item() > 0

    def test_without_styles_the_whole_code_crosses(self):
        cfg = _cfg(latent_dim=6)
        nets = build_networks(cfg)
        original = nets["decoder"].forward
        decoded = []
        nets["decoder"].forward = lambda z, labels=None, domain=0: decoded.append(z.detach()) or original(z, labels,
                                                                                                           domain)
        out = compute_losses(cfg, nets, torch.rand(4, 1, 16, 16), None, torch.rand(4, 3, 16, 16))
        assert decoded[0].shape == (12, 6) and "style_rec" not in out.metrics  # every code into both domains

    @pytest.mark.parametrize("changes, match", [
        ({"kind": "vaegan", "channels_b": 0}, "a vaegan model has one domain"),
        ({"latent_channels": 2}, "a spatial one .--latent-channels. has no style part"),
        ({"style_dim": 4}, "--style-dim must be from 0 to --latent-dim - 1 .3."),
        ({"style_dim": -1}, "--style-dim must be from 0")])
    def test_a_style_part_that_does_not_fit_is_refused(self, changes, match):
        with pytest.raises(BadInputError, match=match):
            _cfg(**({"style_dim": 2} | changes))

    def test_a_step_without_domain_b_is_a_bug(self):
        with pytest.raises(ValueError, match="a batch of each domain"):
            compute_losses(_cfg(), build_networks(_cfg()), torch.zeros(2, 1, 16, 16), None)


# --- training -------------------------------------------------------------------------------------------------


@pytest.fixture
def config(labelled_npz, colour_npz, make_train_config):
    return make_train_config(labelled_npz, kind="cyclevae", data_b=colour_npz, epochs=2)


class TestTraining:
    def test_trains_both_domains_and_writes_translations_each_epoch(self, config, tmp_path):
        result = train(config, tmp_path / "run")
        assert (result.epoch, result.interrupted) == (2, False)
        stored = TrainConfig.from_file(tmp_path / "run" / rundir.CONFIG_FILE)
        assert stored.data_b == config.data_b and stored.model.channels_b == 3
        from PIL import Image

        grid = Image.open(tmp_path / "run" / rundir.SAMPLES_DIR / "epoch_0002.png")
        # four rows (A, A -> B, B, B -> A) of the 4 held-out items (up to TRANSLATED_ITEMS)
        assert grid.mode == "RGB" and 4 * 16 < grid.size[0] < 5 * 16 and 4 * 16 < grid.size[1] < 5 * 16
        assert TRANSLATED_ITEMS >= 4
        rows = [line for line in (tmp_path / "run" / rundir.METRICS_FILE).read_text().splitlines() if '"epoch"' in line]
        assert '"val_cycle"' in rows[-1] and '"val_recon"' in rows[-1]
        ckpt = load_checkpoint(tmp_path / "run" / rundir.CHECKPOINT_FILE)
        assert {"encoder", "decoder", "discriminator", "decoder_ema"} <= set(ckpt.models)

    def test_resumes_exactly(self, config, tmp_path):
        train(config, tmp_path / "whole")
        train(config, tmp_path / "parts", stop_after_steps=5)
        train(config, tmp_path / "parts", resume=True)
        assert_same_training_state(load_checkpoint(tmp_path / "parts" / rundir.CHECKPOINT_FILE),
                                   load_checkpoint(tmp_path / "whole" / rundir.CHECKPOINT_FILE))

    def test_a_domain_b_shorter_than_a_wraps_around(self, labelled_npz, tmp_path, make_train_config):
        rng = np.random.default_rng(0)
        small = tmp_path / "small.npz"
        np.savez(small, x=rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))  # 11 training items, batch 8
        config = make_train_config(labelled_npz, kind="cyclevae", data_b=str(small), epochs=1)
        assert train(config, tmp_path / "run").step == 4  # A's 36 items set the epoch

    def test_the_defaults_train_cycle_epochs(self):
        from gvtool.train.config import CYCLE_EPOCHS, CUDA_EPOCH_FACTOR

        assert TrainConfig.defaults_for("mnist", "cpu", "cyclevae").epochs == CYCLE_EPOCHS
        assert TrainConfig.defaults_for("mnist", "cuda", "cyclevae").epochs == CYCLE_EPOCHS * CUDA_EPOCH_FACTOR
        assert TrainConfig.defaults_for("mnist", "cpu", "cyclevae").model.kind == "cyclevae"
        assert TrainConfig.defaults_for("mnist", "cpu", "cyclevae").model.style_dim == 0  # opt-in: see its comment


class TestRefusals:
    def test_without_domain_b(self, labelled_npz, make_train_config, tmp_path):
        with pytest.raises(BadInputError, match="name domain B with --data-b"):
            train(make_train_config(labelled_npz, kind="cyclevae"), tmp_path / "run")

    def test_domain_b_for_a_one_domain_model(self, labelled_npz, colour_npz, make_train_config):
        with pytest.raises(BadInputError, match="--data-b is domain B of --model cyclevae; a vaegan model"):
            make_train_config(labelled_npz, data_b=colour_npz)

    def test_vector_data(self, make_train_config, tmp_path):
        with pytest.raises(BadInputError, match="between image domains"):
            train(make_train_config("ring8", kind="cyclevae", data_b="grid25"), tmp_path / "run")

    def test_conditional(self):
        with pytest.raises(BadInputError, match="cyclevae is unconditional"):
            _cfg(conditional=True, num_classes=4)

    def test_channels_b_for_another_model(self):
        with pytest.raises(BadInputError, match="channels_b is for --model cyclevae"):
            ModelConfig(channels_b=3)


class TestDomainAClasses:
    """--class-weight: a classifier of domain A's images learns A's labels; translations must keep the class it reads."""

    def test_a_classifier_joins_the_networks(self):
        assert "classifier" in _cfg(class_weight=1.0, num_classes=4).networks
        assert "classifier" not in _cfg().networks

    def test_the_classifier_learns_from_domain_a_images_alone(self):
        cfg = _cfg(class_weight=2.0, num_classes=4)
        nets = build_networks(cfg)
        x, x_b, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4)
        out = compute_losses(cfg, nets, x, y, x_b)
        assert {"class_acc_a", "class_kept_ab"} <= set(out.metrics)
        # the classifier's own loss reaches neither the decoder (what translations look like) nor anything else
        grads = torch.autograd.grad(out.losses["classifier"], list(nets["decoder"].parameters()), allow_unused=True,
                                    retain_graph=True)
        assert all(g is None for g in grads)
        # while the encoders are taught to keep the class through translation, and the decoders are not: their loss
        # is the one without the class terms (each on its own copy: spectral norm moves its vectors on every call)
        import copy

        torch.manual_seed(1)
        out = compute_losses(cfg, taught := copy.deepcopy(nets), x, y, x_b)
        torch.manual_seed(1)
        alone = compute_losses(_cfg(), copy.deepcopy(nets), x, None, x_b)
        assert out.losses["decoder"].item() == pytest.approx(alone.losses["decoder"].item(), rel=1e-6)
        assert out.losses["encoder"].item() > alone.losses["encoder"].item()
        grads = torch.autograd.grad(out.losses["encoder"] - alone.losses["encoder"],
                                    list(taught["encoder"].fronts[1].parameters()), allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)

    def test_the_weight_scales_the_class_terms(self):
        x, x_b, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4)
        encoder = []
        for weight in (1.0, 3.0):
            cfg = _cfg(class_weight=weight, num_classes=4)
            torch.manual_seed(0)
            nets = build_networks(cfg)
            torch.manual_seed(1)
            encoder.append(compute_losses(cfg, nets, x, y, x_b).losses["encoder"].item())
        torch.manual_seed(0)
        nets = build_networks(_cfg(class_weight=1.0, num_classes=4))
        torch.manual_seed(1)
        out = compute_losses(_cfg(class_weight=1.0, num_classes=4), nets, x, y, x_b)
        # encoder(3) - encoder(1) = 2 x (learnt + kept); learnt is the classifier's own loss
        assert encoder[1] - encoder[0] > 2 * out.losses["classifier"].item()

    def test_trains_and_exports_a_bundle_without_the_classifier(self, labelled_npz, colour_npz, make_train_config,
                                                                tmp_path):
        from gvtool.export.bundle import export_bundle

        config = make_train_config(labelled_npz, kind="cyclevae", data_b=colour_npz)
        config = config.replace(model=dataclasses.replace(config.model, class_weight=1.0))
        train(config, tmp_path / "run")
        ckpt = load_checkpoint(tmp_path / "run" / rundir.CHECKPOINT_FILE)
        assert "classifier" in ckpt.models
        _, manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", precisions=("fp32",))
        assert {g.graph for g in manifest.graphs.values()} == {"encoder", "decoder", "encoder_b", "decoder_b"}
        assert manifest.model.num_classes == 0 and not manifest.model.conditional

    def test_where_b_is_labelled_too_its_own_classifier_reads_the_translations_into_b(self):
        cfg = _cfg(class_weight=1.0, num_classes=4, classes_b=4)
        assert cfg.networks[-2:] == ("classifier", "classifier_b")
        nets = build_networks(cfg)
        assert nets["classifier_b"].net[0].in_channels == 3  # B's colour images
        x, x_b, y, y_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4), \
            torch.tensor([3, 2, 1, 0])
        out = compute_losses(cfg, nets, x, y, x_b, y_b=y_b)
        assert {"classifier", "classifier_b"} <= set(out.losses) and "class_acc_b" in out.metrics
        # each classifier learns from its own domain's real images only
        for name, other in (("classifier", "classifier_b"), ("classifier_b", "classifier")):
            grads = torch.autograd.grad(out.losses[name], list(nets[other].parameters()) + list(nets["decoder"].parameters()),
                                        allow_unused=True, retain_graph=True)
            assert all(g is None for g in grads)
        # B's labels are what B's translations into A must keep: changing them changes the decoder's loss
        again = compute_losses(cfg, nets, x, y, x_b, y_b=torch.tensor([0, 1, 2, 3]))
        assert again.losses["decoder"].item() != pytest.approx(out.losses["decoder"].item())
        with pytest.raises(ValueError, match="needs domain B's labels"):
            compute_losses(cfg, nets, x, y, x_b)

    def test_b_is_read_by_its_classifier_when_its_data_has_as_many_classes(self, labelled_npz, colour_npz,
                                                                        unlabelled_npz, make_train_config):
        from gvtool.train.loop import complete_config, load_data

        for data_b, want in ((colour_npz, 4), (unlabelled_npz, 0)):
            config = make_train_config(labelled_npz, kind="cyclevae", data_b=data_b)
            config = config.replace(model=dataclasses.replace(config.model, class_weight=1.0))
            assert complete_config(config, *load_data(config)).model.classes_b == want
        with pytest.raises(BadInputError, match="classes_b is domain B's classes"):
            _cfg(class_weight=1.0, num_classes=4, classes_b=3)
        with pytest.raises(BadInputError, match="classes_b is domain B's classes"):
            _cfg(classes_b=4)

    def test_unlabelled_domain_a(self, unlabelled_npz, colour_npz, make_train_config, tmp_path):
        config = make_train_config(unlabelled_npz, kind="cyclevae", data_b=colour_npz)
        config = config.replace(model=dataclasses.replace(config.model, class_weight=1.0))
        with pytest.raises(BadInputError, match="--class-weight learns domain A's classes, and .* has no labels"):
            train(config, tmp_path / "run")

    def test_another_model(self):
        with pytest.raises(BadInputError, match="a vaegan model has none"):
            ModelConfig(class_weight=1.0)


class TestInvariance:
    """--invariance-weight: each domain's content code must not move when the image is recoloured; the style may."""

    class Stub(nn.Module):  # content: each item's mean |x| (blind to the colours) or its mean x; style: its mean x
        def __init__(self, k: int, blind: bool):
            super().__init__()
            self.k, self.blind, self.scale = k, blind, nn.Parameter(torch.ones(()))

        def forward(self, xs, domains):
            def code(x):
                content = (x.abs() if self.blind else x).flatten(1).mean(dim=1, keepdim=True)
                return torch.cat([content.expand(-1, self.k - 1), x.flatten(1).mean(dim=1, keepdim=True)], dim=1)
            mean = self.scale * torch.cat([code(x) for x in xs])
            return mean, torch.zeros_like(mean)

    @pytest.mark.parametrize("blind", [True, False])
    def test_the_content_alone_must_ignore_the_colours(self, blind):
        cfg = _cfg(latent_dim=4, style_dim=1, invariance_weight=1.0)
        nets = build_networks(cfg)
        nets["encoder"] = self.Stub(4, blind)
        torch.manual_seed(0)
        x, x_b = torch.rand(16, 1, 16, 16) * 2 - 1, torch.rand(16, 3, 16, 16) * 2 - 1
        invariance = compute_losses(cfg, nets, x + 0.5, None, x_b + 0.5).metrics["invariance"].item()
        # the style (mean x) changes sign with the inverted items; a content of mean |x| stays, one of mean x moves
        assert invariance == pytest.approx(0.0, abs=1e-10) if blind else invariance > 0.1

    def test_the_weight_scales_the_encoders_term(self):
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        encoder, invariance = [], []
        for weight in (1.0, 3.0):
            cfg = _cfg(latent_dim=6, style_dim=2, invariance_weight=weight)
            torch.manual_seed(0)
            nets = build_networks(cfg)
            torch.manual_seed(1)
            out = compute_losses(cfg, nets, x, None, x_b)
            encoder.append(out.losses["encoder"].item())
            invariance.append(out.metrics["invariance"].item())
        assert invariance[0] == invariance[1] > 0
        assert encoder[1] - encoder[0] == pytest.approx(2 * invariance[0], rel=1e-4)

    def test_trains_with_it(self, labelled_npz, colour_npz, make_train_config, tmp_path):
        from gvtool.train.metrics_log import read_rows

        config = make_train_config(labelled_npz, kind="cyclevae", data_b=colour_npz)
        config = config.replace(model=dataclasses.replace(config.model, style_dim=1, invariance_weight=1.0))
        train(config, tmp_path / "run")
        steps = read_rows(tmp_path / "run" / rundir.METRICS_FILE)
        assert all(np.isfinite(s["invariance"]) for s in steps if s["type"] == "step")

    @pytest.mark.parametrize("changes, match", [
        ({"style_dim": 1, "invariance_weight": -1.0}, "invariance_weight must be >= 0"),
        ({"invariance_weight": 1.0}, "--invariance-weight needs --style-dim")])
    def test_refusals(self, changes, match):
        with pytest.raises(BadInputError, match=match):
            _cfg(**changes)


class TestContentAdversary:
    """--content-adv-weight: a discriminator of the content codes tells A's from B's; the encoders learn to leave it
    guessing."""

    class Fixed(nn.Module):  # a content discriminator whose logit is the code's first value
        def forward(self, content: torch.Tensor) -> torch.Tensor:
            return content[:, 0]

    def test_known_codes(self):
        apart = torch.tensor([[20.0], [20.0], [-20.0], [-20.0]])  # A's codes, then B's: told apart
        out = _content_adversary(self.Fixed(), apart)
        assert out["d"].item() == pytest.approx(0.0, abs=1e-6) and out["acc"].item() == 1.0
        # the encoders' loss: each logit's cross-entropy against 1/2, softplus(20) - 10 for +20 and for -20 alike
        assert out["fool"].item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(20.0)).item() - 10.0)
        alike = _content_adversary(self.Fixed(), torch.zeros(4, 1))  # it cannot tell: both losses ln 2
        assert out["fool"].item() > alike["fool"].item() == pytest.approx(np.log(2))
        assert alike["d"].item() == pytest.approx(np.log(2)) and alike["acc"].item() == 0.5

    def test_the_discriminator_reads_the_content_alone_and_never_moves_the_encoder(self):
        cfg = _cfg(latent_dim=6, style_dim=2, content_adv_weight=1.0)
        assert cfg.networks[-1] == "content_discriminator"
        nets = build_networks(cfg)
        assert nets["content_discriminator"].net[0].in_features == 4  # the content: latent 6 less style 2
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        out = compute_losses(cfg, nets, x, None, x_b)
        assert 0.0 <= out.metrics["content_d_acc"].item() <= 1.0
        grads = torch.autograd.grad(out.losses["content_discriminator"], list(nets["encoder"].parameters()),
                                    allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads)
        # while the encoder's loss goes through it (the update applies each loss to its own network alone)
        grads = torch.autograd.grad(out.losses["encoder"], list(nets["content_discriminator"].parameters()))
        assert all(g.abs().sum() > 0 for g in grads)

    def test_the_weight_scales_the_encoders_term(self):
        x, x_b = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
        encoder, fool = [], None
        for weight in (1.0, 3.0):
            cfg = _cfg(content_adv_weight=weight)
            torch.manual_seed(0)
            nets = build_networks(cfg)
            torch.manual_seed(1)
            out = compute_losses(cfg, nets, x, None, x_b)
            encoder.append(out.losses["encoder"].item())
        torch.manual_seed(0)
        nets = build_networks(_cfg(content_adv_weight=1.0))
        torch.manual_seed(1)
        mean, logvar = nets["encoder"]((x, x_b), (0, 1))
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        fool = _content_adversary(nets["content_discriminator"], z)["fool"].item()
        assert encoder[1] - encoder[0] == pytest.approx(2 * fool, rel=1e-4)

    def test_trains_and_exports_a_bundle_without_it(self, labelled_npz, colour_npz, make_train_config, tmp_path):
        from gvtool.export.bundle import export_bundle

        config = make_train_config(labelled_npz, kind="cyclevae", data_b=colour_npz)
        config = config.replace(model=dataclasses.replace(config.model, content_adv_weight=1.0))
        train(config, tmp_path / "run")
        assert "content_discriminator" in load_checkpoint(tmp_path / "run" / rundir.CHECKPOINT_FILE).models
        _, manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", precisions=("fp32",))
        assert {g.graph for g in manifest.graphs.values()} == {"encoder", "decoder", "encoder_b", "decoder_b"}

    @pytest.mark.parametrize("changes, match", [
        ({"content_adv_weight": -1.0}, "content_adv_weight must be >= 0"),
        ({"kind": "vaegan", "channels_b": 0, "content_adv_weight": 1.0}, "a vaegan model has one domain")])
    def test_refusals(self, changes, match):
        with pytest.raises(BadInputError, match=match):
            _cfg(**changes)
