"""Scale-out of pseudo-labelling: shards by image id, done markers, and the merge step.

- Shard of an image: ``image_id % num_shards`` (stable across runs and machines). Annotations whose image
  id is unknown go to the shard of that id, so every annotation belongs to exactly one shard.
- Each shard writes ``<shard_dir>/shard-IIIII-of-NNNNN.json`` atomically, then a ``.done`` marker holding
  the input hash (labelling source code + boxes file bytes + checkpoint bytes + output-changing options +
  image root + number of shards; image files by path only). A re-run
  skips shards whose marker matches; a changed input re-labels them.
- :func:`merge_shards` rebuilds the input COCO dict in input order and checks that every input
  annotation is present exactly once, labelled or skipped-with-reason.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mal.common.devices import log_device, resolve_device, shard_device
from mal.common.files import file_sha256, fingerprint, write_json_atomic
from mal.pseudo.label import LabelOptions, Predictor, label_images, load_boxes, plan_annotations

# the modules whose code decides a shard's content (an edit, e.g. a new field such as ``score``, re-labels)
LABELLING_MODULES = (
    "mal.pseudo.label", "mal.pseudo.boxes", "mal.pseudo.confidence", "mal.common.masks", "mal.common.boxes",
    "mal.common.images", "mal.labeler.crops", "mal.labeler.model", "mal.labeler.encoder", "mal.labeler.decoder",
)


def labelling_sources() -> list[Path]:
    """The source files of :data:`LABELLING_MODULES`."""
    return [Path(importlib.util.find_spec(m).origin) for m in LABELLING_MODULES]


def input_hash(
    boxes_path: str | Path,
    checkpoint: str | Path,
    options: LabelOptions,
    image_root: str | Path | None,
    num_shards: int,
) -> str:
    """Hash of everything that determines a shard's content (image files are identified by path only)."""
    code = [file_sha256(f) for f in labelling_sources()]
    return fingerprint(
        code, file_sha256(boxes_path), file_sha256(checkpoint), options.identity(), str(image_root or ""),
        int(num_shards),
    )


def shard_of(image_id: int, num_shards: int) -> int:
    """Stable shard index of an image id."""
    return int(image_id) % int(num_shards)


def shard_paths(shard_dir: str | Path, index: int, num_shards: int) -> tuple[Path, Path]:
    """``(shard json, done marker)`` paths."""
    stem = f"shard-{index:05d}-of-{num_shards:05d}"
    return Path(shard_dir) / f"{stem}.json", Path(shard_dir) / f"{stem}.done"


