"""The one launcher: run a function in N local processes (labeler training, sharded labelling, detector training).

``launch(fn, nprocs, *args)`` spawns ``nprocs`` processes with :mod:`torch.multiprocessing` and calls
``fn(*args)`` in each, with the environment ``torch.distributed`` reads (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so ``init_process_group("env://")``
works inside ``fn``; processes that need no process group (labelling shards) just read their rank. With
``nprocs == 1`` it calls ``fn(*args)`` in this process: no spawn, the same numbers as a plain call. ``launch``
returns what ``fn`` returned on rank 0 (passed back through a pickle file of our own), so a stage calls one
function, gets ``(result, timings)`` and writes its outputs itself, however many processes ran. A process
that fails makes ``launch`` raise in the parent (``torch.multiprocessing.ProcessRaisedException`` names it), so
the stage fails. Under ``torchrun`` (``WORLD_SIZE`` already set) the caller is one process of a group that
torchrun started: :func:`launched_externally` says so and the caller runs ``fn`` itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_externally() -> bool:
    """True inside a process that torchrun (or another elastic launcher) started."""
    return "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous of one launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_to_file(log_dir: str | Path, index: int) -> None:
    """Each process also logs to ``<log_dir>/rank<k>.log`` (the processes' stderr interleave)."""
    path = Path(log_dir) / f"rank{index}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))


def _worker(index: int, fn: Callable[..., Any], nprocs: int, port: int, log_dir: str | None, args: tuple,
            result_file: str) -> None:
    os.environ.update({"RANK": str(index), "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(index),
                       "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if log_dir is not None:
        _log_to_file(log_dir, index)
    try:
        result = fn(*args)
        if index == 0:
            Path(result_file).write_bytes(pickle.dumps(result))
    except BaseException:
        logging.exception("process %d of %d failed", index, nprocs)
        raise


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, log_dir: str | Path | None = None) -> Any:
    """Run ``fn(*args)`` in ``nprocs`` local processes (see the module docstring) and return rank 0's result;
    ``fn`` must be a module-level function, ``args`` and the result picklable. ``log_dir``: every process also
    logs to ``rank<k>.log`` there."""
    if nprocs < 1:
        raise ValueError(f"launch: nprocs must be >= 1, got {nprocs}")
    if nprocs == 1:
        if log_dir is not None:
            _log_to_file(log_dir, rank())
        return fn(*args)
    import torch.multiprocessing as mp

    port = free_port()
    log.info("starting %d processes of %s.%s (rendezvous 127.0.0.1:%d)", nprocs, fn.__module__, fn.__qualname__, port)
    with tempfile.TemporaryDirectory(prefix="mal-launch-") as tmp:
        result_file = str(Path(tmp) / "rank0.pkl")
        mp.start_processes(_worker, args=(fn, nprocs, port, None if log_dir is None else str(log_dir), args,
                                          result_file), nprocs=nprocs, join=True, start_method="spawn")
        return pickle.loads(Path(result_file).read_bytes())
