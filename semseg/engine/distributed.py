"""One training or evaluation spread over the processes that ``torchrun`` starts.

``torchrun`` starts one process per device (on one machine or several) and tells each who it
is through environment variables: ``RANK`` (0..WORLD_SIZE-1, unique over all machines),
``LOCAL_RANK`` (index on this machine), ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`process_group` reads them, joins the processes into a ``torch.distributed`` group (NCCL
for CUDA devices, Gloo for CPUs) and chooses this process's device. Without torchrun, or with a
world of one process, nothing is initialised and every helper here answers for a single process,
so the single-process code path is unchanged.

A collective that waits longer than the timeout (``SEMSEG_DIST_TIMEOUT`` seconds, default 600)
raises instead of blocking forever, e.g. when a peer hangs; torchrun then stops the remaining
processes and reports which rank failed first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

TIMEOUT_ENV = "SEMSEG_DIST_TIMEOUT"
DEFAULT_TIMEOUT = timedelta(minutes=10)
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

T = TypeVar("T")


class LaunchError(ValueError):
    """The launcher's environment variables, the timeout or the device do not fit together."""


class Launch(NamedTuple):
    """This process's place in a torchrun launch."""

    rank: int
    local_rank: int
    world_size: int


def launch_from_env() -> Launch | None:
    """The torchrun variables of this process, or None when torchrun did not start it.

    Raises:
        LaunchError: ``WORLD_SIZE`` is set but another variable is missing or not a number.
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start the processes with "
            "torchrun (under SLURM: srun torchrun ..., see docs/distributed.md)"
        )
    values = {}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        text = os.environ[name]
        if not text.isdigit():
            raise LaunchError(f"{name}={text!r} is not a non-negative integer")
        values[name] = int(text)
    if not values["RANK"] < values["WORLD_SIZE"]:
        raise LaunchError(f"RANK={values['RANK']} is not below WORLD_SIZE={values['WORLD_SIZE']}")
    return Launch(values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"])


def timeout_from_env() -> timedelta:
    """How long a collective may wait: ``SEMSEG_DIST_TIMEOUT`` seconds, default 10 minutes.

    Raises:
        LaunchError: the variable is not a positive number.
    """
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise LaunchError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def _process_device(device: str | None, launch: Launch) -> torch.device:
    """``cuda:LOCAL_RANK`` for CUDA (``device`` None with CUDA present, or "cuda"), else CPU."""
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type != "cuda":
        return chosen
    if chosen.index is not None:
        raise LaunchError(
            f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device "
            "cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)"
        )
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise LaunchError(
            f"LOCAL_RANK={launch.local_rank} but this machine has {count} CUDA device(s): "
            "lower --nproc_per_node"
        )
    return torch.device("cuda", launch.local_rank)


@contextmanager
def process_group(device: str | None = None) -> Iterator[torch.device]:
    """Join the torchrun process group for the ``with`` block; yields this process's device.

    Args:
        device: None (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``. Under torchrun
            with several processes CUDA means ``cuda:LOCAL_RANK`` (made the current device).

    The backend is NCCL for CUDA and Gloo for CPU, with :func:`timeout_from_env`. Without
    torchrun, or for a world of one, no group is made and ``device`` is returned as given
    (CUDA if available by default). When the block ends normally the processes meet in a barrier
    and the group is destroyed; after an error it is left to the process exit, since peers may
    still wait in a collective.

    Raises:
        LaunchError: incomplete torchrun variables, a bad timeout, or an unusable device.
    """
    launch = launch_from_env()
    if launch is None or launch.world_size == 1:
        yield torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return
    timeout = timeout_from_env()
    chosen = _process_device(device, launch)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        dist.init_process_group("nccl", timeout=timeout, device_id=chosen)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    yield chosen
    # Leave together: a Gloo rank that tears down while its peer is still busy (rank 0 writing
    # the run folder) sometimes aborts ("terminate called without an active exception"), and
    # the peer's torchrun agent then waits for it.
    dist.barrier()
    dist.destroy_process_group()


def get_world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    """This process's rank, 0..world_size-1 (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0, the one process that writes files and prints results."""
    return get_rank() == 0


def shard(
    items: Sequence[T], rank: int | None = None, world_size: int | None = None
) -> Sequence[T]:
    """This process's share of ``items``: every ``world_size``-th item from position ``rank``.

    The shares of ranks ``0..world_size-1`` are disjoint, together hold every item once, and
    differ in length by at most one. Consecutive blocks of ``world_size`` items are spread one
    per rank, so batch ``k`` of every rank together is block ``k`` of ``items``. ``rank`` and
    ``world_size`` default to this process's.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return items[rank::world_size]


def shard_dataset(dataset: Dataset) -> Dataset:
    """This process's :func:`shard` of ``dataset`` (the dataset itself in a single process)."""
    if get_world_size() == 1:
        return dataset
    return Subset(dataset, shard(range(len(dataset))))


def data_parallel(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` wrapped in :class:`DistributedDataParallel` (the model itself in a single
    process). DDP copies rank 0's weights to every process here and averages gradients over the
    processes in ``backward``. ``find_unused_parameters`` is needed when some parameters get no
    gradient in a step (a frozen encoder)."""
    if get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into every process's ``model``.

    DDP does so at the start of each training forward, but each process's last forward then
    updates its own copy; this makes all processes evaluate rank 0's model, the checkpointed one.
    """
    if get_world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all processes (a detached copy; ``value`` itself alone)."""
    if get_world_size() == 1:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / get_world_size()


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every process, by rank (picklable values; ``[value]`` alone)."""
    if get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * get_world_size()
    dist.all_gather_object(values, value)
    return values
