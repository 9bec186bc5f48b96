"""Training checkpoints: one safetensors file, atomic, resumable, loaded without pickle."""

from __future__ import annotations

import contextlib
import os
import pickle

import pytest
import safetensors.torch
import torch
from torch import nn

from gvtool.errors import BadInputError
from gvtool.train import checkpoint as ckpt_mod
from gvtool.train.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    load_checkpoint,
    load_weights,
    read_meta,
    save_checkpoint,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return [torch.randn(5, 4, generator=g) for _ in range(n)]  # (B, 4)


def _train(net: nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    net.train()
    for x in batches:
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def _assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _temp_files(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def trained():
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    _train(net, opt, _batches(2))
    return net, opt


@pytest.fixture
def tensor_reads(monkeypatch):
    """Keys of every tensor the checkpoint module reads from a file."""
    reads: list[str] = []
    real_open = ckpt_mod.safe_open

    class Spy:
        def __init__(self, f):
            self._f = f

        def get_tensor(self, key):
            reads.append(key)
            return self._f.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self._f, name)

    @contextlib.contextmanager
    def spying_open(*args, **kwargs):
        with real_open(*args, **kwargs) as f:
            yield Spy(f)

    monkeypatch.setattr(ckpt_mod, "safe_open", spying_open)
    return reads


class TestRoundTrip:
    def test_weights_and_buffers_round_trip_bit_exactly_with_dtypes(self, tmp_path, trained):
        net, _ = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net})
        loaded = load_checkpoint(path).models["net"]
        _assert_state_equal(loaded, net.state_dict())
        assert loaded["1.num_batches_tracked"].dtype == torch.int64
        assert loaded["1.num_batches_tracked"].item() == 2

    def test_unusual_dtypes_round_trip_from_a_plain_state_dict(self, tmp_path):
        state = {
            "half": torch.randn(3).half(),
            "bf16": torch.randn(3).bfloat16(),
            "double": torch.randn(2, 2, dtype=torch.float64),
            "mask": torch.tensor([True, False]),
            "count": torch.tensor(7, dtype=torch.int32),
        }
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": state})
        _assert_state_equal(load_checkpoint(path).models["net"], state)

    def test_tied_and_non_contiguous_tensors_are_saved(self, tmp_path):
        weight = torch.randn(3, 4)
        state = {"a": weight, "b": weight, "t": weight.t(), "row": weight[1]}
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": state})
        _assert_state_equal(load_checkpoint(path).models["net"], state)

    def test_several_models_and_optimizers_share_one_file(self, tmp_path):
        enc, dec = _net(1), _net(2)
        opt_enc = torch.optim.AdamW(enc.parameters(), lr=1e-3, betas=(0.5, 0.9))
        opt_dec = torch.optim.SGD(dec.parameters(), lr=0.1, momentum=0.9)
        _train(enc, opt_enc, _batches(1))
        _train(dec, opt_dec, _batches(1))
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"enc": enc, "dec": dec},
                        optimizers={"e": opt_enc, "d": opt_dec})
        loaded = load_checkpoint(path)
        assert set(loaded.models) == {"enc", "dec"} and set(loaded.optimizers) == {"e", "d"}
        _assert_state_equal(loaded.models["enc"], enc.state_dict())
        _assert_state_equal(loaded.models["dec"], dec.state_dict())
        assert loaded.optimizers["e"]["param_groups"] == opt_enc.state_dict()["param_groups"]
        momentum = loaded.optimizers["d"]["state"][0]["momentum_buffer"]
        assert torch.equal(momentum, opt_dec.state_dict()["state"][0]["momentum_buffer"])

    def test_model_without_tensors_round_trips(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"act": nn.ReLU()})
        assert load_checkpoint(path).models == {"act": {}}

    def test_map_location_moves_model_and_optimizer_tensors(self, tmp_path, trained):
        # The meta device stands in for a GPU: moving to it proves every tensor is moved.
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"adam": opt})
        loaded = load_checkpoint(path, map_location="meta")
        assert all(t.device.type == "meta" for t in loaded.models["net"].values())
        state = loaded.optimizers["adam"]["state"]
        assert all(t.device.type == "meta" for s in state.values() for t in s.values())
        assert all(t.device.type == "meta" for t in load_weights(path, "net", torch.device("meta")).values())

    def test_load_checkpoint_returns_a_checkpoint(self, tmp_path, trained):
        net, _ = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={"step": 2}, models={"net": net})
        assert isinstance(load_checkpoint(path), Checkpoint)


