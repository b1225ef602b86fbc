"""A confidence per pseudo-mask, and how well a confidence ranks masks by their true IoU.

The score is read off the crop-level probability map the labeler already produced for the box (``M x M``,
e.g. 32 x 32 for 128 px crops): no second forward, a few vectorised ops on ``M^2`` floats per box, far
below the 5 % budget (flip or student-teacher agreement would cost a second forward, ~100 %).

Candidates (all in ``[0, 1]``, higher = more trustworthy) are compared by
``benchmarks/confidence_candidates.py`` on the demo's GT splits; :data:`CHOSEN` names the one written into
each annotation as ``score`` (docs/pseudo_labels.md, "Confidence"): the mean probability over the predicted
foreground in the box (the mask-aware score of BoxTeacher / Mask Scoring R-CNN without a learned head),
best by Spearman on nuclei val. A labeler mask therefore scores above the threshold (or 0 when no crop
pixel clears it although the finer paste did); box fallbacks score 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

UNCERTAIN = (0.2, 0.8)  # probabilities in this open interval count as undecided


def _inside(prob: np.ndarray, inbox: np.ndarray) -> np.ndarray:
    """The probabilities of the crop pixels inside the box: ``M x M`` + ``M x M`` {0, 1} -> ``N``."""
    return np.asarray(prob, dtype=np.float32)[np.asarray(inbox) > 0]


def decidedness(p: np.ndarray, threshold: float) -> float:
    """Mean ``|2p - 1|`` over the box: 1 when every pixel is surely in or out, 0 when all sit at 0.5."""
    return float(np.abs(2.0 * p - 1.0).mean()) if p.size else 0.0


def foreground_mean(p: np.ndarray, threshold: float) -> float:
    """Mean probability over the predicted foreground (the "mask score"); 0 for an empty mask."""
    fg = p[p > threshold]
    return float(fg.mean()) if fg.size else 0.0


def certain_share(p: np.ndarray, threshold: float) -> float:
    """Share of box pixels outside the undecided band :data:`UNCERTAIN`."""
    lo, hi = UNCERTAIN
    return float(1.0 - ((p > lo) & (p < hi)).mean()) if p.size else 0.0


def band_to_mask(p: np.ndarray, threshold: float) -> float:
    """1 - (undecided pixels / foreground pixels), clipped at 0: a boundary band that is thick relative
    to the object (small or blurry masks) means an uncertain outline."""
    lo, hi = UNCERTAIN
    n_fg = int((p > threshold).sum())
    if n_fg == 0:
        return 0.0
    return float(max(0.0, 1.0 - ((p > lo) & (p < hi)).sum() / n_fg))


def foreground_x_background(p: np.ndarray, threshold: float) -> float:
    """Mean ``p`` over the foreground times mean ``1 - p`` over the background (1 when no background)."""
    bg = p[p <= threshold]
    return foreground_mean(p, threshold) * (float((1.0 - bg).mean()) if bg.size else 1.0)


def foreground_x_decided(p: np.ndarray, threshold: float) -> float:
    """:func:`foreground_mean` times :func:`decidedness`."""
    return foreground_mean(p, threshold) * decidedness(p, threshold)


CANDIDATES: dict[str, Callable[[np.ndarray, float], float]] = {
    "decidedness": decidedness,
    "foreground_mean": foreground_mean,
    "certain_share": certain_share,
    "band_to_mask": band_to_mask,
    "foreground_x_background": foreground_x_background,
    "foreground_x_decided": foreground_x_decided,
}
CHOSEN = "foreground_mean"  # best Spearman on nuclei val (docs/pseudo_labels.md, "Confidence")


def candidate_scores(prob: np.ndarray, inbox: np.ndarray, threshold: float) -> dict[str, float]:
    """Every candidate for one box: ``prob`` ``M x M`` crop probabilities, ``inbox`` ``M x M`` {0, 1}."""
    p = _inside(prob, inbox)
    return {name: fn(p, threshold) for name, fn in CANDIDATES.items()}


def mask_confidence(prob: np.ndarray, inbox: np.ndarray, threshold: float) -> float:
    """The confidence written as ``score``: :data:`CHOSEN` on the in-box pixels, rounded to 4 decimals.

    ``prob``: ``M x M`` crop-level probabilities; ``inbox``: ``M x M`` {0, 1} box mask on the same grid.
    """
    return round(min(max(CANDIDATES[CHOSEN](_inside(prob, inbox), threshold), 0.0), 1.0), 4)


def ranking_metrics(
    scores: Sequence[float], ious: Sequence[float], bad_iou: float = 0.7, lowest_fraction: float = 0.2
) -> dict[str, Any]:
    """How well ``scores`` rank masks by their true ``ious`` (same order, one per mask).

    ``spearman``: rank correlation (None when either side is constant or fewer than 2 masks);
    ``bad_share``: share of masks with IoU < ``bad_iou`` (the chance rate of finding one);
    ``bad_share_in_lowest``: that share among the ``ceil(lowest_fraction * num)`` lowest-scored masks (ties
    in input order); ``ratio_vs_chance``: the two divided (None without bad masks).
    """
    from scipy.stats import spearmanr

    s, iou = np.asarray(scores, dtype=np.float64), np.asarray(ious, dtype=np.float64)
    if s.shape != iou.shape or s.ndim != 1:
        raise ValueError(f"ranking_metrics: scores {s.shape} and ious {iou.shape} must be equal-length 1-D")
    n = len(s)
    bad = iou < bad_iou
    rho = None
    if n >= 2 and np.ptp(s) > 0 and np.ptp(iou) > 0:
        rho = float(spearmanr(s, iou).statistic)
    k = math.ceil(lowest_fraction * n)
    lowest = np.argsort(s, kind="stable")[:k]
    bad_share = float(bad.mean()) if n else None
    in_lowest = float(bad[lowest].mean()) if k else None
    ratio = in_lowest / bad_share if bad_share and in_lowest is not None else None
    return {
        "spearman": rho,
        "bad_iou": bad_iou,
        "bad_share": bad_share,
        "lowest_fraction": lowest_fraction,
        "bad_share_in_lowest": in_lowest,
        "ratio_vs_chance": ratio,
        "num": n,
    }
