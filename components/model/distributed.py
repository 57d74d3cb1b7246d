"""Data-parallel training across processes and machines: PyTorch's DistributedDataParallel, launched by
PyTorch's own launcher (torchrun), never by a launcher of tunegate's.

torchrun starts one process per device and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...). Every process runs the same training code on its own shard
of each epoch's batches; gradients are averaged at every step, so all ranks hold the same weights.
Only rank 0 has side effects: checkpoints, the saved model, DVC outputs, MLflow.

One machine, N processes: `train.processes: N` makes the train stage start itself under
`torchrun --standalone --nproc_per_node=N`. Several machines: run torchrun yourself on each (see the
README); the stage sees it is already launched and trains.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from components.model.compute import Compute


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_ranks() -> Ranks:
    """This process's place, as torchrun set it; a single process when it was not launched by torchrun."""
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


@contextlib.contextmanager
def process_group(ranks: Ranks, compute: Compute) -> Iterator[None]:
    """The collective group for the block (gloo on CPUs, NCCL on GPUs); nothing for a single process."""
    import torch.distributed as dist

    if not ranks.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if compute.device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(batches: Sequence[list[int]], ranks: Ranks) -> list[list[int]]:
    """This rank's batches of an epoch: every world_size-th one, the list first padded by wrapping
    around so that every rank takes the same number of steps (as DistributedSampler pads). The epoch's
    order, and so each rank's shard, changes with the epoch."""
    if not ranks.distributed:
        return list(batches)
    padded = list(batches) + list(batches[: (-len(batches)) % ranks.world_size])
    return padded[ranks.rank::ranks.world_size]


def wrap(model: torch.nn.Module, ranks: Ranks, compute: Compute) -> torch.nn.Module:
    """The model the training step calls: DDP around it when there are several ranks."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [compute.device.index] if compute.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(value: float, ranks: Ranks) -> float:
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ranks.world_size


def min_over_ranks(value: int, ranks: Ranks) -> int:
    """The smallest of the ranks' values: a batch size every rank's memory holds."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def gather_rng_states(ranks: Ranks) -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout differs per rank), so a resumed run draws as the killed one."""
    state = torch.get_rng_state()
    if not ranks.distributed:
        return [state]
    import torch.distributed as dist

    states = [torch.empty_like(state) for _ in range(ranks.world_size)]
    dist.all_gather(states, state)
    return states


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def torchrun_command(processes: int, module_args: Sequence[str]) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N -m <module args>`, with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", *module_args]


def relaunch_under_torchrun(processes: int, module_args: Sequence[str]) -> None:
    """Run this same command as `processes` ranks on this machine and wait; a failed rank fails it."""
    env = dict(os.environ)
    # One thread per rank unless the user says otherwise: ranks that each take every core slow each other.
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(torchrun_command(processes, module_args), env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"training under torchrun with {processes} processes failed (exit {done.returncode}); "
                           "each rank's output is above")