class TestOptimizerResume:
    def test_restored_adam_steps_bit_identically_to_uninterrupted_run(self, tmp_path):
        batches = _batches(6)
        path = tmp_path / "ckpt.safetensors"

        net = _net(0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        torch.manual_seed(7)
        _train(net, opt, batches[:3])
        save_checkpoint(path, meta={"step": 3}, models={"net": net}, optimizers={"adam": opt},
                        rng={"torch": torch.get_rng_state()})
        _train(net, opt, batches[3:])

        resumed = _net(99)  # different initial weights, overwritten by the checkpoint
        resumed_opt = torch.optim.Adam(resumed.parameters(), lr=1e-2)
        loaded = load_checkpoint(path)
        resumed.load_state_dict(loaded.models["net"])
        resumed_opt.load_state_dict(loaded.optimizers["adam"])
        torch.set_rng_state(loaded.rng["torch"])  # dropout draws the same masks
        _train(resumed, resumed_opt, batches[3:])

        _assert_state_equal(resumed.state_dict(), net.state_dict())

    def test_loaded_state_dict_has_the_optimizers_structure(self, tmp_path, trained):
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"adam": opt})
        loaded = load_checkpoint(path).optimizers["adam"]
        original = opt.state_dict()
        assert set(loaded) == {"state", "param_groups"}
        assert list(loaded["state"]) == list(original["state"]) == [0, 1, 2, 3]
        for index, param_state in original["state"].items():
            assert set(loaded["state"][index]) == set(param_state)
            for key, value in param_state.items():
                assert loaded["state"][index][key].dtype == value.dtype
                assert torch.equal(loaded["state"][index][key], value)
        assert loaded["param_groups"] == original["param_groups"]

    def test_adam_betas_come_back_as_a_tuple(self, tmp_path, trained):
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"adam": opt})
        betas = load_checkpoint(path).optimizers["adam"]["param_groups"][0]["betas"]
        assert betas == (0.9, 0.999) and isinstance(betas, tuple)

    def test_adam_step_stays_a_tensor(self, tmp_path, trained):
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"adam": opt})
        step = load_checkpoint(path).optimizers["adam"]["state"][0]["step"]
        assert isinstance(step, torch.Tensor) and step.item() == 2

    def test_tensor_learning_rate_round_trips(self, tmp_path):
        net = _net()
        opt = torch.optim.Adam(net.parameters(), lr=torch.tensor(0.01))
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"adam": opt})
        lr = load_checkpoint(path).optimizers["adam"]["param_groups"][0]["lr"]
        assert isinstance(lr, torch.Tensor) and torch.equal(lr, torch.tensor(0.01))

    def test_optimizer_that_never_stepped_round_trips(self, tmp_path):
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net}, optimizers={"sgd": opt})
        loaded = load_checkpoint(path).optimizers["sgd"]
        assert loaded == opt.state_dict()
        torch.optim.SGD(_net().parameters(), lr=0.5).load_state_dict(loaded)


class TestRng:
    def test_restored_torch_rng_reproduces_the_same_numbers(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        torch.manual_seed(3)
        save_checkpoint(path, meta={}, models={}, rng={"torch": torch.get_rng_state()})
        expected = torch.rand(8)
        torch.manual_seed(4)
        torch.set_rng_state(load_checkpoint(path).rng["torch"])
        assert torch.equal(torch.rand(8), expected)

    def test_generator_state_round_trips(self, tmp_path):
        gen = torch.Generator().manual_seed(11)
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={}, rng={"data": gen.get_state()})
        expected = torch.randint(0, 1000, (8,), generator=gen)
        restored = torch.Generator()
        restored.set_state(load_checkpoint(path).rng["data"])
        assert torch.equal(torch.randint(0, 1000, (8,), generator=restored), expected)

    def test_rng_state_stays_on_the_cpu_under_map_location(self, tmp_path):
        # torch.set_rng_state and torch.cuda.set_rng_state both want a CPU ByteTensor.
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={}, rng={"torch": torch.get_rng_state()})
        state = load_checkpoint(path, map_location="meta").rng["torch"]
        assert state.device.type == "cpu" and state.dtype == torch.uint8


class TestMetadata:
    META = {"config": {"latent": 16, "betas": [0.5, 0.9], "name": "mnist"}, "step": 300, "epoch": 2,
            "scaler": None, "lr": 2e-4}

    def test_meta_round_trips(self, tmp_path, trained):
        net, _ = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta=self.META, models={"net": net})
        assert load_checkpoint(path).meta == self.META

    def test_read_meta_returns_meta_without_reading_tensors(self, tmp_path, trained, tensor_reads):
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta=self.META, models={"net": net}, optimizers={"adam": opt},
                        rng={"torch": torch.get_rng_state()})
        assert read_meta(path) == self.META
        assert tensor_reads == []

    def test_load_weights_returns_one_network_only(self, tmp_path, tensor_reads):
        enc, dec = _net(1), _net(2)
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"enc": enc, "dec": dec},
                        optimizers={"o": torch.optim.Adam(dec.parameters())})
        weights = load_weights(path, "dec")
        _assert_state_equal(weights, dec.state_dict())
        assert sorted(tensor_reads) == sorted(f"model/dec/{k}" for k in dec.state_dict())

    def test_meta_that_is_not_json_is_refused(self, tmp_path):
        with pytest.raises(BadInputError, match="JSON"):
            save_checkpoint(tmp_path / "ckpt.safetensors", meta={"when": object()}, models={})

    def test_network_name_with_a_slash_is_refused(self, tmp_path):
        with pytest.raises(BadInputError, match="without '/'"):
            save_checkpoint(tmp_path / "ckpt.safetensors", meta={}, models={"a/b": _net()})


