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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mal.common.paths import detector_cell
from mal.config.table import TableParams
from mal.detection.coco_eval import load_gt
from mal.report.bootstrap import ImageEval, draw_resamples, interval, seed_mean_draws

GT = "gt"
GT_ROW = "GT (human)"  # the masks column of the GT-mask rows
COLUMNS = ["detector", "masks", "seeds", "mask_AP", "mask_AP_sd", "mask_AP_lo", "mask_AP_hi", "mask_AP50",
           "mask_AP75", "box_AP", "box_AP_sd", "retention_pct", "retention_lo", "retention_hi", "pseudo_mIoU"]
COMPARISON_COLUMNS = ["detector", "a", "b", "diff", "lo", "hi", "verdict"]
TABLE_KEYS = ("labelers", "detectors", "seeds", "metrics_dir", "out_dir", "bootstrap")
BOOTSTRAP_KEYS = ("resamples", "seed", "level", "resample_seeds")


@dataclass
class Table:
    """``rows`` (one per detector x masks), ``comparisons`` (labeler pairs per detector), ``meta`` (title, data)."""

    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    meta: dict[str, Any]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file missing (did its stage run?)")
    return json.loads(path.read_text())


def check_table_params(table: dict[str, Any]) -> dict[str, Any]:
    """``table`` keys checked (unknown keys, seeds, bootstrap); returns the bootstrap settings."""
    check_keys(table, TABLE_KEYS, "params: table")
    check_table_seeds(table)
    boot = dict(table.get("bootstrap") or {})
    check_keys(boot, BOOTSTRAP_KEYS, "params: table.bootstrap")
    missing = [k for k in BOOTSTRAP_KEYS if k not in boot]
    if missing:
        raise ValueError(f"params: table.bootstrap: missing keys {missing}")
    if int(boot["resamples"]) < 100 or not 0.5 <= float(boot["level"]) < 1:
        raise ValueError(f"params: table.bootstrap: resamples must be >= 100 and level in [0.5, 1), got {boot}")
    return boot


def data_title(prepared: dict[str, Any], table: dict[str, Any]) -> str:
    """The table's title, from ``prepare``'s metrics and the table's own dimensions."""
    tr, va = prepared["train"], prepared["val"]
    seeds = table["seeds"]
    return (f"{prepared.get('dataset', 'data')}: train {tr['images']} images / {tr['boxes']} boxes, val {va['images']} "
            f"images / {va['boxes']} boxes; labelers {', '.join(table['labelers'])}; detectors "
            f"{', '.join(table['detectors'])}; seeds {', '.join(map(str, seeds))} ({len(seeds)} per cell)")


def _seed_stats(metrics: list[dict[str, Any]], key: str) -> tuple[float, float | None]:
    """Mean and sample sd over seeds (sd ``None`` for one seed: JSON has no NaN)."""
    vals = np.array([float(m[key]) for m in metrics])
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None


def _distinguishable(lo: float, hi: float) -> bool:
    """A difference whose interval excludes 0."""
    return lo > 0 or hi < 0


def _verdict(det: str, a: str, b: str, diff: float, lo: float, hi: float) -> str:
    if _distinguishable(lo, hi):
        return f"{a} − {b} on {det}: {diff:+.1f} AP [{lo:+.1f}, {hi:+.1f}]"
    return f"{a} − {b} on {det}: not distinguishable ({diff:+.1f} AP [{lo:+.1f}, {hi:+.1f}])"


