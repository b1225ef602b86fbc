"""Learning-rate schedule, AdamW parameter groups and the EMA teacher."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, peak_lr: float, total_steps: int, warmup_steps: int, min_ratio: float = 0.2) -> float:
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then cosine down to ``min_ratio * peak_lr``
    at ``total_steps`` (``step`` counts from 0)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    warmup_steps = max(0, min(int(warmup_steps), total_steps))
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    floor = min_ratio * peak_lr
    return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices/kernels; none on biases, norms, tokens and pos-embeds (1-D
    params and names containing ``pos_embed``/``token``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or "pos_embed" in name or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, weight_decay: float, betas: tuple[float, float], lr: float = 0.0):
    """AdamW over :func:`param_groups`; the fused kernel on CPU and CUDA (3x faster than the per-parameter
    loop on CPU: 24 vs 77 ms a step for the demo labeler), the default implementation elsewhere."""
    device = next(model.parameters()).device
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(
        param_groups(model, weight_decay), lr=lr, betas=tuple(betas), fused=fused or None
    )


class EMATeacher:
    """``teacher <- m * teacher + (1 - m) * student`` after every optimiser step (buffers copied).

    The teacher never receives gradients (``requires_grad=False``) and stays in eval mode.
    """

    def __init__(self, teacher: nn.Module, momentum: float = 0.996):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.teacher = teacher
        self.momentum = float(momentum)
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        student = student.module if hasattr(student, "module") else student
        t_params = dict(self.teacher.named_parameters())
        names = [n for n, _ in student.named_parameters()]
        s_params = [p.detach() for _, p in student.named_parameters()]
        # t + (s - t) * (1 - m) == m * t + (1 - m) * s, one fused multi-tensor op
        torch._foreach_lerp_([t_params[n] for n in names], s_params, 1.0 - self.momentum)
        t_bufs = dict(self.teacher.named_buffers())
        for name, b in student.named_buffers():
            t_bufs[name].copy_(b)
