"""Data-parallel labeler training on real gloo process groups (CPU): device choice, process count, mid-epoch
resume, sharded validation, ConvNeXt under DDP, AMP-scaler resume, and the stage starting its own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from mal.common.devices import DeviceError
from mal.config import load_params
from mal.labeler.data import BoxCropDataset, EpochSampler
from mal.labeler.distributed import resolve_device, resolve_num_processes
from mal.labeler.evaluate import evaluate_labeler
from mal.labeler.model import build_labeler
from mal.labeler.run_state import run_fingerprint, scaler_state_to_load
from mal.labeler.train import labeler_cfgs, train_labeler
from tests.conftest import free_port, tiny_shapes_records

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"encoder": "vit_tiny_patch16_224", "crop_size": 32, "decoder_dim": 16}
# device: cpu pins the bit-exact tests to the CPU (CUDA's bilinear-interpolation backward is not deterministic)
TRAIN = {"epochs": 2, "batch_size": 2, "lr_per_sample": 1e-4, "mil_warmup_steps": 2, "crf_warmup_steps": 4,
         "crf_iterations": 5, "num_threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_shapes_records(tmp_path_factory.mktemp("shapes_ddp"), num_val=2)


def _worker(rank: int, world: int, port: int, fn, args) -> None:
    """A torchrun-like process: the env:// variables dist_setup reads, then ``fn(rank, *args)``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(fn, *args, world: int = 2) -> None:
    mp.spawn(_worker, args=(world, free_port(), fn, args), nprocs=world, join=True)


# ---------------------------------------------------------------- device and process count
def test_more_processes_than_gpus_run_on_the_cpu():
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for rank in range(gpus + 1):  # e.g. 2 processes on a 1-GPU box: never cuda:1
        assert resolve_device("auto", gpus + 1, rank) == torch.device("cpu")
    assert resolve_device("cpu", 1, 0) == torch.device("cpu")
    with pytest.raises(DeviceError, match="cuda"):
        resolve_device("cuda", gpus + 1, 0)
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("gpu", 1, 0)


def test_number_of_processes():
    assert resolve_num_processes("auto", "cpu") == 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_num_processes("auto") == max(1, gpus)
    assert resolve_num_processes(3, "cpu") == 3
    for bad in (0, "all", 1.5, True):
        with pytest.raises(ValueError, match="num_gpus"):
            resolve_num_processes(bad)


# ---------------------------------------------------------------- resume
def test_sampler_resumes_at_a_position_and_yields_epoch_keys(data):
    _, train, _ = data
    ds = BoxCropDataset(train, 32, 8, train=True)
    full = EpochSampler(ds, num_replicas=2, rank=1, seed=0)
    full.set_position(3, 0)
    tail = EpochSampler(ds, num_replicas=2, rank=1, seed=0)
    tail.set_position(3, 1)
    assert list(tail) == list(full)[1:] and len(tail) == len(full) - 1
    assert all(epoch == 3 for epoch, _ in full)
    ds.set_epoch(0)  # a worker that never saw set_epoch(3) still makes epoch 3's sample from the key
    key = list(full)[0]
    ds3 = BoxCropDataset(train, 32, 8, train=True)
    ds3.set_epoch(3)
    assert torch.equal(ds[key]["student"], ds3[key[1]]["student"])


def test_amp_scaler_state_and_fingerprint():
    enabled = torch.amp.GradScaler("cpu", enabled=True)
    disabled_state = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert disabled_state == {}
    with pytest.raises(RuntimeError):  # the crash of a CPU-written state resumed with AMP on
        enabled.load_state_dict(disabled_state)
    assert scaler_state_to_load(disabled_state, enabled=True) is None
    assert scaler_state_to_load(enabled.state_dict(), enabled=False) is None
    assert scaler_state_to_load(enabled.state_dict(), enabled=True) == enabled.state_dict()
    fp = {(d, a): run_fingerprint({}, {"amp": True}, 0, 1, [], d, a) for d in ("cpu", "cuda") for a in (0, 1)}
    assert len(set(fp.values())) == 4
    # keys that do not change the weights keep a run resumable
    assert run_fingerprint({}, {"save_state_every_steps": 9, "num_gpus": "auto"}, 0, 1, [], "cpu", False) == \
        run_fingerprint({}, {"save_state_every_steps": 0, "num_gpus": 1}, 0, 1, [], "cpu", False)


