"""Process-group set-up for data-parallel training, its device choice, and RNG states that resume exactly.

Processes come from the project's launcher (:func:`mal.common.launch.launch`, which the stage calls) or from a
hand-typed ``torchrun``; :func:`resolve_num_processes` says how many ``run.train_labeler`` asks for.
Each process takes ``cuda:<LOCAL_RANK>`` with NCCL when every local process has a GPU of its own; with
``device: cpu``, without CUDA, or with more local processes than visible GPUs, every process runs on the CPU
with gloo (logged), so that no process picks a ``cuda:k`` that does not exist.
RNG states are stored as tensors and plain lists, so a run state loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mal.common.devices import DeviceError, cuda_diagnosis, warn_cpu_fallback

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_num_processes(num_gpus: int | str, device: str = "auto") -> int:
    """``run.train_labeler.num_gpus``: ``auto`` = every visible GPU (1 on the CPU or with ``device: cpu``), or N."""
    if num_gpus == "auto":
        return 1 if device == "cpu" or not torch.cuda.is_available() else max(1, torch.cuda.device_count())
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise ValueError(f"run.train_labeler.num_gpus must be 'auto' or an integer >= 1, got {num_gpus!r}")
    return num_gpus


def resolve_device(pref: str, local_world: int, local_rank: int) -> torch.device:
    """The device of local process ``local_rank`` of ``local_world`` for ``pref`` (auto | cpu | cuda).

    ``auto``: ``cuda:<local_rank>`` when there are at least ``local_world`` visible GPUs, else the CPU (with a
    warning when GPUs exist but are too few). ``cuda``: as auto, but a ``DeviceError`` (naming what torch
    reports) instead of the CPU. ``auto`` on the CPU of a machine with NVIDIA devices warns loudly.
    """
    if pref not in DEVICES:
        raise ValueError(f"run.train_labeler.device must be one of {DEVICES}, got {pref!r}")
    if pref == "cpu":
        return torch.device("cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= local_world:
        return torch.device(f"cuda:{local_rank}")
    why = "no CUDA device is visible" if gpus == 0 else f"{local_world} processes > {gpus} visible GPU(s)"
    if pref == "cuda":
        raise DeviceError(f"run.train_labeler.device: cuda, but {why}: {cuda_diagnosis()}")
    if local_rank == 0:
        if gpus:
            log.warning("%s: every process trains on the CPU with gloo (set run.train_labeler.num_gpus <= %d)", why, gpus)
        else:
            warn_cpu_fallback("run.train_labeler.device")
    return torch.device("cpu")


def dist_setup(device_pref: str = "auto") -> tuple[int, int, torch.device]:
    """Init the process group when launched by torchrun; returns (rank, world_size, device).

    NCCL on CUDA, gloo on the CPU (:func:`resolve_device`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_pref, local_world, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if world > 1:
        log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return rank, world, device


def dist_cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [int(random.getstate()[0]), list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
