"""Start the labeler's data-parallel processes from the stage itself (``dvc repro``, Prefect, by hand).

``labeler.train.num_gpus`` (``auto`` | N) and ``labeler.train.device`` (``auto`` | ``cpu`` | ``cuda``) give the
number of processes; when it is above 1 and the script was not started by ``torchrun`` (no ``WORLD_SIZE``), the
stage re-runs itself under torch's elastic launcher (``python -m torch.distributed.run --standalone``), which
fails with a non-zero exit when any process fails. On the CPU the processes use gloo (mal.labeler.distributed).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (or another elastic launcher) started."""
    return "WORLD_SIZE" in os.environ


def resolve_num_processes(num_gpus: int | str, device: str = "auto") -> int:
    """``num_gpus``: ``auto`` = every visible GPU (1 on the CPU or with ``device: cpu``), or a count >= 1."""
    if isinstance(num_gpus, str):
        if num_gpus != "auto":
            raise ValueError(f"labeler.train.num_gpus must be 'auto' or an integer >= 1, got {num_gpus!r}")
        if device == "cpu" or not torch.cuda.is_available():
            return 1
        return max(1, torch.cuda.device_count())
    if isinstance(num_gpus, bool) or int(num_gpus) != num_gpus or int(num_gpus) < 1:
        raise ValueError(f"labeler.train.num_gpus must be 'auto' or an integer >= 1, got {num_gpus!r}")
    return int(num_gpus)


def torchrun_command(script: str | Path, argv: list[str], nproc: int) -> list[str]:
    """The command that runs ``script argv`` on ``nproc`` local processes (a free rendezvous port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(script), *argv]


def run_workers(script: str | Path, argv: list[str], nproc: int) -> int:
    """Run ``script argv`` on ``nproc`` processes; returns the launcher's exit code (non-zero if any failed).

    ``OMP_NUM_THREADS`` is left to the caller (torchrun sets 1 when it is unset; ``labeler.train.num_threads``
    sets the threads of each process).
    """
    cmd = torchrun_command(script, argv, nproc)
    log.info("starting %d training processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
