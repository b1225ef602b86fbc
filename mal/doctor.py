"""`python -m mal doctor`: torch, CUDA, driver, GPUs and detectron2 here, against what the params ask for.

    python -m mal doctor                              # this machine vs params.yaml
    python -m mal doctor --profile paper --strict     # would the paper profile get its GPUs? exit 1 if not
    python -m mal doctor --gpus 1 --strict            # pre-flight in a pod that was promised a GPU

Prints one report. Every problem is a line starting with ``WARNING:``: a GPU the params (``*.device: cuda``,
``*.num_gpus: N``), ``--gpus`` or the container runtime (``NVIDIA_VISIBLE_DEVICES``) ask for that torch cannot
see, a param on ``auto`` that will fall back to CPU on a machine with NVIDIA devices, a CUDA wheel newer than the
driver, compiled detectron2 ops that do not load, DataLoader workers on a small ``/dev/shm``. ``--strict``
exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SHM_PER_WORKER = 512 * 2**20  # below ~0.5 GiB per DataLoader worker, large-image batches die with bus errors


def parse_nvidia_smi(text: str) -> dict[str, str]:
    """Driver version and the highest CUDA version it supports, from the header of plain ``nvidia-smi``."""
    out = {}
    for key, pat in (("driver", r"Driver Version:\s*([\d.]+)"), ("cuda", r"CUDA Version:\s*([\d.]+)")):
        m = re.search(pat, text)
        if m:
            out[key] = m.group(1)
    return out


def driver_info() -> dict[str, str]:
    """{"driver", "cuda"} from nvidia-smi, {} without one (no NVIDIA driver on this machine / in this container)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        res = subprocess.run([exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    return parse_nvidia_smi(res.stdout) if res.returncode == 0 else {"error": (res.stderr or res.stdout).strip()}


def cuda_mismatch(torch_cuda: str | None, driver_cuda: str | None) -> str | None:
    """Why a torch CUDA build cannot run on a driver (None if it can). CUDA's minor-version compatibility
    lets a 13.x runtime run on any 13.y driver, so only a newer major is fatal."""
    if not torch_cuda or not driver_cuda:
        return None
    if int(torch_cuda.split(".")[0]) > int(driver_cuda.split(".")[0]):
        return (f"torch is built for CUDA {torch_cuda} but the driver supports CUDA {driver_cuda} at most: "
                "CUDA will not initialise (update the driver, or install a torch build for the driver's CUDA)")
    return None


def detectron2_info() -> dict[str, str]:
    """Which detectron2 `import detectron2` finds: compiled ops (a `_C` extension) or the pure-Python route."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return {"route": "missing", "where": ""}
    where = list(spec.submodule_search_locations)[0]
    if not any(p.name.startswith("_C") and p.suffix in (".so", ".pyd") for p in Path(where).iterdir()):
        return {"route": "pure", "where": where}
    try:
        from detectron2 import _C  # noqa: F401  (an ABI mismatch with torch shows up only here)
    except ImportError as e:
        return {"route": "compiled", "where": where, "error": str(e)}
    return {"route": "compiled", "where": where}


def shm_warning(num_workers: int, shm_bytes: int | None) -> str | None:
    """DataLoader workers hand batches over through /dev/shm; Docker's and Kubernetes' default is 64 MB."""
    if num_workers <= 0 or shm_bytes is None or shm_bytes >= num_workers * SHM_PER_WORKER:
        return None
    return (f"{num_workers} DataLoader workers but /dev/shm is {shm_bytes / 2**20:.0f} MiB: workers die with bus "
            f"errors; give the container >= {num_workers * SHM_PER_WORKER / 2**30:.0f} GiB (docker --shm-size, the "
            "pool template's shm_size) or set num_workers: 0")


def _shm_bytes() -> int | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_frsize * st.f_blocks


def _get(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def gpu_requests(params: dict[str, Any], gpus: int, env: dict[str, str]) -> list[tuple[str, int]]:
    """(who asks, how many GPUs) for every GPU request: params that fail or crawl without one, --gpus and the
    container runtime. AMP flags are not requests: the code uses them only where CUDA is present."""
    reqs = []
    for key in ("run.pseudo_label.device", "run.train_labeler.device"):
        device = str(_get(params, key) or "auto")
        if device.startswith("cuda"):
            index = device.partition(":")[2]
            reqs.append((f"{key}: {device}", int(index) + 1 if index.isdigit() else 1))
    for key in ("run.train_labeler.num_gpus", "run.train_detector.num_gpus"):
        value = _get(params, key)
        # the labeler's count is of training processes: one process is fine on the CPU; several ask for GPUs
        least = 2 if "labeler" in key and str(_get(params, "run.train_labeler.device")) != "cuda" else 1
        if isinstance(value, int) and not isinstance(value, bool) and value >= least:
            reqs.append((f"{key}: {value}", value))
    solver = _get(params, "detector.opts.SOLVER") or {}
    if "MAX_ITER" in solver and solver["MAX_ITER"] is None:
        reqs.append(("detector.opts.SOLVER.MAX_ITER: null (detectron2's 3x schedule, 90k-270k iterations)", 1))
    if gpus > 0:
        reqs.append((f"--gpus {gpus}", gpus))
    visible = env.get("NVIDIA_VISIBLE_DEVICES", "")
    if visible and visible not in ("void", "none"):
        reqs.append((f"NVIDIA_VISIBLE_DEVICES={visible} (the container was given GPUs)",
                     1 if visible == "all" else len(visible.split(","))))
    return reqs


AUTO_KEYS = ("run.pseudo_label.device", "run.train_labeler.device", "run.train_labeler.num_gpus",
             "run.train_detector.num_gpus")


def auto_fallbacks(params: dict[str, Any], n_gpu: int, nvidia: bool) -> list[str]:
    """Params left on ``auto`` (or absent: auto is the default) that will run on CPU here although this
    machine has NVIDIA devices: the stages warn too, but a whole pipeline on CPU is hours lost."""
    if n_gpu > 0 or not nvidia:
        return []
    autos = [k for k in AUTO_KEYS if str(_get(params, k) if _get(params, k) is not None else "auto") == "auto"]
    return [f"{k}: auto falls back to CPU: this machine has NVIDIA devices but torch sees no GPU" for k in autos]


def load_params(path: str | Path, profile: str | None) -> dict[str, Any]:
    """The validated params (defaults filled), with ``profile`` merged over them in memory (as `python -m mal
    profile` would; no write), as a plain mapping for the dotted lookups below."""
    from mal.config import load_params as load

    return load(path, profile=profile).model_dump()


def report(params: dict[str, Any], gpus: int, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(report lines, warnings) for this machine against ``params``."""
    import torch

    from mal.common.devices import nvidia_present

    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    drv, d2 = driver_info(), detectron2_info()
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    lines = [
        f"python: {platform.python_version()} ({sys.executable})",
        f"torch: {torch.__version__} ({build})",
        f"NVIDIA driver: {drv.get('driver', 'none')} (supports CUDA {drv.get('cuda', '-')})"
        + (f"; nvidia-smi failed: {drv['error']}" if "error" in drv else ""),
        f"GPUs visible to torch: {n_gpu}",
        *(f"  cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(n_gpu)),
        {"compiled": f"detectron2: compiled ops (_C) at {d2['where']}",
         "pure": f"detectron2: pure-Python route, no compiled ops (scripts/install_detectron2.sh) at {d2['where']}",
         "missing": "detectron2: not installed (bash scripts/install_detectron2.sh .venv/bin/python)"}[d2["route"]],
    ]
    warnings = []
    if "error" in d2:
        warnings.append(f"detectron2's compiled ops do not load (rebuild against this torch): {d2['error']}")
    mismatch = cuda_mismatch(torch.version.cuda, drv.get("cuda"))
    if mismatch:
        warnings.append(mismatch)
    if drv.get("driver") and n_gpu == 0 and not mismatch:
        warnings.append("nvidia-smi sees a driver but torch sees no GPU"
                        + ("" if torch.version.cuda else ": this torch is a CPU-only build"))
    warnings += auto_fallbacks(params, n_gpu, nvidia_present())
    for who, need in gpu_requests(params, gpus, env):
        lines.append(f"requested: {need} GPU(s) by {who}")
        if need > n_gpu:
            warnings.append(f"{who} needs {need} GPU(s), torch sees {n_gpu}")
    if _get(params, "labeler.train.amp") or _get(params, "detector.amp"):
        lines.append(f"amp: on in the params; {'used' if n_gpu else 'ignored here (no CUDA), fp32'}")
    shm = _shm_bytes()
    lines.append(f"/dev/shm: {shm / 2**30:.1f} GiB" if shm is not None else "/dev/shm: absent")
    workers = max(int(_get(params, k) or 0) for k in
                  ("run.train_labeler.num_workers", "run.pseudo_label.num_workers", "pseudo_label.num_workers",
                   "detector.num_workers", "run.train_detector.num_workers"))
    warnings += filter(None, [shm_warning(workers, shm)])
    return lines, warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mal doctor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="params file to check (default: %(default)s)")
    ap.add_argument("--profile", default=None,
                    help="merge this profile (profiles/NAME.yaml or a path) over --params first (default: none)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs this machine must have (default: %(default)s)")
    ap.add_argument("--strict", action="store_true", help="exit 1 on any WARNING (default: exit 0)")
    args = ap.parse_args(argv)
    params = load_params(args.params, args.profile)
    lines, warnings = report(params, args.gpus, dict(os.environ))
    print(f"mal doctor: {args.params}" + (f" + profile {args.profile}" if args.profile else ""))
    print("\n".join(lines))
    for w in warnings:
        print(f"WARNING: {w}")
    if warnings:
        print(f"{len(warnings)} warning(s)" + ("; --strict: exit 1" if args.strict else ""))
    return 1 if warnings and args.strict else 0
