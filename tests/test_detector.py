"""mal.detection.detector + stages/train_detector.py + stages/evaluate.py on a tiny synthetic set (CPU, few iters)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("detectron2")
from mal.detection import detector as det  # noqa: E402
from mal.detection.coco_eval import evaluate_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEARN_ITERS, LEARN_BOX_AP_FLOOR = 60, 10.0  # measured box AP after 60 iterations: 18.5 ImageNet init, 1.5 random


def tiny_params(max_iter: int = 3) -> dict:
    """params.yaml's `detector:` section shrunk to a seconds-long run on 96 px images."""
    p = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["detector"])
    p["train"].update(max_iter=max_iter, ims_per_batch=2, warmup_iters=1, checkpoint_period=2)
    p["demo_arch"].update(input_size=96, anchor_min=8, rois_per_image=16)
    p["num_threads"] = 1
    p["models"] = {name: {} for name in p["models"]}  # the R18 detectors' own 250-iteration schedule: not here
    p["pretrained"]["MNv2"] = "none"  # random init: the smoke tests need no weights file (the learning test has one)
    return p


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weights stage's ImageNet MobileNetV2 file, built from its pinned package (offline)."""
    from mal.weights.build import build_encoder

    path, _ = build_encoder("mobilenetv2_100", tmp_path_factory.mktemp("weights"))
    return path


def _losses(work: Path) -> list[float]:
    return [json.loads(line)["total_loss"] for line in (work / "metrics.json").read_text().splitlines()
            if "total_loss" in line]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_R18_demo", "cascade_R18_demo", "mask_rcnn_MNv2_demo",
                                  "cascade_MNv2_demo"])
def test_train_predict_evaluate(name: str, shapes_dir: Path, tmp_path: Path) -> None:
    train_json, val_json = shapes_dir / "train_gt.json", shapes_dir / "val_gt.json"
    work = tmp_path / "work"
    cfg = det.build_cfg(name, train_json, work, tiny_params(), image_root=shapes_dir)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5
    info, timings = det.train(cfg, train_json, shapes_dir, work, num_threads=1)
    assert info["iterations"] == 3 and timings["resumed_from_iter"] == 0
    losses = _losses(work)
    assert losses and all(math.isfinite(v) for v in losses)
    det.export_final(work, tmp_path / "out" / "model_final.pth")
    saved = det.load_cfg(work / "config.yaml")
    preds = det.predict(saved, tmp_path / "out" / "model_final.pth", val_json, shapes_dir, num_threads=1)
    val_ids = {im["id"] for im in json.loads(val_json.read_text())["images"]}
    assert all(p["image_id"] in val_ids and 1 <= p["category_id"] <= 5 for p in preds)
    m = evaluate_predictions(val_json, preds)
    assert 0.0 <= m["mask_AP"] <= 100.0 and 0.0 <= m["box_AP"] <= 100.0
    if name.startswith("cascade"):
        assert saved.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
        return
    if "MNv2" in name:
        assert saved.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone" and saved.INPUT.FORMAT == "RGB"
        return
    # Resume: pretend the run died after iteration 1 (keep model_0000001.pth, drop the final checkpoint).
    assert sorted(f.name for f in work.glob("model_*.pth")) == ["model_0000001.pth", "model_final.pth"]
    (work / "model_final.pth").unlink()
    (work / "last_checkpoint").write_text("model_0000001.pth")
    _, timings = det.train(cfg, train_json, shapes_dir, work, num_threads=1)
    assert timings["resumed_from_iter"] == 2
    assert "Starting training from iteration 2" in (work / "log.txt").read_text()
    # A different config does not resume from the old run's checkpoints.
    cfg2 = det.build_cfg(name, train_json, work, {**tiny_params(), "seed": 7}, image_root=shapes_dir)
    _, timings = det.train(cfg2, train_json, shapes_dir, work, num_threads=1)
    assert timings["resumed_from_iter"] == 0


