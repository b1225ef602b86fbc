"""`python -m mal doctor`: what this machine has (GPUs, CUDA build, detectron2 route) against what params ask for."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mal import doctor

ROOT = Path(__file__).resolve().parents[1]
N_GPU = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_no_gpu = pytest.mark.skipif(N_GPU > 0, reason="checks the warnings a machine without a GPU gets")


def _doctor(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mal", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def _d2_route() -> str:
    spec = importlib.util.find_spec("detectron2")
    if spec is None:
        return "not installed"
    where = Path(list(spec.submodule_search_locations)[0])
    return "compiled ops" if any(where.glob("_C*.so")) else "pure-Python route"


def test_reports_this_machine_and_the_default_profile_asks_for_no_gpu() -> None:
    res = _doctor("--strict")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert f"GPUs visible to torch: {N_GPU}" in out
    assert f"torch: {torch.__version__}" in out and f"detectron2: {_d2_route()}" in out
    assert "WARNING" not in out  # the CPU demo needs no GPU; amp is only a note
    assert "amp: on in the params" in out


@needs_no_gpu
def test_params_asking_for_cuda_warn_loudly_and_fail_strict(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("run:\n  pseudo_label:\n    device: cuda:1\n")
    res = _doctor("--params", str(p))
    assert res.returncode == 0
    warn = [x for x in res.stdout.splitlines() if x.startswith("WARNING:")]
    assert warn == ["WARNING: run.pseudo_label.device: cuda:1 needs 2 GPU(s), torch sees 0"], res.stdout
    assert _doctor("--params", str(p), "--strict").returncode == 1


@needs_no_gpu
def test_paper_profile_and_gpus_flag_are_gpu_requests(capsys: pytest.CaptureFixture) -> None:
    assert doctor.main(["--params", str(ROOT / "params.yaml"), "--profile", "paper", "--strict"]) == 1
    assert "WARNING: detector.opts.SOLVER.MAX_ITER: null" in capsys.readouterr().out
    assert doctor.main(["--params", str(ROOT / "params.yaml"), "--gpus", "1"]) == 0  # warns, not strict
    assert "WARNING: --gpus 1 needs 1 GPU(s), torch sees 0" in capsys.readouterr().out


def test_gpu_requests_from_params_and_container() -> None:
    assert doctor.gpu_requests({"run": {"pseudo_label": {"device": "auto"}},
                                "detector": {"opts": {"SOLVER": {"MAX_ITER": 250}}}}, 0, {}) == []
    reqs = doctor.gpu_requests({}, 0, {"NVIDIA_VISIBLE_DEVICES": "0,1"})
    assert [n for _, n in reqs] == [2]
    assert doctor.gpu_requests({}, 0, {"NVIDIA_VISIBLE_DEVICES": "void"}) == []


def test_driver_and_shm_checks() -> None:
    header = "| NVIDIA-SMI 580.65.06    Driver Version: 580.65.06    CUDA Version: 13.0     |"
    assert doctor.parse_nvidia_smi(header) == {"driver": "580.65.06", "cuda": "13.0"}
    assert "driver supports CUDA 12.4" in doctor.cuda_mismatch("13.0", "12.4")
    assert doctor.cuda_mismatch("13.0", "13.2") is None and doctor.cuda_mismatch("12.8", "13.0") is None
    assert doctor.cuda_mismatch("13.0", None) is None  # no driver: nothing to compare
    assert "bus errors" in doctor.shm_warning(8, 64 * 2**20)
    assert doctor.shm_warning(8, 16 * 2**30) is None and doctor.shm_warning(0, 64 * 2**20) is None


@needs_no_gpu
def test_params_asking_for_gpu_counts_warn(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("run:\n  train_labeler: {num_gpus: 4, device: cuda}\n  train_detector:\n    num_gpus: 2\n")
    res = _doctor("--params", str(p), "--strict")
    assert res.returncode == 1
    warn = [x for x in res.stdout.splitlines() if x.startswith("WARNING:")]
    for line in ("WARNING: run.train_labeler.num_gpus: 4 needs 4 GPU(s), torch sees 0",
                 "WARNING: run.train_labeler.device: cuda needs 1 GPU(s), torch sees 0",
                 "WARNING: run.train_detector.num_gpus: 2 needs 2 GPU(s), torch sees 0"):
        assert line in warn, res.stdout


def test_auto_on_a_machine_with_nvidia_devices_but_no_usable_gpu_warns() -> None:
    params = {"run": {"pseudo_label": {"device": "auto"}, "train_detector": {"num_gpus": 0}, "train_labeler": {}}}
    warns = doctor.auto_fallbacks(params, n_gpu=0, nvidia=True)
    assert [w.split(":")[0] for w in warns] == ["run.pseudo_label.device", "run.train_labeler.device",
                                                 "run.train_labeler.num_gpus"]  # 0 asks for CPU; absent = auto
    assert "falls back to CPU" in warns[0]
    assert doctor.auto_fallbacks(params, n_gpu=1, nvidia=True) == []
    assert doctor.auto_fallbacks(params, n_gpu=0, nvidia=False) == []
