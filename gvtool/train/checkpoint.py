"""A training checkpoint: one safetensors file, written atomically, loaded without pickle.

It holds everything a run needs to resume exactly (model weights and buffers, optimizer state, RNG
state, the caller's JSON metadata), and export can read one network's weights without the rest.

Layout inside the file:
    tensors   model/<name>/<param key>                   one tensor of a network's state_dict
              optim/<name>/state/<param index>/<key>     one tensor of an optimizer's per-param state
              optim/<name>/group/<group index>/<key>     a tensor hyper-parameter (e.g. lr=torch.tensor(..))
              rng/<name>                                 a generator state (uint8)
    metadata  gvtool_checkpoint = "1"
              meta = json of the caller's metadata
              models = json {name: [param keys in state_dict order]}
              optim/<name>/param_groups = json of the optimizer's param_groups
              optim/<name>/scalars = json {param index: {key: value}} of non-tensor per-param state
Tuples inside optimizer JSON are written as {"__tuple__": [...]} and tensors as {"__tensor__": key}, so
param_groups come back exactly as Optimizer.state_dict() produced them (Adam's betas stay a tuple).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _serialize

from gvtool.errors import BadInputError
from gvtool.fileio import atomic_write_bytes

CHECKPOINT_FORMAT = 1

_TUPLE = "__tuple__"
_TENSOR = "__tensor__"


@dataclass(frozen=True)
class Checkpoint:
    meta: dict  # the caller's JSON metadata (config, step, epoch, scaler state, ...)
    models: dict[str, dict[str, torch.Tensor]]  # network name -> state_dict
    optimizers: dict[str, dict]  # optimizer name -> state_dict for Optimizer.load_state_dict
    rng: dict[str, torch.Tensor]  # generator name -> state, always on the CPU


def save_checkpoint(
    path: str | os.PathLike,
    *,
    meta: dict,
    models: dict[str, torch.nn.Module | dict[str, torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint to `path` atomically: a crash mid-write leaves the previous file intact."""
    if not isinstance(meta, dict):
        raise BadInputError(f"checkpoint meta: got {type(meta).__name__}, expected a dict")
    try:
        metadata = {"gvtool_checkpoint": str(CHECKPOINT_FORMAT), "meta": json.dumps(meta)}
    except (TypeError, ValueError) as e:
        raise BadInputError(f"checkpoint meta is not JSON-serialisable: {e}") from e
    tensors: dict[str, torch.Tensor] = {}

    model_keys = {}
    for name, model in models.items():
        _check_name("model", name)
        state = model.state_dict() if isinstance(model, torch.nn.Module) else model
        for key, value in state.items():
            tensors[f"model/{name}/{key}"] = _storable(value, f"model {name!r} entry {key!r}")
        model_keys[name] = list(state)
    metadata["models"] = json.dumps(model_keys)

    for name, optimizer in (optimizers or {}).items():
        _check_name("optimizer", name)
        state_dict = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in state_dict["state"].items():
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    what = f"optimizer {name!r} state {key!r}"
                    tensors[f"optim/{name}/state/{index}/{key}"] = _storable(value, what)
                else:
                    prefix = f"optim/{name}/scalars/{index}/{key}"
                    scalars.setdefault(str(index), {})[key] = _encode(value, prefix, tensors)
        groups = [
            _encode(group, f"optim/{name}/group/{i}", tensors)
            for i, group in enumerate(state_dict["param_groups"])
        ]
        try:
            metadata[f"optim/{name}/param_groups"] = json.dumps(groups)
            metadata[f"optim/{name}/scalars"] = json.dumps(scalars)
        except (TypeError, ValueError) as e:
            raise BadInputError(f"optimizer {name!r} state is not JSON-serialisable: {e}") from e

    for name, state in (rng or {}).items():
        _check_name("rng", name)
        tensors[f"rng/{name}"] = _storable(state, f"rng state {name!r}")

    atomic_write_bytes(path, _serialize(tensors, metadata=metadata))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a whole checkpoint.

    Model and optimizer tensors land on `map_location`; RNG states stay on the CPU, where
    torch.set_rng_state and torch.cuda.set_rng_state want them.
    """
    device = _device(map_location)
    with _opened(path) as (f, metadata):
        meta = _read_meta(path, metadata)
        model_keys = _model_keys(path, metadata)
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        rng = {k.removeprefix("rng/"): t for k, t in tensors.items() if k.startswith("rng/")}
        tensors = {k: t.to(device) for k, t in tensors.items() if not k.startswith("rng/")}
        models = {name: _pick(path, tensors, f"model/{name}/", keys) for name, keys in model_keys.items()}
        optimizers = {
            key.split("/")[1]: _optimizer_state(path, key.split("/")[1], metadata, tensors)
            for key in metadata
            if key.startswith("optim/") and key.endswith("/param_groups")
        }
    return Checkpoint(meta=meta, models=models, optimizers=optimizers, rng=rng)


def load_weights(
    path: str | os.PathLike, name: str, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read one network's state_dict, and no other tensor, from a checkpoint."""
    device = _device(map_location)
    with _opened(path) as (f, metadata):
        model_keys = _model_keys(path, metadata)
        if name not in model_keys:
            raise BadInputError(f"checkpoint {path} has no network {name!r}; it holds {sorted(model_keys)}")
        present = set(f.keys())
        missing = [k for k in model_keys[name] if f"model/{name}/{k}" not in present]
        if missing:
            raise BadInputError(f"corrupted checkpoint {path}: network {name!r} lacks tensors {missing}")
        return {k: f.get_tensor(f"model/{name}/{k}").to(device) for k in model_keys[name]}