def test_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model_final.pth"
    with pytest.raises(det.CheckpointError, match=str(missing)):
        det.check_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(det.CheckpointError, match=f"{corrupt}.*corrupt"):
        det.check_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(det.CheckpointError, match="truncated.pth"):
        det.check_checkpoint(truncated)
    nomodel = tmp_path / "nomodel.pth"
    torch.save({"weights": {}}, nomodel)
    with pytest.raises(det.CheckpointError, match="no 'model'"):
        det.check_checkpoint(nomodel)
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}}, wrong)
    cfg = det.build_cfg("mask_rcnn_R18_demo", None, tmp_path, tiny_params())
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(det.CheckpointError, match="does not fit"):
        det.load_model(cfg, wrong)


def test_configs_build_offline(tmp_path: Path) -> None:
    p = tiny_params()
    p["pretrained"] = {"R50": str(tmp_path / "R-50.pkl"), "R101": None, "X101": "https://example.org/x.pkl",
                       "MNv2": "none"}
    p["opts"] = {"TEST.DETECTIONS_PER_IMAGE": 50}
    for name, spec in det.DETECTORS.items():
        cfg = det.build_cfg(name, None, tmp_path, p)
        assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.TEST.DETECTIONS_PER_IMAGE == 50
        assert ("Cascade" in cfg.MODEL.ROI_HEADS.NAME) == name.startswith("cascade")
        if spec.profile == "demo":
            assert cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.WEIGHTS == ""
            assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.MAX_ITER == 3
            assert (cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN) == (600, 300)
        if spec.profile == "demo" and spec.timm_model:
            assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone" and cfg.MODEL.TIMM.NAME == "mobilenetv2_100"
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.TIMM.WEIGHTS == ""  # 'none': random init
            assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
        elif spec.profile == "demo":
            assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.NORM == "GN"
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    r50 = det.build_cfg("mask_rcnn_R50_FPN_3x", None, tmp_path, p)
    assert r50.MODEL.WEIGHTS == str(tmp_path / "R-50.pkl") and r50.SOLVER.MAX_ITER == 3
    r101 = det.build_cfg("mask_rcnn_R101_FPN_3x", None, tmp_path, {**p, "train": {}})
    assert r101.MODEL.WEIGHTS.startswith("detectron2://") and r101.SOLVER.MAX_ITER == 270000  # zoo 3x
    x101 = det.build_cfg("mask_rcnn_X101_FPN_3x", None, tmp_path, p)
    assert x101.MODEL.WEIGHTS == "https://example.org/x.pkl" and x101.MODEL.RESNETS.NUM_GROUPS == 32
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        det.build_cfg("nope", None, tmp_path, p)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        det.register_json(tmp_path / "missing.json", tmp_path)


