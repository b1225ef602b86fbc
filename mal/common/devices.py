"""Which device a stage runs on — one place that resolves a device request, refuses a silent CPU fallback, and
says what it chose.

- :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N`` into a ``torch.device``. A GPU asked for but not
  usable raises :class:`DeviceError` naming the parameter and what torch reports (its CUDA build, the driver's
  error); ``auto`` falling back to CPU on a machine that has NVIDIA devices logs a loud WARNING.
- :func:`resolve_num_gpus` does the same for a GPU count (``auto`` = every visible GPU, 0 = CPU).
- :func:`shard_device` maps a pseudo-labelling shard to ``cuda:{i % n}``, so shards spread over the GPUs.
- :func:`log_device` is the line every stage prints: device, GPU name and count, AMP on/off.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import Mapping

import torch

log = logging.getLogger("mal.devices")


class DeviceError(RuntimeError):
    """A GPU was asked for and torch cannot use it."""


def nvidia_present() -> bool:
    """True when this machine (container) shows NVIDIA devices or an ``nvidia-smi``, whatever torch sees."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def cuda_diagnosis() -> str:
    """What torch says about CUDA, for error messages: its build, the visible count and the init error if any."""
    build = f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda else (
        f"torch {torch.__version__} is a CPU-only build")
    parts = [build, f"torch.cuda.is_available()={torch.cuda.is_available()}"]
    if torch.version.cuda and not torch.cuda.is_available():
        try:  # the driver's own words ("driver too old", "no CUDA-capable device") come from lazy init
            torch.cuda.init()
        except Exception as e:  # noqa: BLE001  (any init failure is what we want to show)
            parts.append(f"CUDA init error: {str(e).strip()[:300]}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        parts.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    parts.append("NVIDIA devices present on this machine" if nvidia_present() else "no NVIDIA device on this machine")
    return "; ".join(parts) + " (run `python -m mal doctor`)"


def warn_cpu_fallback(param: str) -> None:
    """A loud WARNING when ``auto`` lands on the CPU of a machine that has NVIDIA devices."""
    if nvidia_present():
        log.warning("WARNING: %s: auto -> CPU although this machine has NVIDIA devices: %s", param, cuda_diagnosis())


def resolve_device(requested: str | None = "auto", param: str = "device") -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> ``torch.device`` (``auto``: ``cuda`` when torch can use it, else CPU
    with a WARNING if NVIDIA devices are present). A CUDA request torch cannot honour raises :class:`DeviceError`
    naming ``param``."""
    req = str(requested or "auto").strip().lower()
    if req == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        warn_cpu_fallback(param)
        return torch.device("cpu")
    if req == "cpu":
        return torch.device("cpu")
    if req == "cuda" or req.startswith("cuda:"):
        index = req.partition(":")[2]
        if index and not index.isdigit():
            raise DeviceError(f"{param}: {requested!r} is not auto | cpu | cuda | cuda:N")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (index and int(index) >= n):
            raise DeviceError(f"{param}: {requested} asked for, but torch sees {n} GPU(s): {cuda_diagnosis()}")
        return torch.device(req)
    raise DeviceError(f"{param}: {requested!r} is not auto | cpu | cuda | cuda:N")


def resolve_num_gpus(requested: int | str | None = "auto", param: str = "num_gpus") -> int:
    """``auto`` (every GPU torch sees, 0 = CPU with a WARNING if NVIDIA devices are present) or N >= 0; N GPUs
    that are not there raise :class:`DeviceError`."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested is None or str(requested).strip().lower() == "auto":
        if n == 0:
            warn_cpu_fallback(param)
        return n
    try:
        want = int(requested)
    except ValueError:
        raise DeviceError(f"{param}: {requested!r} is not auto or a GPU count") from None
    if want < 0:
        raise DeviceError(f"{param}: {requested!r} is not auto or a GPU count >= 0")
    if want > n:
        raise DeviceError(f"{param}: {want} GPU(s) asked for, but torch sees {n}: {cuda_diagnosis()}")
    return want


def shard_device(shard_index: int, n_gpus: int, env: Mapping[str, str] | None = None) -> str:
    """The device of pseudo-labelling shard ``shard_index`` given ``n_gpus`` visible GPUs: ``cpu`` without GPUs;
    ``cuda:{LOCAL_RANK}`` when launched one process per GPU (torchrun sets LOCAL_RANK); else
    ``cuda:{shard_index % n_gpus}``. Indices are torch's, i.e. already inside CUDA_VISIBLE_DEVICES."""
    if n_gpus <= 0:
        return "cpu"
    local_rank = (env if env is not None else os.environ).get("LOCAL_RANK")
    if local_rank is not None and str(local_rank).isdigit():
        return f"cuda:{int(local_rank) % n_gpus}"
    return f"cuda:{int(shard_index) % n_gpus}"


def describe_device(device: torch.device | str, amp: bool = False, num_gpus: int | None = None) -> str:
    """``cuda:0 (NVIDIA H200, 1 of 8 GPUs), AMP on`` / ``cpu (8 threads), AMP off``."""
    dev = torch.device(device)
    amp_on = bool(amp) and dev.type == "cuda"
    if dev.type == "cuda":
        total = torch.cuda.device_count()
        name = torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())
        used = f"{num_gpus} of {total}" if num_gpus is not None else f"1 of {total}"
        where = f"{dev} ({name}, {used} GPUs)"
    else:
        where = f"cpu ({torch.get_num_threads()} threads)"
    return f"{where}, AMP {'on' if amp_on else 'off'}"


def log_device(stage: str, device: torch.device | str, amp: bool = False, num_gpus: int | None = None) -> str:
    """Print (and return) the device line every stage starts with."""
    line = f"{stage}: device {describe_device(device, amp, num_gpus)}"
    print(line, flush=True)
    return line