def read_meta(path: str | os.PathLike) -> dict:
    """Read the caller's metadata from a checkpoint; no tensor is read."""
    with _opened(path) as (_, metadata):
        return _read_meta(path, metadata)


# --- writing ---------------------------------------------------------------------------------------


def _check_name(kind: str, name: object) -> None:
    # Names become one component of a "/"-separated key.
    if not isinstance(name, str) or not name or "/" in name:
        raise BadInputError(f"{kind} name: got {name!r}, expected a non-empty string without '/'")


def _storable(value: object, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise BadInputError(f"{what}: got {type(value).__name__}, expected a torch.Tensor")
    # safetensors refuses tensors that share storage (tied weights, views) or are not contiguous: a
    # fresh contiguous copy on the CPU satisfies both.
    return value.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Make `value` JSON-ready, tagging tuples and moving tensors into `tensors` under `key`."""
    if isinstance(value, torch.Tensor):
        tensors[key] = _storable(value, key)
        return {_TENSOR: key}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _encode(v, f"{key}/{k}", tensors) for k, v in value.items()}
    return value


# --- reading ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[tuple[Any, dict[str, str]]]:
    """Open a checkpoint, check its format, and turn every read failure into a BadInputError."""
    if not Path(path).is_file():
        raise BadInputError(f"checkpoint not found: {path}")
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if "gvtool_checkpoint" not in metadata:
                raise BadInputError(f"{path} is not a gvtool checkpoint (no 'gvtool_checkpoint' metadata)")
            got = metadata["gvtool_checkpoint"]
            if got != str(CHECKPOINT_FORMAT):
                raise BadInputError(
                    f"unsupported checkpoint format in {path}: got {got}, expected {CHECKPOINT_FORMAT}"
                )
            yield f, metadata
    except (SafetensorError, OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise BadInputError(f"corrupted checkpoint {path}: {e}") from e


def _device(map_location: str | torch.device) -> torch.device:
    try:
        return torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise BadInputError(f"map_location: got {map_location!r}, expected a torch device") from e


def _read_meta(path, metadata: dict[str, str]) -> dict:
    meta = json.loads(metadata.get("meta", "null"))
    if not isinstance(meta, dict):
        raise BadInputError(f"corrupted checkpoint {path}: 'meta' is {type(meta).__name__}, expected a dict")
    return meta


def _model_keys(path, metadata: dict[str, str]) -> dict[str, list[str]]:
    keys = json.loads(metadata.get("models", "null"))
    if not isinstance(keys, dict) or not all(isinstance(v, list) for v in keys.values()):
        raise BadInputError(f"corrupted checkpoint {path}: 'models' is not a map of names to key lists")
    return keys


def _pick(path, tensors: dict[str, torch.Tensor], prefix: str, keys: list[str]) -> dict[str, torch.Tensor]:
    missing = [k for k in keys if prefix + k not in tensors]
    if missing:
        raise BadInputError(f"corrupted checkpoint {path}: {prefix!r} lacks tensors {missing}")
    return {k: tensors[prefix + k] for k in keys}


def _optimizer_state(path, name: str, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> dict:
    """Rebuild {"state": {index: {key: value}}, "param_groups": [...]} as Optimizer.state_dict() makes it."""
    groups = _decode(path, json.loads(metadata[f"optim/{name}/param_groups"]), tensors)
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise BadInputError(
            f"corrupted checkpoint {path}: optimizer {name!r} param_groups is not a list of dicts"
        )
    scalars = json.loads(metadata.get(f"optim/{name}/scalars", "{}"))
    state: dict[int, dict[str, Any]] = {}
    try:
        for index, values in scalars.items():
            state.setdefault(int(index), {}).update(_decode(path, values, tensors))
        prefix = f"optim/{name}/state/"
        for key, tensor in tensors.items():
            if key.startswith(prefix):
                index, _, state_key = key.removeprefix(prefix).partition("/")
                state.setdefault(int(index), {})[state_key] = tensor
    except (AttributeError, TypeError) as e:  # ValueError (a non-int index) is caught by _opened
        raise BadInputError(f"corrupted checkpoint {path}: optimizer {name!r} state: {e}") from e
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def _decode(path, value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(path, v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(path, v, tensors) for v in value[_TUPLE])
        if set(value) == {_TENSOR}:
            if value[_TENSOR] not in tensors:
                raise BadInputError(f"corrupted checkpoint {path}: missing tensor {value[_TENSOR]!r}")
            return tensors[value[_TENSOR]]
        return {k: _decode(path, v, tensors) for k, v in value.items()}
    return value