def shard_is_done(shard_dir: str | Path, index: int, num_shards: int, digest: str) -> bool:
    """True when the shard file exists and its marker records ``digest``."""
    out, marker = shard_paths(shard_dir, index, num_shards)
    if not (out.is_file() and marker.is_file()):
        return False
    try:
        return json.loads(marker.read_text()).get("input_hash") == digest
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def run_shard_processes(argv_of: Callable[[int], list[str]], num_shards: int, processes: int) -> None:
    """Run shards ``0..num_shards-1`` as subprocesses (``argv_of(i)``), ``processes`` at a time: slot ``g`` runs
    shards ``g, g + P, g + 2P, ...`` in turn, so with P GPUs each slot stays on ``cuda:g``
    (:func:`mal.common.devices.shard_device`). Raises ``RuntimeError`` naming the failed shards."""
    failed: list[int] = []

    def slot(g: int) -> None:
        for i in range(g, num_shards, processes):
            if subprocess.run(argv_of(i)).returncode != 0:
                failed.append(i)

    threads = [threading.Thread(target=slot, args=(g,)) for g in range(min(processes, num_shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise RuntimeError(f"pseudo-labelling shards {sorted(failed)} of {num_shards} failed (their output above)")


def _check_shards(num_shards: int, shard_index: int | None) -> None:
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if shard_index is not None and not 0 <= int(shard_index) < int(num_shards):
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")


def run_shard(
    coco: dict[str, Any],
    boxes_path: str | Path,
    predictor_factory: Any,
    options: LabelOptions,
    index: int,
    num_shards: int,
    image_root: str | Path | None = None,
) -> dict[str, Any]:
    """Label the images of one shard; returns :func:`label_images`' result with JSON-able keys."""
    plans = plan_annotations(coco, options.min_box_side)
    ids = [i for i in plans if shard_of(i, num_shards) == index]
    needs_model = any(p.action == "model" for i in ids for p in plans[i])
    predictor = predictor_factory() if needs_model else None
    res = label_images(coco, boxes_path, predictor, options, ids, image_root, plans)
    res["annotations"] = list(res["annotations"].values())
    return res


def merge_results(coco: dict[str, Any], results: list[dict[str, Any]], where: str) -> tuple[dict, dict]:
    """Input COCO dict + shard results -> (output COCO dict in input order, report).

    Raises ``ValueError`` when an input annotation is missing from all shards or present twice.
    """
    labelled: dict[int, dict] = {}
    skipped: dict[int, dict] = {}
    skipped_images: list[dict] = []
    stats: Counter = Counter()
    for r in results:
        for a in r["annotations"]:
            if a["id"] in labelled or a["id"] in skipped:
                raise ValueError(f"{where}: annotation id={a['id']} appears in more than one shard")
            labelled[a["id"]] = a
        for s in r["skipped"]:
            if s["annotation_id"] in labelled or s["annotation_id"] in skipped:
                raise ValueError(
                    f"{where}: annotation id={s['annotation_id']} appears in more than one shard"
                )
            skipped[s["annotation_id"]] = s
        skipped_images.extend(r["skipped_images"])
        stats.update(r["stats"])
    out_anns, missing = [], []
    for a in coco["annotations"]:
        if a["id"] in labelled:
            out_anns.append(labelled[a["id"]])
        elif a["id"] not in skipped:
            missing.append(a["id"])
    if missing:
        raise ValueError(
            f"{where}: {len(missing)} input annotations missing from the shards (ids {missing[:10]})"
        )
    if len(out_anns) + len(skipped) != len(coco["annotations"]) or len(labelled) != len(out_anns):
        raise ValueError(f"{where}: shards hold annotations that are not in the input")
    bad_images = {s["image_id"] for s in skipped_images}
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if im["id"] not in bad_images]
    out["annotations"] = out_anns
    skipped_list = [skipped[a["id"]] for a in coco["annotations"] if a["id"] in skipped]
    reasons = Counter(s["reason"] for s in skipped_list)
    fallback = Counter(a["mal"].get("reason") for a in out_anns if a["mal"]["source"] == "box_fallback")
    report = {
        "boxes_in": len(coco["annotations"]),
        "masks_out": len(out_anns),
        "skipped": len(skipped_list),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "labeler_masks": sum(a["mal"]["source"] == "labeler" for a in out_anns),
        "box_fallback": sum(fallback.values()),
        "box_fallback_by_reason": dict(sorted(fallback.items())),
        "clipped_boxes": sum("clipped_from" in a["mal"] for a in out_anns),
        "crowd_boxes": sum(bool(a.get("iscrowd", 0)) for a in out_anns),
        "images_in": len(coco["images"]),
        "images_skipped": len(skipped_images),
        "model_boxes": int(stats.get("model_boxes", 0)),
        "model_seconds": round(float(stats.get("model_seconds", 0.0)), 3),
        "seconds": round(float(stats.get("seconds", 0.0)), 3),
        "skipped_annotations": skipped_list,
        "skipped_images": skipped_images,
    }
    return out, report


def label_coco(
    boxes_path: str | Path,
    checkpoint: str | Path,
    out_path: str | Path | None,
    options: LabelOptions,
    image_root: str | Path | None = None,
    num_shards: int = 1,
    shard_index: int | None = None,
    shard_dir: str | Path | None = None,
    merge: bool = True,
    run_missing: bool = True,
    predictor: Any = None,
) -> dict[str, Any]:
    """Label a COCO boxes file (all shards, or one with ``shard_index``), then merge into ``out_path``.

    With ``shard_dir`` every shard is written there with a done marker and completed shards are reused;
    without it (single process) shards are kept in memory. With ``shard_index`` only that shard runs and
    nothing is merged. ``run_missing=False`` (merge only) raises instead of labelling a missing shard.
    ``predictor`` (optional) replaces loading the checkpoint (still hashed) into a :class:`Predictor`.
    Image ``file_name``s are written as they came in (relative to ``image_root``, default: the boxes file's
    folder), so the output holds no machine-specific path.
    Returns the merge report (or the shard's stats for a single shard).
    """
    _check_shards(num_shards, shard_index)
    if shard_index is not None and shard_dir is None:
        raise ValueError("--shard-index needs a shard directory to write the shard to")
    coco = load_boxes(boxes_path)
    if not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: labeler checkpoint not found")
    digest = input_hash(boxes_path, checkpoint, options, image_root, num_shards) if shard_dir else ""
    loaded: dict[str, Any] = {"given": predictor} if predictor is not None else {}
    base = resolve_device(options.device, "pseudo_label.device") if predictor is None else None
    n_gpus = torch.cuda.device_count() if base is not None and base.type == "cuda" and base.index is None else 0

    def device_of(i: int) -> str:
        """auto / plain cuda: shard i on cuda:{i % n_gpus} (LOCAL_RANK wins); cpu and cuda:N stay put."""
        return shard_device(i, n_gpus) if n_gpus > 1 else str(base)

    def factory(i: int) -> Predictor:
        key = "given" if predictor is not None else device_of(i)
        if key not in loaded:
            loaded[key] = Predictor(checkpoint, options.which, options.flip_tta, key)
            if n_gpus > 1:
                log_device(f"pseudo_label shard {i}/{num_shards}", key, amp=True)
        return loaded[key]

    indices = [shard_index] if shard_index is not None else list(range(num_shards))
    results, reused = [], 0
    for i in indices:
        if shard_dir is not None and shard_is_done(shard_dir, i, num_shards, digest):
            out_file, _ = shard_paths(shard_dir, i, num_shards)
            results.append(json.loads(out_file.read_text()))
            reused += 1
            continue
        if not run_missing:
            raise ValueError(f"{shard_dir}: shard {i} of {num_shards} is missing or stale; run it first")
        res = run_shard(coco, boxes_path, lambda i=i: factory(i), options, i, num_shards, image_root)
        if shard_dir is not None:
            out_file, marker = shard_paths(shard_dir, i, num_shards)
            write_json_atomic(out_file, {"input_hash": digest, **res})
            write_json_atomic(
                marker,
                {
                    "input_hash": digest,
                    "shard_index": i,
                    "num_shards": num_shards,
                    "boxes_in": res["stats"].get("boxes_in", 0),
                },
            )
        results.append(res)
    if shard_index is not None or not merge:
        stats = Counter()
        for r in results:
            stats.update(r["stats"])
        return {"shards_run": len(indices) - reused, "shards_reused": reused, **dict(stats)}
    if shard_dir is not None:  # merge may run in another process than the shards: all must be done
        for i in range(num_shards):
            if not shard_is_done(shard_dir, i, num_shards, digest):
                raise ValueError(f"{shard_dir}: shard {i} of {num_shards} is missing or stale; run it first")
    out, report = merge_results(coco, results, str(shard_dir or boxes_path))
    if out_path is not None:
        write_json_atomic(out_path, out)
    report["shards_run"], report["shards_reused"] = len(indices) - reused, reused
    report["options"] = options.identity()
    return report
