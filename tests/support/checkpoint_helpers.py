"""Comparing two runs' checkpoints, shared by the training tests (exact resume, the captured step)."""

from __future__ import annotations

import torch


def assert_same_training_state(got, want) -> None:
    """Two loaded checkpoints (train.checkpoint.Checkpoint) hold the same step, every network's tensors and every
    optimizer's state, to the bit."""
    assert got.meta["step"] == want.meta["step"]
    assert got.models.keys() == want.models.keys()
    for name, state in want.models.items():
        for key, tensor in state.items():
            assert torch.equal(got.models[name][key], tensor), f"{name}.{key}"
    for name, opt in want.optimizers.items():
        for index, param_state in opt["state"].items():
            for key, tensor in param_state.items():
                assert torch.equal(got.optimizers[name]["state"][index][key], tensor), f"{name}[{index}].{key}"
