"""Data-parallel labeler training throughput on the CPU (gloo): 2 processes / 1 process (prints; not a test).

    .venv/bin/python benchmarks/bench_ddp.py [--params params.yaml --labeler vit_tiny] [--steps 6]

Both runs train the same total batch (``labeler.train.batch_size``; each of N processes takes batch / N) with
the real step (student fwd+bwd under DistributedDataParallel, teacher fwd, MIL + CRF, AdamW, EMA) on random
uint8 crops, one torch thread per process; samples/s from the median step time after ``--warmup`` steps.
Both settings are measured in one run, in alternating rounds, so the ratio compares like with like.
On a machine with at least 2 free cores the ideal ratio is 2; gradient all-reduce and the gloo rendezvous
are the overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mal.common.runtime  # noqa: E402, F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from mal.config import load_params  # noqa: E402
from mal.labeler.model import build_labeler  # noqa: E402
from mal.labeler.schedule import EMATeacher, build_optimizer  # noqa: E402
from mal.labeler.train import labeler_cfgs, train_step  # noqa: E402


def _worker(rank: int, world: int, port: int, model_cfg: dict, cfg: dict, steps: int, warmup: int,
            out: str) -> None:
    """One process: ``warmup + steps`` training steps on batch_size / world random crops; rank 0 writes the
    median step seconds to ``out``."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    student = build_labeler(model_cfg).train()
    teacher = build_labeler(model_cfg)
    teacher.load_state_dict(student.state_dict())
    ema = EMATeacher(teacher, cfg["ema_momentum"])
    opt = build_optimizer(student, cfg["weight_decay"], cfg["betas"], lr=1e-5)
    model = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    b, s, m = cfg["batch_size"] // world, model_cfg["crop_size"], model_cfg["mask_size"]
    gen = torch.Generator().manual_seed(rank)
    box = torch.zeros(b, 1, m, m)
    box[..., m // 8 : m - m // 8, m // 8 : m - m // 8] = 1
    batch = {"student": torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=gen),
             "teacher": torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8, generator=gen),
             "box_mask": box, "box_area": torch.full((b,), 400.0)}
    step_cfg = {**cfg, "mil_warmup_steps": 0, "crf_warmup_steps": 0}
    times = []
    for i in range(warmup + steps):
        if world > 1:
            dist.barrier()
        t = time.perf_counter()
        out_ = train_step(model, teacher, batch, 10**6, step_cfg, torch.device("cpu"), False)
        opt.zero_grad(set_to_none=True)
        out_["loss"].backward()
        opt.step()
        ema.update(student)
        if world > 1:
            dist.barrier()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if rank == 0:
        Path(out).write_text(json.dumps(statistics.median(times)))
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _seconds_per_step(world: int, model_cfg: dict, cfg: dict, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "t.json")
        mp.spawn(_worker, args=(world, _free_port(), model_cfg, cfg, steps, warmup, out), nprocs=world)
        return float(json.loads(Path(out).read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--labeler", default=None, help="key of labeler.models (default: the first)")
    ap.add_argument("--batch", type=int, default=None, help="total batch (default: labeler.train.batch_size)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating 1-process / 2-process rounds")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    name = args.labeler or next(iter(params.labeler.models))
    model_cfg, cfg = labeler_cfgs(params, name)
    if args.batch:
        cfg["batch_size"] = args.batch
    if cfg["batch_size"] % 2:
        raise SystemExit(f"total batch {cfg['batch_size']} must be even")
    per = {1: [], 2: []}
    for _ in range(args.rounds):
        for world in (1, 2):
            per[world].append(_seconds_per_step(world, model_cfg, cfg, args.steps, args.warmup))
    rate = {w: cfg["batch_size"] / statistics.median(v) for w, v in per.items()}
    print(f"labeler '{name}': {model_cfg['encoder']} crop {model_cfg['crop_size']} total batch "
          f"{cfg['batch_size']} CPU gloo, 1 thread per process, {os.cpu_count()} cores")
    for w in (1, 2):
        print(f"{w} process(es): {rate[w]:7.1f} samples/s  (step {1000 * statistics.median(per[w]):.0f} ms)")
    print(f"2-process / 1-process throughput = {rate[2] / rate[1]:.2f}   (ideal 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
