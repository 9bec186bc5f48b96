"""One run trained by several processes through torch.distributed, started by torchrun.

    torchrun --nproc-per-node 8 -m gvtool train ...                       # 8 GPUs of one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m gvtool train ...               # the same on each of 2 machines

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; `launched` joins the process
group from them (NCCL between GPUs, gloo between CPU processes) and each process trains on its own device.
Every rank holds the same networks; each takes its slice of every (global) batch, and DistributedDataParallel
averages the gradients, so a world of N trains like one process on the same --batch-size (see loop.train).
Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gvtool.errors import BackendUnavailableError, BadInputError

# How long a rank waits for the others at a collective before giving up: rank 0's epoch end (sample grids,
# held-out reconstruction, checkpoint) runs while the others wait at a barrier.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank 0 of 1 when it trains alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def current() -> World:
    """The world of the default process group, or a world of one where none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launched_by_torchrun(environ=os.environ) -> bool:
    return "WORLD_SIZE" in environ and "RANK" in environ


def device_spec(spec: str, world: World, cuda_available: bool) -> str:
    """The --device of one rank: 'auto' and 'cuda' take this process's own GPU (cuda:LOCAL_RANK); a fixed
    'cuda:I' would put every rank of the machine on one GPU, so it is refused when the world has several."""
    if spec == "auto":
        spec = "cuda" if cuda_available else "cpu"
    if spec == "cuda":
        return f"cuda:{world.local_rank}"
    if spec.startswith("cuda:") and world.size > 1:
        raise BadInputError(f"--device {spec} under torchrun: each rank takes its own GPU (cuda:LOCAL_RANK); "
                            "pass --device cuda or auto")
    return spec


@contextlib.contextmanager
def launched(device: str, environ=os.environ):
    """Join the process group when torchrun started this process (else do nothing); yield the --device this rank
    trains on. NCCL for CUDA devices, gloo for the CPU. The group is left on the way out."""
    if not launched_by_torchrun(environ):
        yield device
        return
    if not dist.is_available():
        raise BackendUnavailableError("this torch build has no torch.distributed; train in one process")
    world = World(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))
    device = device_spec(device, world, torch.cuda.is_available())
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise BackendUnavailableError("torch.distributed has no NCCL here; train the ranks on the CPU with --device cpu")
        torch.cuda.set_device(torch.device(device))
    init = {"device_id": torch.device(device)} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=TIMEOUT, **init)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def wrapped(net: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """`net` in DistributedDataParallel without its buffer broadcast at every forward. A step runs some networks
    forward twice before their backward (a translation model's encoder and decoders: the codes, then the cycle), and
    that broadcast writes the batch-norm statistics in place, which the first forward's backward may have saved
    (torch 2.11's batch norm does: autograd then refuses). The ranks start from rank 0's buffers (sync_buffers), and
    then each keeps its own: a rank's batch-norm running statistics follow its slices (no training step reads them:
    training normalises by the batch; rank 0's are the ones saved), and spectral norm's vectors follow the weights,
    which stay identical. Broadcasting rank 0's buffers after every step instead made a world of two gloo ranks
    abort at exit now and then on a loaded 2-core machine. The keyword is forward_sync_buffers from torch 2.13,
    broadcast_buffers before."""
    keyword = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None, **{keyword: False})


def sync_buffers(nets, world: World) -> None:
    """Rank 0's buffers (batch-norm statistics, spectral norm's vectors) copied into every rank's `nets`, one
    broadcast per dtype."""
    if world.size == 1 or not world.is_distributed:
        return
    buffers = [b for net in nets for b in net.buffers()]
    for dtype in dict.fromkeys(b.dtype for b in buffers):
        same = [b for b in buffers if b.dtype == dtype]
        flat = torch.cat([b.detach().reshape(-1) for b in same])
        dist.broadcast(flat, src=0)
        for b, part in zip(same, flat.split([b.numel() for b in same])):
            b.copy_(part.view_as(b))


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the batch size is a multiple of the world size)."""
    per_rank = batch.shape[0] // world.size
    return batch[world.rank * per_rank:(world.rank + 1) * per_rank]


def check_batch(batch_size: int, world: World) -> None:
    """A global batch splits evenly, into slices of two items or more (batch norm needs two)."""
    if batch_size % world.size or batch_size // world.size < 2:
        raise BadInputError(f"--batch-size {batch_size} does not split evenly over {world.size} processes into "
                            f"slices of 2 or more; pass a multiple of {world.size}, at least {2 * world.size}")


def any_rank(flag: bool, device: torch.device, world: World) -> bool:
    """Whether `flag` is set on any rank (True everywhere if so), so that every rank stops at the same step."""
    if world.size == 1 or not world.is_distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(table: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise mean of `table` across ranks (the per-step metrics of a flush window)."""
    if world.size == 1 or not world.is_distributed:
        return table
    table = table.clone()
    dist.all_reduce(table)
    return table / world.size


def barrier(world: World, device: torch.device) -> None:
    if world.size > 1 and world.is_distributed:
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def from_rank_0(value):
    """Rank 0's `value` on every rank (a picklable object, e.g. a default run folder named by the clock)."""
    world = current()
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_seed(seed: int, world: World) -> int:
    """Rank 0 keeps the run's seed (a world of one draws the very noise of a plain run); other ranks draw their
    own latents and noise."""
    return seed if world.rank == 0 else seed + 1_000_003 * world.rank