@pytest.mark.slow
def test_stages_cli(shapes_dir: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    d = tiny_params(max_iter=2)
    d.update(gt_json=str(shapes_dir / "train_gt.json"), out_dir=str(tmp_path / "models"),
             work_dir=str(tmp_path / "work"), live_dir=str(tmp_path / "live"),
             models={"mask_rcnn_R18_demo": {"max_iter": 2}})
    params["detector"] = d
    params["data"]["out_dir"] = str(shapes_dir)  # a built-in set: file_names are relative to it
    params["timings_dir"] = str(tmp_path / "timings")
    params["evaluate"].update(val_json=str(shapes_dir / "val_gt.json"), metrics_dir=str(tmp_path / "metrics"),
                              predictions_dir=str(tmp_path / "predictions"), num_threads=1)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    args = ["--detector", "mask_rcnn_R18_demo", "--masks", "gt", "--seed", "3", "--params", str(pfile)]
    for stage in ("train_detector", "evaluate"):
        r = subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py"), *args], capture_output=True,
                           text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
    cell = "gt__mask_rcnn_R18_demo__s3"
    out = tmp_path / "models" / cell
    assert {"model_final.pth", "config.yaml", "train_info.json"} <= {f.name for f in out.iterdir()}
    assert not (tmp_path / "work" / cell).exists()  # checkpoints dropped when done
    curve = tmp_path / "live" / cell / "plots" / "metrics" / "train" / "total_loss.tsv"
    assert len(curve.read_text().splitlines()) >= 2  # header + >= 1 logged step
    m = json.loads((tmp_path / "metrics" / f"{cell}.json").read_text())
    assert "mask_AP" in m and "box_AP75" in m and not any("time" in k for k in m)
    preds = json.loads((tmp_path / "predictions" / f"{cell}.json").read_text())
    assert len(preds) == m["num_predictions"]  # what the table's bootstrap re-scores
    info = json.loads((out / "train_info.json").read_text())
    assert info["iterations"] == 2 and info["seed"] == 3
    assert det.load_cfg(out / "config.yaml").SEED == 3
    timings = tmp_path / "timings" / "train_detector"
    assert json.loads((timings / f"{cell}.json").read_text())["s_per_iter"] > 0
    assert (timings / cell / "log.txt").is_file()  # logs: out of the DVC output
    # Missing pseudo-labels: a clear error naming the file.
    r = subprocess.run([sys.executable, str(REPO / "stages/train_detector.py"), "--detector",
                        "mask_rcnn_R18_demo", "--masks", "nolabeler", "--params", str(pfile)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "data/pseudo/nolabeler/train_pseudo.json" in r.stderr
    # Corrupt model: evaluate names the checkpoint.
    (out / "model_final.pth").write_bytes(b"junk")
    r = subprocess.run([sys.executable, str(REPO / "stages/evaluate.py"), *args], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode != 0 and "model_final.pth" in r.stderr and "corrupt" in r.stderr


def test_timm_backbone_is_the_pretrained_network(mobilenet_weights: Path) -> None:
    """The detectron2 backbone gives the ImageNet network's own maps (frozen BN in train mode == timm in eval mode,
    activations kept: detectron2's convert_frozen_batchnorm would drop timm's fused ReLU6), with the stem and the
    stride-4 blocks frozen at freeze_at 2."""
    import timm

    from mal.common.timm_weights import load_local_weights
    from mal.detection.timm_backbone import TimmBackbone

    backbone = TimmBackbone("mobilenetv2_100", [1, 2, 3, 4], weights=str(mobilenet_weights), freeze_at=2).train()
    ref = timm.create_model("mobilenetv2_100", features_only=True, out_indices=(1, 2, 3, 4))
    load_local_weights(ref, mobilenet_weights)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = backbone(x), ref.eval()(x)
    assert [tuple(v.shape[1:]) for v in ours.values()] == [(24, 16, 16), (32, 8, 8), (96, 4, 4), (320, 2, 2)]
    for a, b in zip(ours.values(), theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv_stem", "blocks"} and backbone.body.blocks[2][0].conv_pw.weight.requires_grad
    assert not backbone.body.blocks[1][0].conv_pw.weight.requires_grad
    with pytest.raises(FileNotFoundError, match="run the weights stage"):
        TimmBackbone("mobilenetv2_100", [1, 2, 3, 4], weights="missing.safetensors")


@pytest.mark.slow
def test_pretrained_demo_detector_learns(shapes_dir: Path, mobilenet_weights: Path, tmp_path: Path) -> None:
    """'It learns': the ImageNet-initialised demo Mask R-CNN reaches a box-AP floor on its training images
    after a short schedule (random init stays near 0 there: 1.5 box AP measured)."""
    p = tiny_params(max_iter=LEARN_ITERS)
    p["pretrained"]["MNv2"] = str(mobilenet_weights)
    p["train"].update(warmup_iters=10, checkpoint_period=LEARN_ITERS, base_lr=0.002)
    train_json = shapes_dir / "train_gt.json"
    cfg = det.build_cfg("mask_rcnn_MNv2_demo", train_json, tmp_path / "work", p, image_root=shapes_dir)
    assert cfg.MODEL.TIMM.WEIGHTS == str(mobilenet_weights)
    det.train(cfg, train_json, shapes_dir, tmp_path / "work", num_threads=2)
    preds = det.predict(cfg, tmp_path / "work" / "model_final.pth", train_json, shapes_dir, num_threads=2)
    box_ap = evaluate_predictions(train_json, preds, tasks=("box",))["box_AP"]
    assert box_ap >= LEARN_BOX_AP_FLOOR, box_ap


def test_images_resolve_from_the_given_root(shapes_dir: Path, tmp_path: Path) -> None:
    """file_names resolve from the configured image root, not from where the JSON lies; a wrong root is a
    clear error naming the JSON, the image id and its file_name."""
    pseudo = tmp_path / "pseudo" / "lab" / "train_pseudo.json"
    pseudo.parent.mkdir(parents=True)
    pseudo.write_text((shapes_dir / "train_gt.json").read_text())
    det.check_images(pseudo, shapes_dir)
    with pytest.raises(FileNotFoundError, match=r"train_pseudo.json: image id=\d+ file_name='images/train/"):
        det.check_images(pseudo, pseudo.parent)
    name = det.register_json(pseudo, shapes_dir)
    assert name == det.register_json(pseudo, shapes_dir)  # idempotent


def test_resume_fingerprint_covers_training_data(shapes_dir: Path, tmp_path: Path) -> None:
    """Same config, different training masks -> a different run: an old checkpoint must not be resumed."""
    from mal.detection import detector as det

    train = shapes_dir / "train_copy_for_fingerprint.json"
    train.write_bytes((shapes_dir / "train_gt.json").read_bytes())
    cfg = det.build_cfg("mask_rcnn_R18_demo", train, tmp_path / "work", tiny_params(max_iter=2),
                        image_root=shapes_dir)
    before = det.run_fingerprint(cfg, train)
    assert det.run_fingerprint(cfg, train) == before
    data = json.loads(train.read_text())
    data["annotations"] = data["annotations"][:-1]
    train.write_text(json.dumps(data))
    assert det.run_fingerprint(cfg, train) != before


def test_paper_schedule_scales_to_the_world_size() -> None:
    """The zoo 3x schedule (8 GPUs x 2 images) on N GPUs: same images per GPU and epochs (linear scaling)."""
    paper = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["detector"])
    paper["train"] = {"ims_per_batch": 16, "checkpoint_period": 5000, "reference_world_size": 8}
    paper["pretrained"] = {"R50": "none"}
    cfg = det.build_cfg("mask_rcnn_R50_FPN_3x", None, "out", paper)
    assert cfg.MODEL.WEIGHTS == ""  # `none`: random init, nothing downloaded
    one = det.scale_to_world_size(cfg, 1)
    assert (one.SOLVER.IMS_PER_BATCH, one.SOLVER.BASE_LR, one.SOLVER.MAX_ITER) == (2, 0.0025, 8 * 270000)
    assert tuple(one.SOLVER.STEPS) == (8 * 210000, 8 * 250000) and one.SOLVER.WARMUP_ITERS == 8 * 1000
    assert det.scale_to_world_size(one, 1) == one  # the trainer's own call is then a no-op
    eight = det.scale_to_world_size(cfg, 8)
    assert (eight.SOLVER.IMS_PER_BATCH, eight.SOLVER.BASE_LR, eight.SOLVER.MAX_ITER) == (16, 0.02, 270000)
    sixteen = det.scale_to_world_size(cfg, 16)
    assert (sixteen.SOLVER.IMS_PER_BATCH, sixteen.SOLVER.MAX_ITER) == (32, 135000)
    paper["pretrained"] = {"R50": None}
    assert det.build_cfg("mask_rcnn_R50_FPN_3x", None, "out", paper).MODEL.WEIGHTS.startswith("detectron2://")
    paper["train"] = {"ims_per_batch": 12, "reference_world_size": 8}
    with pytest.raises(ValueError, match="ims_per_batch 12 is not divisible by reference_world_size 8"):
        det.scale_to_world_size(det.build_cfg("mask_rcnn_R50_FPN_3x", None, "out", paper), 1)


def test_unknown_detector_param_keys_are_rejected() -> None:
    from mal.detection.params import check_detector_params

    dparams = yaml.safe_load((REPO / "params.yaml").read_text())["detector"]
    check_detector_params(dparams, backbones=det.weight_backbones())
    for section, bad in (("train", "max_iters"), ("demo_arch", "dept"), ("pretrained", "R152")):
        broken = copy.deepcopy(dparams)
        broken[section][bad] = 1
        with pytest.raises(ValueError, match=rf"detector.{section}: unknown keys \['{bad}'\]"):
            check_detector_params(broken, backbones=det.weight_backbones())
    with pytest.raises(ValueError, match=r"detector.models.x: unknown keys \['lr'\]"):
        check_detector_params({**dparams, "models": {"x": {"lr": 1}}})
