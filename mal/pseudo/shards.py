"""Scale-out of pseudo-labelling: shards by image id, done markers, and the merge step.

- Shard of an image: ``image_id % num_shards`` (stable across runs and machines). Annotations whose image
  id is unknown go to the shard of that id, so every annotation belongs to exactly one shard.
- Each shard writes ``<shard_dir>/shard-IIIII-of-NNNNN.json`` atomically, then a ``.done`` marker holding
  the input hash (labelling source code + boxes file bytes + checkpoint bytes + output-changing options +
  image root + number of shards; image files by path only). A re-run
  skips shards whose marker matches; a changed input re-labels them.
- Missing shards run in this process or in ``run.pseudo_label.shard_processes`` launched processes
  (:func:`mal.common.launch.launch`), never by re-executing a script.
- :func:`merge_results` rebuilds the input COCO dict in input order and checks that every input
  annotation is present exactly once, labelled or skipped-with-reason.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mal.common.devices import log_device, resolve_device, shard_device
from mal.common.files import file_sha256, fingerprint, write_json_atomic
from mal.common.launch import launch, local_rank
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.pseudo.engine import BoxPredictor, LabelResult, resolve_options
from mal.pseudo.label import label_images, load_boxes, plan_annotations
from mal.pseudo.predictor import Predictor

# the modules whose code decides a shard's content (an edit, e.g. a new field such as ``score``, re-labels)
LABELLING_MODULES = (
    "mal.pseudo.engine", "mal.pseudo.predictor", "mal.pseudo.label", "mal.pseudo.boxes", "mal.config.pseudo",
    "mal.pseudo.confidence", "mal.common.masks", "mal.common.boxes", "mal.common.images",
    "mal.labeler.crops", "mal.labeler.model", "mal.labeler.encoder", "mal.labeler.decoder",
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


def _check_shards(num_shards: int, shard_index: int | None) -> None:
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if shard_index is not None and not 0 <= int(shard_index) < int(num_shards):
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")


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
    return out, _merge_report(coco, out_anns, skipped_list, skipped_images, stats)


def _merge_report(coco: dict[str, Any], out_anns: list[dict], skipped_list: list[dict], skipped_images: list[dict],
                  stats: Counter) -> dict[str, Any]:
    """The counts of a merged output (the stage's metrics + timings, the CLI's summary)."""
    reasons = Counter(s["reason"] for s in skipped_list)
    fallback = Counter(a["mal"].get("reason") for a in out_anns if a["mal"]["source"] == "box_fallback")
    return {
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


def shard_processes(runtime: RunPseudoLabelParams, device: torch.device | None, num_shards: int) -> int:
    """How many processes label shards at once: ``runtime.shard_processes``, or with 0 (auto) one per GPU
    when ``device`` is plain ``cuda`` and there are several GPUs (else 1: shards run in this process)."""
    want = int(runtime.shard_processes)
    if want <= 0:
        want = torch.cuda.device_count() if device is not None and device.type == "cuda" and device.index is None else 1
    return max(min(want, int(num_shards)), 1)


@dataclass(frozen=True)
class ShardTask:
    """One input to label in shards: what every shard process needs (picklable, sent to launched processes).
    ``options.threshold`` is resolved; ``digest`` is the :func:`input_hash` ("" without ``shard_dir``)."""

    boxes_path: Path
    checkpoint: Path
    options: LabelOptions
    runtime: RunPseudoLabelParams
    image_root: Path | None
    shard_dir: Path | None
    digest: str


class _ShardLabeller:
    """Labels the shards of a task in this process, with one predictor per device, loaded when first needed
    (auto / plain cuda with several GPUs: shard i on ``cuda:{i % n}``, or ``cuda:{LOCAL_RANK}`` in a launched
    process; cpu and cuda:N stay put)."""

    def __init__(self, task: ShardTask, predictor: BoxPredictor | None = None) -> None:
        self.task, self.given = task, predictor
        self.coco = load_boxes(task.boxes_path)
        self.plans = plan_annotations(self.coco, task.options.min_box_side)
        self.base = resolve_device(task.runtime.device, "run.pseudo_label.device") if predictor is None else None
        cuda_any = self.base is not None and self.base.type == "cuda" and self.base.index is None
        self.n_gpus = torch.cuda.device_count() if cuda_any else 0
        self.loaded: dict[str, BoxPredictor] = {}

    def predictor(self, i: int) -> BoxPredictor:
        if self.given is not None:
            return self.given
        key = shard_device(i, self.n_gpus) if self.n_gpus > 1 else str(self.base)
        if key not in self.loaded:
            opts = self.task.options
            self.loaded[key] = Predictor(self.task.checkpoint, opts.which, opts.flip_tta, key)
            if self.n_gpus > 1:
                log_device(f"pseudo_label shard {i}/{self.task.runtime.num_shards}", key, amp=True)
        return self.loaded[key]

    def reuse(self, i: int) -> dict[str, Any] | None:
        """Shard ``i``'s stored result when its done marker matches, else None."""
        t = self.task
        if t.shard_dir is None or not shard_is_done(t.shard_dir, i, t.runtime.num_shards, t.digest):
            return None
        return json.loads(shard_paths(t.shard_dir, i, t.runtime.num_shards)[0].read_text())

    def label(self, i: int) -> dict[str, Any]:
        """Label shard ``i`` (JSON form); with a shard dir, write it and then its done marker."""
        t, n = self.task, self.task.runtime.num_shards
        ids = [iid for iid in self.plans if shard_of(iid, n) == i]
        needs_model = any(p.action == "model" for iid in ids for p in self.plans[iid])
        res = label_images(self.coco, t.boxes_path, self.predictor(i) if needs_model else None, t.options, ids,
                           t.image_root, self.plans, t.runtime)
        res = LabelResult(**res).to_json()
        if t.shard_dir is not None:
            out_file, marker = shard_paths(t.shard_dir, i, n)
            write_json_atomic(out_file, {"input_hash": t.digest, **res})
            write_json_atomic(marker, {"input_hash": t.digest, "shard_index": i, "num_shards": n,
                                       "boxes_in": res["stats"].get("boxes_in", 0)})
        return res


