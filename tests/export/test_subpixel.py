"""The exported decoder's sub-pixel rewrite computes what the trained decoder computes."""

from __future__ import annotations

import onnx
import pytest
import torch

from gvtool.export.subpixel import inference_decoder, subpixel_conv
from gvtool.train.config import ModelConfig
from gvtool.train.models import Decoder
from export_fixtures import tiny_bundle, tiny_run  # noqa: F401


def _randomise_batch_norm(module: torch.nn.Module) -> None:
    """Trained-looking statistics, so that folding them is really tested (fresh BN is the identity)."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)


class TestEquivalence:
    @pytest.mark.parametrize("size,channels,conditional", [(16, 1, False), (28, 1, False), (32, 3, False),
                                                           (64, 3, False), (28, 1, True)])
    def test_rewritten_decoder_equals_the_trained_one(self, size, channels, conditional, one_torch_thread):
        cfg = ModelConfig(image_size=size, channels=channels, width=8, latent_dim=6,
                          conditional=conditional, num_classes=5 if conditional else 0)
        decoder = Decoder(cfg).eval()
        _randomise_batch_norm(decoder)
        z = torch.randn(7, cfg.latent_dim, generator=torch.Generator().manual_seed(1))
        labels = torch.arange(7) % 5 if conditional else None
        with torch.no_grad():
            want, got = decoder(z, labels), inference_decoder(decoder)(z, labels)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()

    @pytest.mark.parametrize("with_norm", [False, True])
    def test_one_subpixel_conv_equals_upsample_then_conv(self, with_norm, one_torch_thread):
        conv = torch.nn.Conv2d(5, 3, 3, padding=1)
        norm = torch.nn.BatchNorm2d(3).eval() if with_norm else None
        if norm is not None:
            _randomise_batch_norm(norm)
        x = torch.randn(2, 5, 6, 6)
        with torch.no_grad():
            want = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
            want = norm(want) if norm is not None else want
            got = subpixel_conv(conv, norm)(x)
        assert torch.allclose(got, want, atol=1e-5)

    def test_vector_decoders_are_left_as_they_are(self):
        decoder = Decoder(ModelConfig(data_kind="vector", vector_dim=2, latent_dim=4))
        assert inference_decoder(decoder) is decoder


class TestExportedGraph:
    def test_exported_decoder_makes_its_output_channels_at_low_resolution(self, tiny_bundle):
        folder, manifest = tiny_bundle("vaegan")[:2]
        ops = [n.op_type for n in onnx.load(str(folder / manifest.graphs["decoder.fp32"].file)).graph.node]
        assert ops[-3:] == ["Conv", "DepthToSpace", "Tanh"], ops

    def test_rewritten_bundle_still_validates_against_the_trained_decoder(self, tiny_bundle):
        manifest = tiny_bundle("vaegan")[1]
        assert manifest.graphs["decoder.fp32"].validation.passed
        assert manifest.graphs["decoder.fp32"].validation.max_abs_diff <= 1e-4
