"""The decoder's weight average: its update rule, its place in the checkpoint, resume, and what export takes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from gvtool.errors import BadInputError
from gvtool.train.trained import load_run
from gvtool.train import rundir
from gvtool.train.checkpoint import load_weights
from gvtool.train.ema import EMA_NAME, WARMUP, WeightAverage, effective_decay
from gvtool.train.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


class TestUpdateRule:
    def test_effective_decay_ramps_up_then_holds(self):
        assert effective_decay(0.999, 0) == pytest.approx(1 / WARMUP)
        assert effective_decay(0.999, 100) == pytest.approx(101 / (WARMUP + 100))
        assert effective_decay(0.999, 10**6) == 0.999

    def test_average_moves_by_one_minus_decay_towards_the_weights(self):
        net = _net()
        avg = WeightAverage(net, decay=0.9)
        start = [p.detach().clone() for p in avg.net.parameters()]
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        avg.update(net, step=10**6)  # past the warm-up: decay 0.9
        for before, now, target in zip(start, avg.net.parameters(), net.parameters()):
            torch.testing.assert_close(now, 0.9 * before + 0.1 * target.detach())

    def test_buffers_are_copied_not_averaged(self):
        net = _net()
        avg = WeightAverage(net, decay=0.9)
        net.train()(torch.randn(8, 3) * 5)  # batch norm's running statistics move
        avg.update(net, step=10**6)
        torch.testing.assert_close(avg.net[1].running_mean, net[1].running_mean)
        torch.testing.assert_close(avg.net[1].running_var, net[1].running_var)

    def test_recalibrate_measures_the_averages_own_batch_norm_statistics(self):
        net = _net()
        avg = WeightAverage(net, decay=0.5)
        with torch.no_grad():
            avg.net[0].weight.mul_(3.0)  # the average's layer now makes other activations than the network's
        batches = [(torch.randn(16, 3, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
        avg.recalibrate(batches)
        with torch.no_grad():
            h = torch.cat([avg.net[0](x) for (x,) in batches])  # (64, 4): what the batch-norm layer saw
        torch.testing.assert_close(avg.net[1].running_mean, h.mean(dim=0))
        unbiased_per_batch = torch.stack([avg.net[0](x).var(dim=0) for (x,) in batches]).mean(dim=0)
        torch.testing.assert_close(avg.net[1].running_var, unbiased_per_batch.detach())
        assert not avg.net.training and avg.net[1].momentum == 0.1  # left in eval mode, momentum restored

    def test_recalibrate_leaves_a_network_without_batch_norm_alone(self):
        torch.manual_seed(0)
        avg = WeightAverage(nn.Linear(3, 2), decay=0.5)
        before = {k: v.clone() for k, v in avg.net.state_dict().items()}
        avg.recalibrate([(torch.randn(4, 3),)])
        assert all(torch.equal(before[k], v) for k, v in avg.net.state_dict().items())

    def test_average_takes_no_gradient_and_leaves_the_network_alone(self):
        net = _net()
        before = [p.detach().clone() for p in net.parameters()]
        avg = WeightAverage(net, decay=0.5)
        avg.update(net, step=5)
        assert not any(p.requires_grad for p in avg.net.parameters())
        for b, p in zip(before, net.parameters()):
            torch.testing.assert_close(b, p.detach())


@pytest.fixture(scope="module")
def run(tmp_path_factory, labelled_npz, make_train_config, one_torch_thread):
    """(config, run folder) of a finished 2-epoch VAE-GAN run that keeps a weight average."""
    config = make_train_config(labelled_npz, epochs=2)
    config = config.replace(model=dataclasses.replace(config.model, ema_decay=0.9))
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    train(config, run_dir)
    return config, run_dir


class TestInARun:
    def test_checkpoint_holds_the_average_beside_the_trained_decoder(self, run):
        _, run_dir = run
        path = run_dir / rundir.CHECKPOINT_FILE
        trained, averaged = load_weights(path, "decoder"), load_weights(path, EMA_NAME)
        assert trained.keys() == averaged.keys()
        assert any(not torch.equal(trained[k], averaged[k]) for k in trained)

    def test_the_saved_average_has_statistics_of_its_own(self, run):
        _, run_dir = run
        path = run_dir / rundir.CHECKPOINT_FILE
        trained, averaged = load_weights(path, "decoder"), load_weights(path, EMA_NAME)
        stats = [k for k in trained if k.endswith("running_mean")]
        assert stats and all(not torch.equal(trained[k], averaged[k]) for k in stats)

    def test_load_run_gives_the_average_as_the_decoder(self, run):
        _, run_dir = run
        averaged = load_weights(run_dir / rundir.CHECKPOINT_FILE, EMA_NAME)
        for key, value in load_run(run_dir).nets["decoder"].state_dict().items():
            torch.testing.assert_close(value, averaged[key])

    def test_an_interrupted_and_resumed_run_ends_with_the_same_average(self, run, tmp_path):
        config, run_dir = run
        train(config, tmp_path / "r", stop_after_steps=3)
        train(config, tmp_path / "r", resume=True)
        for key, value in load_weights(run_dir / rundir.CHECKPOINT_FILE, EMA_NAME).items():
            torch.testing.assert_close(load_weights(tmp_path / "r" / rundir.CHECKPOINT_FILE, EMA_NAME)[key], value)

    def test_a_run_without_an_average_stores_none(self, labelled_npz, make_train_config, tmp_path):
        config = make_train_config(labelled_npz)
        config = config.replace(model=dataclasses.replace(config.model, ema_decay=0.0))
        train(config, tmp_path / "r")
        with pytest.raises(BadInputError, match="no network 'decoder_ema'"):
            load_weights(tmp_path / "r" / rundir.CHECKPOINT_FILE, EMA_NAME)


class TestExport:
    def test_the_exported_decoder_is_the_average(self, run, tmp_path):
        import onnxruntime as ort

        from gvtool.export.bundle import export_bundle
        from gvtool.train.models import build_networks

        _, run_dir = run
        out, manifest = export_bundle(run_dir, tmp_path / "bundle", precisions=("fp32",))
        path = run_dir / rundir.CHECKPOINT_FILE
        config = load_run(run_dir).config  # completed from the data: the image size
        averaged, trained = build_networks(config.model)["decoder"], build_networks(config.model)["decoder"]
        averaged.load_state_dict(load_weights(path, EMA_NAME))
        trained.load_state_dict(load_weights(path, "decoder"))
        z = torch.randn(5, config.model.latent_dim, generator=torch.Generator().manual_seed(0))
        graph = next(g for g in manifest.graphs.values() if g.graph == "decoder" and g.precision == "fp32")
        session = ort.InferenceSession(str(out / graph.file), providers=["CPUExecutionProvider"])
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: z.numpy()})
        with torch.no_grad():
            expected, other = averaged.eval()(z).numpy(), trained.eval()(z).numpy()
        assert abs(onnx_out - expected).max() < 1e-4
        assert abs(onnx_out - other).max() > 1e-3  # and not the trained decoder's