def label_shards_in_process(task: ShardTask, processes: int) -> None:
    """One of ``processes`` launched processes (:func:`mal.common.launch.launch`): slot ``g`` (its local rank)
    labels the shards ``g, g + P, ...`` not already done, so with P GPUs each slot stays on ``cuda:g``."""
    if task.runtime.num_threads > 0:
        torch.set_num_threads(task.runtime.num_threads)
    shards = _ShardLabeller(task)
    for i in range(local_rank(), task.runtime.num_shards, processes):
        if shards.reuse(i) is None:
            shards.label(i)


def label_coco(
    boxes_path: str | Path,
    checkpoint: str | Path,
    out_path: str | Path | None,
    options: LabelOptions,
    runtime: RunPseudoLabelParams | None = None,
    image_root: str | Path | None = None,
    shard_index: int | None = None,
    shard_dir: str | Path | None = None,
    run_missing: bool = True,
    predictor: BoxPredictor | None = None,
) -> dict[str, Any]:
    """Label a COCO boxes file (all ``runtime.num_shards`` shards, or one with ``shard_index``), then merge
    into ``out_path``; the file front door of the engine for the stage and ``mal label``.

    ``options.threshold`` None is the checkpoint's (:func:`~mal.pseudo.engine.resolve_options`). With
    ``shard_dir`` every shard is written there with a done marker and completed shards are reused; then
    ``runtime.shard_processes`` (> 1, or 0 with several GPUs) label the missing shards in that many
    processes (:func:`mal.common.launch.launch`) before the merge here. Without it, shards are kept in
    memory. With ``shard_index`` only that shard runs and nothing is merged; ``run_missing=False`` (merge
    only) raises instead of labelling a missing shard. ``predictor`` (optional) replaces loading the
    checkpoint (still hashed). Image ``file_name``s are written as they came in (relative to ``image_root``,
    default: the boxes file's folder). Returns the merge report (or the shard's counts for one shard).
    """
    runtime = runtime or RunPseudoLabelParams()
    n = runtime.num_shards
    _check_shards(n, shard_index)
    if shard_index is not None and shard_dir is None:
        raise ValueError("--shard-index needs a shard directory to write the shard to")
    options = resolve_options(options, checkpoint)
    digest = input_hash(boxes_path, checkpoint, options, image_root, n) if shard_dir else ""
    task = ShardTask(Path(boxes_path), Path(checkpoint), options, runtime, Path(image_root) if image_root else None,
                     Path(shard_dir) if shard_dir else None, digest)
    shards = _ShardLabeller(task, predictor)
    indices = [shard_index] if shard_index is not None else list(range(n))
    if shard_dir is not None and shard_index is None and run_missing and predictor is None:
        processes = shard_processes(runtime, shards.base, n)
        if processes > 1:  # they write the shards; this process then reuses them all
            launch(label_shards_in_process, processes, task, processes)
    results, reused = [], 0
    for i in indices:
        res = shards.reuse(i)
        reused += res is not None
        if res is None and not run_missing:
            raise ValueError(f"{shard_dir}: shard {i} of {n} is missing or stale; run it first")
        results.append(res if res is not None else shards.label(i))
    if shard_index is not None:
        stats: Counter = Counter()
        for r in results:
            stats.update(r["stats"])
        return {"shards_run": len(indices) - reused, "shards_reused": reused, **dict(stats)}
    out, report = merge_results(shards.coco, results, str(shard_dir or boxes_path))
    if out_path is not None:
        write_json_atomic(out_path, out)
    report["shards_run"], report["shards_reused"] = len(indices) - reused, reused
    report["options"] = options.identity()
    return report
