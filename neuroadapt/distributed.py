"""Data-parallel training over several processes (PyTorch DDP), launched as torchrun does.

One ``train`` job that asks for N GPUs runs N processes, one per GPU (NCCL); on a machine
without CUDA the same code runs N processes on the CPU with the gloo backend, which is how
the tests check it. :func:`launch` starts them with torchrun's own launcher
(``torch.distributed.launcher.api.elastic_launch``, what ``torchrun --standalone`` calls), so
the rule keeps its ``script:`` directive and no command line has to be rebuilt.

Each process reads the whole batch order of an epoch (seeded alike) and trains on its share
of every batch, with its loss weighted by that share, so the averaged gradients equal the
one-process gradient of the whole batch. The augmentation stream stays the one-process
stream: every process draws the augmentations of the whole batch and keeps its share.
BatchNorm statistics are synchronised on CUDA (SyncBatchNorm); on the CPU (no SyncBatchNorm
there) each process normalises its share with its own batch statistics, which is where the
CPU runs differ from one process. Validation, checkpoints and outputs are rank 0's: it
validates, sends the epoch's row to the others (so every rank takes the same early-stopping
decision) and writes every file.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> np.ndarray:
        """Positions of this rank's part of a batch of ``n``: contiguous, sizes within 1."""
        return np.array_split(np.arange(n), self.world)[self.rank]


def current_ranks() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def wrap(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """The module that training calls: ``model`` itself for one process, else a DDP wrapper
    (rank 0's parameters and buffers are copied to every rank here). BatchNorm layers become
    SyncBatchNorm on CUDA, in place, keeping their parameters (the optimiser's)."""
    if not ranks.parallel:
        return model
    if device.type == "cuda":
        _sync_batchnorm_in_place(model)
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Some methods leave trainable parameters out of a forward (a missing modality).
        find_unused_parameters=True,
    )


def _sync_batchnorm_in_place(model: torch.nn.Module) -> None:
    for name, child in model.named_children():
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(model, name, converted)


def from_rank0(value, ranks: Ranks):
    """``value`` as rank 0 has it, on every rank (any picklable object)."""
    if not ranks.parallel:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def summed(value: float, ranks: Ranks) -> float:
    if not ranks.parallel:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item())


def launch(processes: int, entry: Callable, arguments: dict, log_file: str | None = None):
    """Run ``entry(arguments, device)`` in ``processes`` processes (one per GPU when CUDA has
    that many, else on the CPU with gloo) through torchrun's launcher; returns rank 0's
    result. A failing rank stops all of them and its error is raised here. Each process logs
    to stderr; rank 0 also appends to ``log_file`` (the job's log)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        rdzv_backend="c10d",  # torchrun --standalone: a rendezvous on a free local port
        rdzv_endpoint="localhost:0",
        run_id=str(uuid.uuid4()),
        max_restarts=0,  # Snakemake's retries restart the job, which resumes
        monitor_interval=0.5,
    )
    try:
        results = elastic_launch(config, _worker)(entry, arguments, log_file)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise RuntimeError(
            f"training process {rank} of {processes} failed: {_failure_text(failure)}"
        ) from None
    return results[0]


def _failure_text(failure) -> str:
    """The failed process's exception (``record`` wrote it), else its exit code."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    if not message or message == "<N/A>" or "To enable traceback" in str(message):
        return f"exit code {failure.exitcode}; its error is on the job's stderr"
    return str(message)


def _worker(entry: Callable, arguments: dict, log_file: str | None):
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_run_rank)(entry, arguments, log_file)


def _run_rank(entry: Callable, arguments: dict, log_file: str | None):
    rank = int(os.environ["RANK"])
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and rank == 0:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    for handler in handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s")
        )
        root.addHandler(handler)
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        logging.getLogger(__name__).info(
            "process %d of %d on %s (%s)", rank, dist.get_world_size(), device, dist.get_backend()
        )
        return entry(arguments, device)
    finally:
        dist.destroy_process_group()