@pytest.mark.slow
def test_mid_epoch_resume_matches_uninterrupted_run(data, tmp_path):
    """Killed after step 3 of 4 (mid epoch 2), resumed from the step-3 state (written with AMP off, resumed
    with AMP on: a no-op on the CPU that must not crash) to the same weights and losses."""
    _, train, val = data
    cfg = {**TRAIN, "save_state_every_steps": 1}
    full = train_labeler(MODEL, {**cfg, "amp": True}, train, val, tmp_path / "a.pt", tmp_path / "a_state.pt",
                         progress=False)
    assert train_labeler(MODEL, {**cfg, "amp": False}, train, val, tmp_path / "b.pt", tmp_path / "b_state.pt",
                         progress=False, stop_after_step=3) == {}
    state = torch.load(tmp_path / "b_state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["epoch_step"]) == (3, 1, 1)  # mid-epoch, not the epoch's start
    resumed = train_labeler(MODEL, {**cfg, "amp": True}, train, val, tmp_path / "b.pt", tmp_path / "b_state.pt",
                            progress=False)
    a, b = (torch.load(tmp_path / f"{x}.pt", weights_only=True) for x in "ab")
    for which in ("student", "teacher"):
        assert all(torch.equal(a[which][k], b[which][k]) for k in a[which])
    full.pop("timings"), resumed.pop("timings")
    assert full == resumed and full["steps"] == 4


@pytest.mark.slow
def test_persistent_loader_workers_make_each_epochs_samples(data):
    """One loader for the whole run, its worker kept across epochs: the sampler's keys carry the epoch into a
    worker that never sees set_epoch, so epoch 1's batch is epoch 1's crops, not epoch 0's again."""
    _, train, _ = data
    ds = BoxCropDataset(train, 32, 8, train=True)
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(train), sampler=sampler, num_workers=1,
                                         persistent_workers=True)
    for epoch in (0, 1):
        sampler.set_position(epoch)
        batch = next(iter(loader))
        ref = BoxCropDataset(train, 32, 8, train=True)
        ref.set_epoch(epoch)
        assert torch.equal(batch["student"], torch.stack([ref[i]["student"] for i in batch["index"].tolist()]))


# ---------------------------------------------------------------- validation
def _validate(rank: int, val: list, out: Path) -> None:
    torch.manual_seed(0)
    model = build_labeler(MODEL)
    res = evaluate_labeler(model, BoxCropDataset(val, 32, 8, train=False), 0.5, batch_size=1, distributed=True)
    (out / f"rank{rank}.json").write_text(json.dumps(res))


@pytest.mark.slow
def test_two_process_validation_equals_one_process(data, tmp_path):
    val = data[2][:3]  # an uneven split over 2 processes
    torch.manual_seed(0)
    single = evaluate_labeler(build_labeler(MODEL), BoxCropDataset(val, 32, 8, train=False), 0.5, batch_size=1)
    _spawn(_validate, val, tmp_path)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == single
    assert single["val_boxes"] == len(val) and 0 < single["val_miou"] < 1


# ---------------------------------------------------------------- ConvNeXt under DDP
def _train_convnext(rank: int, train: list, out: Path) -> None:
    model = {"encoder": "convnext_atto", "crop_size": 64, "decoder_dim": 16, "pretrained": False}
    cfg = {**TRAIN, "epochs": 1, "device": "cpu"}
    metrics = train_labeler(model, cfg, train, None, out / "c.pt", out / "s.pt", progress=False)
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps({k: metrics[k] for k in ("steps", "processes")}))


@pytest.mark.slow
def test_convnext_trains_under_ddp_without_unused_parameters(data, tmp_path):
    _, train, _ = data
    _spawn(_train_convnext, train, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"steps": 2, "processes": 2}


def _train_demo_labeler(rank: int, name: str, train: list, out: Path) -> None:
    model, cfg = labeler_cfgs(load_params(ROOT / "params.yaml"), name)
    # Random init: which parameters get a gradient is the architecture's (features_only stages, heads), not the
    # weights' (the files are the weights stage's outs, absent from a fresh clone)
    model = {**model, "pretrained": False}
    cfg = {**cfg, "epochs": 1, "batch_size": 2, "num_threads": 1, "device": "cpu",
           "save_state_every_steps": 0, "num_gpus": 1}
    metrics = train_labeler(model, cfg, train, None, out / "c.pt", out / "s.pt", progress=False)
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps({k: metrics[k] for k in ("steps", "processes")}))