def build_table(params: dict[str, Any]) -> Table:
    """Every cell, interval and comparison of ``params['table']`` (deterministic in ``table.bootstrap.seed``)."""
    table = params["table"]
    boot = check_table_params(table)
    labelers, detectors, seeds = table["labelers"], table["detectors"], table["seeds"]
    level = float(boot["level"])
    gt = load_gt(params["evaluate"]["val_json"])
    max_dets = int(params["evaluate"].get("max_dets", 100))
    draws = draw_resamples(len(gt.getImgIds()), len(seeds), int(boot["resamples"]), int(boot["seed"]),
                           bool(boot["resample_seeds"]))
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for det in detectors:
        ap_draws: dict[str, np.ndarray] = {}
        means: dict[str, float] = {}
        for masks in [GT, *labelers]:
            metrics = [_read_json(detector_metrics(params, masks, det, s)) for s in seeds]
            evals = [ImageEval(gt, _read_json(detector_predictions(params, masks, det, s)), "mask", max_dets)
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
                quality = _read_json(templated(params["mask_quality"], ("metrics",), masks)["metrics"])
                row["pseudo_mIoU"] = quality["miou"]
            rows.append(row)
        for a, b in itertools.combinations(labelers, 2):
            diff_draws = ap_draws[a] - ap_draws[b]
            lo, hi = interval(diff_draws, level)
            diff = means[a] - means[b]
            comparisons.append({"detector": det, "a": a, "b": b, "diff": diff, "lo": lo, "hi": hi,
                                "verdict": _verdict(det, a, b, diff, lo, hi)})
    half_widths = [(c["hi"] - c["lo"]) / 2 for c in comparisons]
    prepared = _read_json(Path(params["data"]["metrics"]))
    meta = {"title": data_title(prepared, table), "level": level, "resamples": int(boot["resamples"]),
            "resample_seeds": bool(boot["resample_seeds"]), "seeds": seeds,
            "val_images": len(gt.getImgIds()), "val_instances": len(gt.getAnnIds()),
            "detectable_diff_AP": float(np.median(half_widths)) if half_widths else None,
            "detectable_diff_AP_max": float(np.max(half_widths)) if half_widths else None}
    return Table([_no_nan(r) for r in rows], [_no_nan(c) for c in comparisons], meta)


def _no_nan(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite numbers (an interval with no finite draw) as ``None``: JSON and CSV readers get null / empty."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()}


def _fmt(value: Any, digits: int = 1) -> str:
    """A number of the table: AP and % with 1 decimal, mIoU with 3; "–" where there is none."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(result: Table) -> str:
    """Title, the table (mean ± sd over seeds, [95 % interval]), the verdicts, how to read it."""
    m = result.meta
    pct = f"{100 * m['level']:.0f} %"
    header = ["Detector", "Masks", "seeds", f"mask AP (± sd) [{pct}]", "AP50", "AP75", "box AP (± sd)",
              f"retention % [{pct}]", "pseudo-mask mIoU"]
    lines = [f"## {m['title']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result.rows:
        ret = _fmt(r["retention_pct"]) if r["masks"] == GT_ROW else (
            f"{_fmt(r['retention_pct'])} [{_fmt(r['retention_lo'])}, {_fmt(r['retention_hi'])}]")
        lines.append("| " + " | ".join([
            r["detector"], r["masks"], str(r["seeds"]),
            f"{_fmt(r['mask_AP'])} ± {_fmt(r['mask_AP_sd'])} [{_fmt(r['mask_AP_lo'])}, {_fmt(r['mask_AP_hi'])}]",
            _fmt(r["mask_AP50"]), _fmt(r["mask_AP75"]), f"{_fmt(r['box_AP'])} ± {_fmt(r['box_AP_sd'])}", ret,
            _fmt(r["pseudo_mIoU"], 3)]) + " |")
    lines += ["", "| Labeler pair (mask AP difference) | difference | " + pct + " interval | verdict |",
              "|---|---|---|---|"]
    for c in result.comparisons:
        distinct = _distinguishable(c["lo"], c["hi"])
        lines.append(f"| {c['a']} − {c['b']} on {c['detector']} | {c['diff']:+.1f} | [{c['lo']:+.1f}, {c['hi']:+.1f}] | "
                     f"{'distinguishable' if distinct else 'not distinguishable'} |")
    resampled = "val images and seeds" if m["resample_seeds"] else "val images"
    detect = "" if m["detectable_diff_AP"] is None else (
        f" Smallest mask-AP difference between two labelers this table can detect: about "
        f"{m['detectable_diff_AP']:.1f} AP (median half-width of the pairwise intervals; largest "
        f"{m['detectable_diff_AP_max']:.1f}).")
    lines += ["", f"Mask AP: mean ± sd over {len(m['seeds'])} seeds of the detector; [interval]: {pct} bootstrap "
              f"interval of the seed-mean AP, {m['resamples']} draws of the {resampled} ({m['val_images']} images, "
              f"{m['val_instances']} instances), scored by pycocotools. Retention = mask AP (pseudo masks) / mask AP "
              f"(GT masks), same detector, schedule and draws (paired). Pairs: the same draws for both labelers; "
              f"'not distinguishable' when the interval contains 0.{detect} pseudo-mask mIoU: class-averaged IoU "
              f"of the pseudo masks vs GT masks on the train boxes."]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot_retention(rows: list[dict[str, Any]], path: Path) -> None:
    """Retention per (detector, labeler) cell with its interval, and the 100 % line."""
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


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


def write_report(params: dict[str, Any]) -> str:
    """Write ``<table.out_dir>/paper_table.{md,csv,json}``, ``comparisons.csv``, ``retention.png`` and
    ``<table.metrics_dir>/paper_table.json``; returns the markdown."""
    result = build_table(params)
    out_dir = Path(params["table"]["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(result)
    write_text_atomic(out_dir / "paper_table.md", markdown)
    write_text_atomic(out_dir / "paper_table.csv", to_csv(result.rows, COLUMNS))
    write_text_atomic(out_dir / "comparisons.csv", to_csv(result.comparisons, COMPARISON_COLUMNS))
    write_json_atomic(out_dir / "paper_table.json", {"meta": result.meta, "rows": result.rows,
                                                      "comparisons": result.comparisons}, indent=2)
    plot_retention(result.rows, out_dir / "retention.png")
    write_json_atomic(Path(params["table"]["metrics_dir"]) / "paper_table.json", summary_metrics(result), indent=2)
    return markdown
