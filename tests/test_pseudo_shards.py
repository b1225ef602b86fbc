"""Sharding by image id, done markers (completed shards skipped on re-run), and the checked merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.pseudo.shards import label_coco, merge_results, shard_of, shard_paths
from tests._pseudo_fixtures import ConstPredictor, ann, save_image, write_coco


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    ims = [save_image(tmp_path, i, size=(32, 24)) for i in (3, 4, 5, 6, 7)]
    anns = [ann(100 - 3 * i - k, i, [2 + 6 * k, 2, 5, 7]) for i in (7, 3, 5, 4, 6) for k in range(3)]
    anns.append(ann(1, 42, [1, 1, 4, 4]))  # unknown image id: skipped in the shard of 42
    path = write_coco(tmp_path, ims, anns)
    ckpt = tmp_path / "ck.pt"
    ckpt.write_bytes(b"weights v1")
    return path, ckpt


def _label(path: Path, ckpt: Path, out: Path | None, **kw):
    opts = LabelOptions(threshold=kw.pop("threshold", 0.5), batch_size=4)
    runtime = RunPseudoLabelParams(num_shards=kw.pop("num_shards", 1), show_progress=False)
    pred = kw.pop("predictor", ConstPredictor(0.9, mask_size=16))
    return label_coco(path, ckpt, out, opts, runtime, predictor=pred, **kw), pred


def test_sharded_equals_single_and_keeps_input_order(tmp_path: Path) -> None:
    path, ckpt = _setup(tmp_path)
    single, _ = _label(path, ckpt, tmp_path / "single.json")
    sharded, _ = _label(path, ckpt, tmp_path / "sharded.json", num_shards=3, shard_dir=tmp_path / "shards")
    a = json.loads((tmp_path / "single.json").read_text())
    b = json.loads((tmp_path / "sharded.json").read_text())
    assert a == b
    src = json.loads(path.read_text())
    assert [x["id"] for x in b["annotations"]] == [x["id"] for x in src["annotations"] if x["image_id"] != 42]
    assert sharded["skipped_by_reason"] == {"unknown_image_id": 1} and sharded["shards_run"] == 3
    for i in range(3):
        assert all(p.is_file() for p in shard_paths(tmp_path / "shards", i, 3))
    assert [shard_of(i, 3) for i in (3, 4, 5, 42)] == [0, 1, 2, 0]


def test_completed_shards_are_skipped_and_stale_ones_rerun(tmp_path: Path) -> None:
    path, ckpt = _setup(tmp_path)
    sd = tmp_path / "shards"
    kw = {"num_shards": 2, "shard_dir": sd}
    r1, _ = _label(path, ckpt, None, shard_index=1, **kw)  # a worker labels shard 1 only
    assert r1["shards_run"] == 1 and not shard_paths(sd, 0, 2)[0].exists()
    with pytest.raises(ValueError, match="shard 0 of 2 is missing"):
        _label(path, ckpt, tmp_path / "o.json", run_missing=False, **kw)  # merge-only refuses
    r2, pred = _label(path, ckpt, tmp_path / "o.json", **kw)
    assert (r2["shards_run"], r2["shards_reused"]) == (1, 1)
    r3, pred = _label(path, ckpt, tmp_path / "o.json", **kw)
    assert (r3["shards_run"], r3["shards_reused"]) == (0, 2) and pred.calls == []  # nothing re-labelled
    r4, _ = _label(path, ckpt, tmp_path / "o.json", threshold=0.3, **kw)  # options changed: stale
    assert r4["shards_run"] == 2
    ckpt.write_bytes(b"weights v2")  # new checkpoint: stale
    assert _label(path, ckpt, tmp_path / "o.json", threshold=0.3, **kw)[0]["shards_run"] == 2
    shard_paths(sd, 0, 2)[1].write_text("{corrupt")  # a broken marker means: not done
    assert _label(path, ckpt, tmp_path / "o.json", threshold=0.3, **kw)[0]["shards_run"] == 1
    with pytest.raises(ValueError, match="shard_index"):
        _label(path, ckpt, None, shard_index=2, **kw)


def test_a_labelling_code_change_makes_shards_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mal.pseudo import shards

    path, ckpt = _setup(tmp_path)
    kw = {"num_shards": 2, "shard_dir": tmp_path / "shards"}
    code = tmp_path / "label.py"
    code.write_text("v1")
    monkeypatch.setattr(shards, "labelling_sources", lambda: [code])
    assert _label(path, ckpt, tmp_path / "o.json", **kw)[0]["shards_run"] == 2
    assert _label(path, ckpt, tmp_path / "o.json", **kw)[0]["shards_run"] == 0
    code.write_text("v2")  # e.g. a new output field: old shards must not be merged
    assert _label(path, ckpt, tmp_path / "o.json", **kw)[0]["shards_run"] == 2
    monkeypatch.undo()
    assert {"mal.pseudo.label", "mal.pseudo.confidence"} <= set(shards.LABELLING_MODULES)
    assert all(f.is_file() for f in shards.labelling_sources())


def test_merge_detects_missing_and_duplicated_annotations(tmp_path: Path) -> None:
    path, _ = _setup(tmp_path)
    coco = json.loads(path.read_text())
    anns = [
        dict(a, segmentation={}, mal={"source": "labeler"})
        for a in coco["annotations"]
        if a["image_id"] != 42
    ]
    skipped = [{"annotation_id": 1, "image_id": 42, "reason": "unknown_image_id", "detail": ""}]
    ok = {"annotations": anns, "skipped": skipped, "skipped_images": [], "stats": {}}
    out, rep = merge_results(coco, [ok], "x")
    assert rep["boxes_in"] == rep["masks_out"] + rep["skipped"]
    with pytest.raises(ValueError, match="missing from the shards"):
        merge_results(coco, [dict(ok, annotations=anns[1:])], "x")
    with pytest.raises(ValueError, match="more than one shard"):
        merge_results(coco, [ok, dict(ok, skipped=[])], "x")
