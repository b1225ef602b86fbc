"""Where each stage reads and writes, resolved from params.yaml (the one place paths are configured).

dvc.yaml names the same paths for DVC; ``tests/test_stage_paths.py`` checks that both agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUILTIN_DATASETS = ("nuclei", "shapes")


def detector_cell(masks: str, detector: str, seed: int) -> str:
    """Name of one trained detector of the paper table: ``<masks>__<detector>__s<seed>`` (masks = ``gt`` or a
    labeler; one per seed of ``table.seeds``)."""
    return f"{masks}__{detector}__s{int(seed)}"


def image_roots(data: dict[str, Any]) -> dict[str, Path]:
    """The folder each split's image ``file_name``s are relative to: ``{"train": .., "val": ..}``.

    Built-in sets write their images under ``data.out_dir`` (file_names ``images/<split>/...``); a COCO-format
    set is referenced in place, so its file_names stay relative to the user's image folders.
    """
    if data["dataset"] == "coco":
        coco = data.get("coco") or {}
        return {"train": Path(coco["train_images"]), "val": Path(coco["val_images"])}
    return {"train": Path(data["out_dir"]), "val": Path(data["out_dir"])}


def prepared_json(data: dict[str, Any], split: str) -> Path:
    """``train_boxes`` | ``train_gt`` | ``val_gt`` -> its prepared COCO JSON."""
    if split not in ("train_boxes", "train_gt", "val_gt"):
        raise ValueError(f"unknown prepared split {split!r}")
    return Path(data["out_dir"]) / f"{split}.json"


def labeler_paths(params: dict[str, Any], labeler: str) -> dict[str, Path]:
    """``labeler.paths`` with ``{labeler}`` filled in: checkpoint, metrics, plots_dir, state."""
    paths = (params.get("labeler") or {}).get("paths") or {}
    known = {"checkpoint", "metrics", "plots_dir", "state"}
    unknown, missing = sorted(set(paths) - known), sorted(known - set(paths))
    if unknown or missing:
        raise ValueError(f"params: labeler.paths: unknown keys {unknown}, missing keys {missing} (known: {sorted(known)})")
    return {k: Path(str(v).format(labeler=labeler)) for k, v in paths.items()}


def templated(section: dict[str, Any], keys: tuple[str, ...], labeler: str) -> dict[str, Path]:
    """``section[k]`` with ``{labeler}`` filled in, for each of ``keys`` (a clear error for a missing key)."""
    missing = [k for k in keys if k not in section]
    if missing:
        raise ValueError(f"params: missing {missing}")
    return {k: Path(str(section[k]).format(labeler=labeler)) for k in keys}


def detector_metrics(params: dict[str, Any], masks: str, detector: str, seed: int) -> Path:
    """The flat metrics JSON ``evaluate`` writes for one trained detector."""
    return Path(params["evaluate"]["metrics_dir"]) / f"{detector_cell(masks, detector, seed)}.json"


def detector_predictions(params: dict[str, Any], masks: str, detector: str, seed: int) -> Path:
    """The val predictions (COCO results JSON) ``evaluate`` writes for one trained detector (the table's
    bootstrap re-scores them)."""
    return Path(params["evaluate"]["predictions_dir"]) / f"{detector_cell(masks, detector, seed)}.json"


def timings_path(params: dict[str, Any], stage: str, name: str | None = None) -> Path:
    """Where a stage's timings go: outside git and DVC, so an identical re-run leaves the tree clean."""
    return Path(params["timings_dir"]) / stage / f"{name or stage}.json"


def rank_log_path(params: dict[str, Any], stage: str, name: str, rank: int) -> Path:
    """The log file of process ``rank`` of a data-parallel stage (beside its timings; no DVC out)."""
    return Path(params["timings_dir"]) / stage / name / f"rank{int(rank)}.log"