class TestErrors:
    def _assert_refused(self, path, match: str) -> None:
        for read in (load_checkpoint, read_meta, lambda p: load_weights(p, "net")):
            with pytest.raises(BadInputError, match=match) as info:
                read(path)
            assert str(path) in str(info.value)

    def test_missing_file_is_refused(self, tmp_path):
        self._assert_refused(tmp_path / "nope.safetensors", "checkpoint not found")

    @pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x10\x00"])
    def test_garbage_file_is_refused_as_corrupted(self, tmp_path, content):
        path = tmp_path / "ckpt.safetensors"
        path.write_bytes(content)
        self._assert_refused(path, "corrupted checkpoint")

    def test_truncated_file_is_refused_as_corrupted(self, tmp_path, trained):
        net, _ = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"net": net})
        path.write_bytes(path.read_bytes()[:-7])
        self._assert_refused(path, "corrupted checkpoint")

    def test_safetensors_file_of_another_tool_is_refused(self, tmp_path):
        path = tmp_path / "model.safetensors"
        safetensors.torch.save_file({"w": torch.zeros(2)}, path)
        self._assert_refused(path, "is not a gvtool checkpoint")

    def test_newer_format_is_refused(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        safetensors.torch.save_file({"w": torch.zeros(2)}, path,
                                    metadata={"gvtool_checkpoint": "2", "meta": "{}"})
        self._assert_refused(path, f"got 2, expected {CHECKPOINT_FORMAT}")

    def test_broken_meta_json_is_refused_as_corrupted(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        safetensors.torch.save_file({"w": torch.zeros(2)}, path,
                                    metadata={"gvtool_checkpoint": "1", "meta": "{oops", "models": "{}"})
        with pytest.raises(BadInputError, match="corrupted checkpoint") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)

    def test_load_weights_of_an_absent_network_lists_those_present(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={}, models={"encoder": _net(1), "decoder": _net(2)})
        with pytest.raises(BadInputError, match=r"no network 'critic'.*\['decoder', 'encoder'\]") as info:
            load_weights(path, "critic")
        assert str(path) in str(info.value)


class TestAtomicity:
    def _first_checkpoint(self, tmp_path):
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={"step": 1}, models={"net": _net(1)})
        return path, path.read_bytes()

    def test_failed_serialisation_leaves_the_earlier_checkpoint(self, tmp_path, monkeypatch):
        path, before = self._first_checkpoint(tmp_path)

        def explode(*args, **kwargs):
            raise RuntimeError("serialisation failed")

        monkeypatch.setattr(ckpt_mod, "_serialize", explode)
        with pytest.raises(RuntimeError, match="serialisation failed"):
            save_checkpoint(path, meta={"step": 2}, models={"net": _net(2)})
        assert path.read_bytes() == before
        assert _temp_files(tmp_path) == []

    def test_failed_write_leaves_the_earlier_checkpoint_and_no_temp_file(self, tmp_path, monkeypatch):
        path, before = self._first_checkpoint(tmp_path)

        def explode(fd):
            raise OSError("disk full")

        monkeypatch.setattr(os, "fsync", explode)  # after the bytes reached the temp file, before the rename
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(path, meta={"step": 2}, models={"net": _net(2)})
        assert path.read_bytes() == before
        assert _temp_files(tmp_path) == []
        assert read_meta(path) == {"step": 1}

    def test_checkpoint_loads_without_pickle(self, tmp_path, trained, monkeypatch):
        net, opt = trained
        path = tmp_path / "ckpt.safetensors"
        save_checkpoint(path, meta={"step": 2}, models={"net": net}, optimizers={"adam": opt},
                        rng={"torch": torch.get_rng_state()})

        def forbidden(*args, **kwargs):
            raise AssertionError("pickle used while loading a checkpoint")

        for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
            monkeypatch.setattr(module, name, forbidden)
        loaded = load_checkpoint(path)
        _assert_state_equal(loaded.models["net"], net.state_dict())
        _assert_state_equal(load_weights(path, "net"), net.state_dict())
        assert read_meta(path) == {"step": 2}
