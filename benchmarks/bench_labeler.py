"""Labeler training-step overhead benchmark (prints ratios; not a test).

    .venv/bin/python benchmarks/bench_labeler.py [--params params.yaml --labeler vit_tiny] [--iters 20]

From one run it prints:
  * step / encoders = full training step (data already in memory: student fwd+bwd through encoder and
    decoder, teacher fwd, MIL + CRF losses, AdamW step, EMA update) / (bare encoder fwd+bwd for the student
    + bare encoder fwd for the teacher)             target <= 1.5
  * CRF share = CRF refinement (100 iterations, no grad) / full training step      target <= 15 %
Timings are medians over ``--iters`` rounds (encoders, step and CRF timed in turn) after ``--warmup`` ones,
on random inputs whose box sizes match the configured demo (``--box-area``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mal.common.runtime  # noqa: E402, F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mal.config import load_params  # noqa: E402
from mal.labeler.losses import crf_refine  # noqa: E402
from mal.labeler.model import build_labeler  # noqa: E402
from mal.labeler.schedule import EMATeacher, build_optimizer  # noqa: E402
from mal.labeler.train import labeler_cfgs, train_step  # noqa: E402


def _median_times(fns: dict, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds of each function, timed round-robin (one call of each per round), so slow drift in
    the machine's load affects all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for key, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--labeler", default=None, help="key of labeler.models (default: the first)")
    ap.add_argument("--batch", type=int, default=None, help="per-process batch (default: labeler.train)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--box-area", type=float, default=400.0, help="box area in image px (size bucket)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(args.params)
    name = args.labeler or next(iter(params.labeler.models))
    model_cfg, cfg = labeler_cfgs(params, name)
    batch = args.batch or int(cfg["batch_size"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    s, m = model_cfg["crop_size"], model_cfg["mask_size"]

    torch.manual_seed(0)
    student = build_labeler(model_cfg).to(device).train()
    teacher = copy.deepcopy(student)
    ema = EMATeacher(teacher, cfg["ema_momentum"])
    opt = build_optimizer(student, cfg["weight_decay"], cfg["betas"], lr=1e-5)
    box = torch.zeros(batch, 1, m, m, device=device)
    box[..., m // 8 : m - m // 8, m // 8 : m - m // 8] = 1
    data = {
        "student": torch.randn(batch, 3, s, s),
        "teacher": torch.randn(batch, 3, s, s),
        "box_mask": box,
        "box_area": torch.full((batch,), args.box_area),
    }
    data = {k: v.to(device) for k, v in data.items()}
    step_cfg = {**cfg, "mil_warmup_steps": 0, "crf_warmup_steps": 0}

    def encoders() -> None:
        with torch.autocast(device.type, enabled=use_amp):
            student.encoder(data["student"]).float().mean().backward()
            with torch.no_grad():
                teacher.encoder(data["teacher"])

    def full_step() -> None:
        out = train_step(student, teacher, data, 10**6, step_cfg, device, use_amp)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        ema.update(student)

    with torch.no_grad():
        prob = torch.rand(batch, 1, m, m, device=device)
        image = F.interpolate(data["student"], size=(m, m), mode="bilinear", antialias=True)

    def crf() -> None:
        crf_refine(prob, image, box, cfg["crf_iterations"], cfg["crf_sigma"], tuple(cfg["crf_clamp"]))

    med = _median_times({"enc": encoders, "step": full_step, "crf": crf}, args.iters, args.warmup)
    t_enc, t_step, t_crf = med["enc"], med["step"], med["crf"]
    print(
        f"labeler '{name}': {model_cfg['encoder']} crop {s} mask {m} batch {batch} device {device} "
        f"threads {torch.get_num_threads()} amp {use_amp} box_area {args.box_area:g}"
    )
    print(f"bare encoders (student fwd+bwd + teacher fwd): {t_enc * 1000:8.1f} ms")
    print(f"full training step:                            {t_step * 1000:8.1f} ms")
    print(f"CRF refinement ({cfg['crf_iterations']} it):                      {t_crf * 1000:8.1f} ms")
    print(f"step / encoders = {t_step / t_enc:.2f}   (target <= 1.5)")
    print(f"CRF share of a step = {100 * t_crf / t_step:.1f} %   (target <= 15 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
