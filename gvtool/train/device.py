"""Resolve --device and --precision into a torch device and an autocast dtype."""

from __future__ import annotations

import torch

from gvtool.errors import BackendUnavailableError, BadInputError

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """'auto' takes CUDA when present; 'cpu', 'cuda', 'cuda:I' are checked against this machine."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise BadInputError(f"unknown --device {spec!r}; expected auto, cpu, cuda or cuda:I") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BadInputError(f"unsupported --device {spec!r}; expected auto, cpu, cuda or cuda:I")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"--device {spec} asked for CUDA, but this torch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise BackendUnavailableError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", device.index or 0)


def resolve_precision(spec: str, device: torch.device) -> str:
    """'auto' is fp32 on the CPU and mixed precision on CUDA (bf16 where the GPU has it, else fp16)."""
    if spec == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if spec not in AUTOCAST_DTYPES:
        raise BadInputError(f"unknown --precision {spec!r}; expected auto, fp32, bf16 or fp16")
    if spec == "fp16" and device.type != "cuda":
        raise BadInputError("--precision fp16 needs a CUDA device (it relies on loss scaling); use bf16 or fp32 on the CPU")
    return spec


def filled(values: list[float] | list[int], device: torch.device | str) -> torch.Tensor:
    """A small constant vector made on `device` by fill kernels: torch.tensor(values, device=...) copies it from the
    host, which a step captured as a CUDA graph cannot do."""
    return torch.stack([torch.full((), v, device=device) for v in values])