@pytest.mark.slow
@pytest.mark.parametrize("name", load_params(ROOT / "params.yaml").table.labelers)
def test_every_demo_labeler_trains_under_two_process_ddp(name, data, tmp_path):
    """2 gloo processes, 2 steps (one per process batch of 1 x 2 ranks), checkpoint written: DDP's reducer
    fails on the second step if any parameter got no gradient (EfficientNet-Lite0's unused stride-32 stages did)."""
    _, train, _ = data
    _spawn(_train_demo_labeler, name, train, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"steps": 2, "processes": 2}
    assert (tmp_path / "c.pt").is_file()


# ---------------------------------------------------------------- the stage starts its processes
@pytest.mark.slow
def test_stage_fails_when_its_processes_fail(data, tmp_path):
    out, _, _ = data
    run_knobs = {k: TRAIN[k] for k in ("num_threads", "device")}
    params = {
        "seed": 0,
        "data": {"dataset": "shapes", "min_train_box_area": 16, "min_train_box_side": 2},
        "labeler": {
            "train": {**{k: v for k, v in TRAIN.items() if k not in run_knobs}, "batch_size": 3},  # 3 % 2 != 0
            "models": {"tiny": MODEL},
        },
        "run": {"train_labeler": {**run_knobs, "num_gpus": 2}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train_labeler.py"), "--labeler", "tiny",
                           "--train-boxes", str(out / "train_boxes.json"), "--val-gt", str(out / "val_gt.json"),
                           "--checkpoint", "c/checkpoint.pt", "--metrics", "m.json", "--plots", "plots",
                           "--work-dir", "work"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "not divisible by 2 processes" in proc.stderr
    for rank in (0, 1):  # each process's own log holds its traceback
        assert "not divisible" in (tmp_path / "work" / "logs" / f"rank{rank}.log").read_text()
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_dvc_repro_trains_the_labeler_on_two_processes(tmp_path):
    """`dvc repro train_labeler@vit_tiny` (real dvc, real git repo, tiny profile) with num_gpus: 2 on the CPU
    starts two gloo processes from the stage itself; each writes its log, rank 0 a working checkpoint."""
    from mal.common.profiles import apply_profile
    from mal.labeler.model import input_norm, load_labeler, normalize
    from tests.conftest import REPO, command_runner, copy_repo, tool_env

    repo = copy_repo(tmp_path / "repo")
    run = command_runner(repo, tool_env(PYTHONPATH=str(repo), OMP_NUM_THREADS="1"))
    apply_profile(REPO / "profiles" / "tiny.yaml", repo / "params.yaml")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["run"]["train_labeler"].update(num_gpus=2, device="cpu", num_threads=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run("dvc", "repro", "train_labeler@vit_tiny")
    assert "Running stage 'train_labeler@vit_tiny'" in out

    logs = repo / ".work" / "train_labeler" / "vit_tiny" / "logs"
    for rank in (0, 1):
        text = (logs / f"rank{rank}.log").read_text()
        assert f"rank {rank} of 2 on cpu (gloo)" in text, text[-2000:]
    assert "epoch {" in (logs / "rank0.log").read_text() and "epoch {" not in (logs / "rank1.log").read_text()
    metrics = json.loads((repo / "metrics" / "train_labeler" / "vit_tiny.json").read_text())
    assert metrics["processes"] == 2 and 0 <= metrics["val_miou"] <= 1
    model, cfg = load_labeler(repo / "models" / "labeler" / "vit_tiny" / "checkpoint.pt")
    crops = torch.randint(0, 256, (2, cfg["crop_size"], cfg["crop_size"], 3), dtype=torch.uint8)

    with torch.no_grad():
        logits = model(normalize(crops, *input_norm(cfg)), torch.tensor([300.0, 5000.0]))
    assert logits.shape == (2, 1, cfg["mask_size"], cfg["mask_size"]) and torch.isfinite(logits).all()
    assert "Data and pipelines are up to date" in run("dvc", "status", "train_labeler@vit_tiny")
    params["run"]["train_labeler"]["num_gpus"] = 1  # where it runs is not a param: nothing to re-run
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Data and pipelines are up to date" in run("dvc", "status", "train_labeler@vit_tiny")
