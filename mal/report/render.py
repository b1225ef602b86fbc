"""Every rendering of the paper table, from its rows (:class:`mal.report.table.Table`, ``paper_table.json``).

The stage writes the rows once; ``reports/paper_table.md``, the review page's table
(:mod:`mal.review.repro`) and README's results block (:mod:`mal.report.readme`) are all drawn from the same
cell strings (:func:`paper_cells`, :func:`comparison_cells`), so a number reads the same everywhere. Markdown
tables are tabulate's ``pipe`` format (already a pinned dependency, detectron2 prints its tables with it);
numbers are formatted here, not parsed by tabulate (``disable_numparse``), so "56.5 ± 0.1" stays one cell.
"""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

from mal.report.table import GT_ROW, Table, distinguishable


def fmt(value: Any, digits: int = 1) -> str:
    """A number of the table: AP and % with 1 decimal, mIoU with 3; "–" where there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pct(table: Table) -> str:
    return f"{100 * table.meta['level']:.0f} %"


def paper_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Headers and one row of display strings per (detector, masks): mean ± sd over seeds [interval]."""
    pct = _pct(table)
    headers = ["Detector", "Masks", "seeds", f"mask AP (± sd) [{pct}]", "AP50", "AP75", "box AP (± sd)",
               f"retention % [{pct}]", "pseudo-mask mIoU"]
    rows = []
    for r in table.rows:
        ret = fmt(r["retention_pct"]) if r["masks"] == GT_ROW else (
            f"{fmt(r['retention_pct'])} [{fmt(r['retention_lo'])}, {fmt(r['retention_hi'])}]")
        rows.append([
            r["detector"], r["masks"], str(r["seeds"]),
            f"{fmt(r['mask_AP'])} ± {fmt(r['mask_AP_sd'])} [{fmt(r['mask_AP_lo'])}, {fmt(r['mask_AP_hi'])}]",
            fmt(r["mask_AP50"]), fmt(r["mask_AP75"]), f"{fmt(r['box_AP'])} ± {fmt(r['box_AP_sd'])}", ret,
            fmt(r["pseudo_mIoU"], 3)])
    return headers, rows


def comparison_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per labeler pair and detector: difference, interval, verdict."""
    headers = ["Labeler pair (mask AP difference)", "difference", f"{_pct(table)} interval", "verdict"]
    rows = [[f"{c['a']} − {c['b']} on {c['detector']}", f"{c['diff']:+.1f}", f"[{c['lo']:+.1f}, {c['hi']:+.1f}]",
             "distinguishable" if distinguishable(c["lo"], c["hi"]) else "not distinguishable"]
            for c in table.comparisons]
    return headers, rows


def notes(table: Table) -> str:
    """How to read the table: what the intervals are, what retention and the verdicts mean."""
    m, pct = table.meta, _pct(table)
    resampled = "val images and seeds" if m["resample_seeds"] else "val images"
    detect = "" if m["detectable_diff_AP"] is None else (
        f" Smallest mask-AP difference between two labelers this table can detect: about "
        f"{m['detectable_diff_AP']:.1f} AP (median half-width of the pairwise intervals; largest "
        f"{m['detectable_diff_AP_max']:.1f}).")
    return (f"Mask AP: mean ± sd over {len(m['seeds'])} seeds of the detector; [interval]: {pct} bootstrap "
            f"interval of the seed-mean AP, {m['resamples']} draws of the {resampled} ({m['val_images']} images, "
            f"{m['val_instances']} instances), scored by pycocotools. Retention = mask AP (pseudo masks) / mask AP "
            f"(GT masks), same detector, schedule and draws (paired). Pairs: the same draws for both labelers; "
            f"'not distinguishable' when the interval contains 0.{detect} pseudo-mask mIoU: class-averaged IoU "
            f"of the pseudo masks vs GT masks on the train boxes.")


def markdown_table(headers: list[str], rows: list[list[str]], left: int = 1, text_last: bool = False) -> str:
    """A pipe table; the first ``left`` columns left-aligned (labels), the others right-aligned (numbers), the
    last one left-aligned too with ``text_last`` (a verdict)."""
    align = ["left"] * left + ["right"] * (len(headers) - left)
    if text_last:
        align[-1] = "left"
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def markdown(table: Table, title_prefix: str = "## ") -> str:
    """Title, the table, the labeler pairs, how to read them (``reports/paper_table.md``; README's block with
    ``title_prefix=""``)."""
    parts = [f"{title_prefix}{table.meta['title']}", markdown_table(*paper_cells(table), left=2)]
    if table.comparisons:
        parts.append(markdown_table(*comparison_cells(table), text_last=True))
    parts.append(notes(table))
    return "\n\n".join(parts) + "\n"
