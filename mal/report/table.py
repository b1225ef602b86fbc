"""The paper table: labelers x detectors x seeds, with the GT-mask baseline per detector, intervals and verdicts.

Reads what ``evaluate`` wrote for every (masks, detector, seed) cell ``<masks>__<detector>__s<seed>`` -- the
flat metrics (``<detector_metrics>/<cell>.json``) and the val predictions (``<predictions>/<cell>.json``) --
plus ``mask_quality``'s (``<mask_quality>/<labeler>.json``) and ``prepare``'s metrics; every path is an
argument (:class:`TableInputs`, from dvc.yaml). Per cell: mean +- sd over seeds; a 95 % bootstrap interval
(:mod:`mal.report.bootstrap`, pycocotools re-accumulating its own per-image matches) for the seed-mean mask
AP, for retention (pseudo / GT mask AP of the same detector: paired, the same resample for both) and for the
mask-AP difference of every pair of labelers on the same detector, with a plain verdict. Every draw resamples
the val images and, with ``table.bootstrap.resample_seeds``, the seeds, shared by all cells. The title is
written from the data the table was computed on.

The result is rows (:class:`Table`, written once as ``paper_table.json`` / ``.csv``); every rendering of it
(Markdown, the review page, README) is :mod:`mal.report.render`'s, from those rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mal.config.table import TableParams
from mal.detection.coco_eval import load_gt
from mal.report.bootstrap import ImageEval, draw_resamples, interval, seed_mean_draws

GT = "gt"
GT_ROW = "GT (human)"  # the masks column of the GT-mask rows
COLUMNS = ["detector", "masks", "seeds", "mask_AP", "mask_AP_sd", "mask_AP_lo", "mask_AP_hi", "mask_AP50",
           "mask_AP75", "box_AP", "box_AP_sd", "retention_pct", "retention_lo", "retention_hi", "pseudo_mIoU"]
COMPARISON_COLUMNS = ["detector", "a", "b", "diff", "lo", "hi", "verdict"]


def detector_cell(masks: str, detector: str, seed: int) -> str:
    """One trained detector of the table, as dvc.yaml names its files: ``<masks>__<detector>__s<seed>``."""
    return f"{masks}__{detector}__s{int(seed)}"


@dataclass
class Table:
    """``rows`` (one per detector x masks), ``comparisons`` (labeler pairs per detector), ``meta`` (title, data).

    ``to_json()`` is ``reports/paper_table.json``; ``Table.from_json`` reads it back for the renderers.
    """

    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    meta: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": self.rows, "comparisons": self.comparisons}

    @classmethod
    def from_json(cls, data: Any, where: str | Path = "paper_table.json") -> Table:
        """The table from its JSON; a file of another shape is an error naming the missing key."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object with meta, rows, comparisons")
        missing = [k for k in ("meta", "rows", "comparisons") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key {missing[0]!r} (written by stages/paper_table.py)")
        for i, row in enumerate(data["rows"]):
            absent = [c for c in COLUMNS if c not in row]
            if absent:
                raise ValueError(f"{where}: rows[{i}]: missing field {absent[0]!r}")
        return cls(list(data["rows"]), list(data["comparisons"]), dict(data["meta"]))


@dataclass(frozen=True)
class TableInputs:
    """What the table reads; dvc.yaml passes each path (the stage's deps) to ``stages/paper_table.py``."""

    detector_metrics: Path  # <dir>/<cell>.json: evaluate's flat metrics
    predictions: Path  # <dir>/<cell>.json: evaluate's val predictions (COCO results)
    val_json: Path  # the val GT the predictions are scored against
    prepare_metrics: Path  # prepare's metrics JSON (the title's counts)
    mask_quality: Path  # <dir>/<labeler>.json: mask_quality's metrics (pseudo-mask mIoU)

    def cell(self, folder: Path, masks: str, detector: str, seed: int) -> Path:
        return Path(folder) / f"{detector_cell(masks, detector, seed)}.json"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file missing (did its stage run?)")
    return json.loads(path.read_text())


def data_title(prepared: dict[str, Any], table: TableParams) -> str:
    """The table's title, from ``prepare``'s metrics and the table's own dimensions."""
    tr, va = prepared["train"], prepared["val"]
    seeds = table.seeds
    return (f"{prepared.get('dataset', 'data')}: train {tr['images']} images / {tr['boxes']} boxes, val {va['images']} "
            f"images / {va['boxes']} boxes; labelers {', '.join(table.labelers)}; detectors "
            f"{', '.join(table.detectors)}; seeds {', '.join(map(str, seeds))} ({len(seeds)} per cell)")


def _seed_stats(metrics: list[dict[str, Any]], key: str) -> tuple[float, float | None]:
    """Mean and sample sd over seeds (sd ``None`` for one seed: JSON has no NaN)."""
    vals = np.array([float(m[key]) for m in metrics])
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None


def distinguishable(lo: float, hi: float) -> bool:
    """A difference whose interval excludes 0 (the verdict and every rendering use this one test)."""
    return lo > 0 or hi < 0


def _verdict(det: str, a: str, b: str, diff: float, lo: float, hi: float) -> str:
    if distinguishable(lo, hi):
        return f"{a} − {b} on {det}: {diff:+.1f} AP [{lo:+.1f}, {hi:+.1f}]"
    return f"{a} − {b} on {det}: not distinguishable ({diff:+.1f} AP [{lo:+.1f}, {hi:+.1f}])"


def _detector_rows(det: str, table: TableParams, inputs: TableInputs, gt: Any, draws: Any,
                   max_dets: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The GT row and one row per labeler of detector ``det``, and its labeler pairs."""
    level, seeds = table.bootstrap.level, table.seeds
    ap_draws: dict[str, np.ndarray] = {}
    means: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for masks in [GT, *table.labelers]:
        metrics = [_read_json(inputs.cell(inputs.detector_metrics, masks, det, s)) for s in seeds]
        evals = [ImageEval(gt, _read_json(inputs.cell(inputs.predictions, masks, det, s)), "mask", max_dets)
                 for s in seeds]
        ap_draws[masks] = seed_mean_draws(evals, draws)
        mean, sd = _seed_stats(metrics, "mask_AP")
        means[masks] = mean
        box, box_sd = _seed_stats(metrics, "box_AP")
        lo, hi = interval(ap_draws[masks], level)
        row = {"detector": det, "masks": GT_ROW if masks == GT else f"MAL {masks}", "seeds": len(seeds),
               "mask_AP": mean, "mask_AP_sd": sd, "mask_AP_lo": lo, "mask_AP_hi": hi,
               "mask_AP50": _seed_stats(metrics, "mask_AP50")[0], "mask_AP75": _seed_stats(metrics, "mask_AP75")[0],
               "box_AP": box, "box_AP_sd": box_sd, "retention_pct": 100.0, "retention_lo": 100.0,
               "retention_hi": 100.0, "pseudo_mIoU": None}  # GT / GT: 100 in every draw
        if masks != GT:
            gt_mean = means[GT]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = 100.0 * ap_draws[masks] / ap_draws[GT]
            row["retention_pct"] = 100.0 * mean / gt_mean if gt_mean > 0 else None
            row["retention_lo"], row["retention_hi"] = interval(ratio, level)
            row["pseudo_mIoU"] = _read_json(inputs.mask_quality / f"{masks}.json")["miou"]
        rows.append(row)
    comparisons = []
    for a, b in itertools.combinations(table.labelers, 2):
        lo, hi = interval(ap_draws[a] - ap_draws[b], level)
        diff = means[a] - means[b]
        comparisons.append({"detector": det, "a": a, "b": b, "diff": diff, "lo": lo, "hi": hi,
                            "verdict": _verdict(det, a, b, diff, lo, hi)})
    return rows, comparisons


def build_table(table: TableParams, inputs: TableInputs, max_dets: int = 100) -> tuple[Table, dict[str, float]]:
    """Every cell, interval and comparison of ``table`` (deterministic in ``table.bootstrap.seed``), and the
    stage's timings (seconds; not part of any output)."""
    t0 = time.perf_counter()
    boot = table.bootstrap
    gt = load_gt(str(inputs.val_json))
    draws = draw_resamples(len(gt.getImgIds()), len(table.seeds), boot.resamples, boot.seed, boot.resample_seeds)
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for det in table.detectors:
        det_rows, det_pairs = _detector_rows(det, table, inputs, gt, draws, int(max_dets))
        rows += det_rows
        comparisons += det_pairs
    half_widths = [(c["hi"] - c["lo"]) / 2 for c in comparisons]
    prepared = _read_json(Path(inputs.prepare_metrics))
    meta = {"title": data_title(prepared, table), "level": float(boot.level), "resamples": boot.resamples,
            "resample_seeds": boot.resample_seeds, "seeds": list(table.seeds),
            "val_images": len(gt.getImgIds()), "val_instances": len(gt.getAnnIds()),
            "detectable_diff_AP": float(np.median(half_widths)) if half_widths else None,
            "detectable_diff_AP_max": float(np.max(half_widths)) if half_widths else None}
    result = Table([_no_nan(r) for r in rows], [_no_nan(c) for c in comparisons], meta)
    return result, {"seconds": round(time.perf_counter() - t0, 2)}


def _no_nan(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite numbers (an interval with no finite draw) as ``None``: JSON and CSV readers get null / empty."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()}


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def retention_png(rows: list[dict[str, Any]]) -> bytes:
    """Retention per (detector, labeler) cell with its interval, and the 100 % line, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in rows if r["masks"] != GT_ROW]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(cells) + 2), 3.4))
    # None (a GT detector with 0 AP: no retention) -> NaN: no bar, no error bar
    y = np.array([r["retention_pct"] for r in cells], dtype=float)
    err = np.abs(np.array([[r["retention_lo"], r["retention_hi"]] for r in cells], dtype=float).T - y)
    ax.bar([f"{r['detector']}\n{r['masks']}" for r in cells], y, yerr=err, capsize=4, color="#4c72b0")
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_ylabel("retention % (pseudo / GT mask AP)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def summary_metrics(result: Table) -> dict[str, float]:
    """Flat numbers for ``dvc metrics diff``: per cell mask AP (mean, sd) and retention with its interval; per
    labeler pair the difference and its interval."""
    out: dict[str, float] = {}
    for r in result.rows:
        key = f"{r['detector']}.{r['masks'].split()[-1]}"
        for k in ("mask_AP", "mask_AP_sd", "retention_pct", "retention_lo", "retention_hi"):
            if r[k] is not None and np.isfinite(r[k]):
                out[f"{key}.{k}"] = round(float(r[k]), 4)
    for c in result.comparisons:
        for k in ("diff", "lo", "hi"):
            out[f"{c['detector']}.{c['a']}-{c['b']}.{k}"] = round(float(c[k]), 4)
    if result.meta["detectable_diff_AP"] is not None:
        out["detectable_diff_AP"] = round(result.meta["detectable_diff_AP"], 4)
    return out


__all__ = ["COLUMNS", "COMPARISON_COLUMNS", "GT_ROW", "Table", "TableInputs", "build_table",
           "distinguishable", "retention_png", "summary_metrics", "to_csv"]
