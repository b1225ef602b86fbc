"""mal.detection (configs, training, evaluation) + stages/train_detector.py + stages/evaluate.py on a tiny
synthetic set (CPU, few iterations)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytest.importorskip("detectron2")
from pydantic import ValidationError  # noqa: E402

from mal.config.detector import DetectorParams, EvaluateParams  # noqa: E402
from mal.detection import detector as det  # noqa: E402
from mal.detection import train as dtrain  # noqa: E402
from mal.detection.evaluation import evaluate_detector, evaluate_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEARN_ITERS, LEARN_BOX_AP_FLOOR = 60, 10.0  # measured box AP after 60 iterations: 18.5 ImageNet init, 1.5 random


def detector_yaml() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["detector"])


def tiny_params(max_iter: int = 3, **solver: Any) -> DetectorParams:
    """params.yaml's `detector:` section shrunk to a seconds-long run on 96 px images."""
    p = detector_yaml()
    p["opts"]["SOLVER"].update({"MAX_ITER": max_iter, "IMS_PER_BATCH": 2, "WARMUP_ITERS": 1, "CHECKPOINT_PERIOD": 2,
                                **solver})
    p["demo_arch"].update(input_size=96, anchor_min=8, rois_per_image=16)
    p["models"] = {name: {} for name in p["models"]}  # the R18 detectors' own 250-iteration schedule: not here
    p["pretrained"]["MNv2"] = "none"  # random init: the smoke tests need no weights file (the learning test has one)
    return DetectorParams.model_validate(p)


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weights stage's ImageNet MobileNetV2 file, built from its pinned package (offline)."""
    from mal.weights.build import build_encoder

    path, _ = build_encoder("mobilenetv2_100", tmp_path_factory.mktemp("weights"))
    return path


def _losses(work: Path) -> list[float]:
    return [json.loads(line)["total_loss"] for line in (work / "metrics.json").read_text().splitlines()
            if "total_loss" in line]


class _Killed(RuntimeError):
    pass


class _KillAfter(dtrain.HookBase):
    """Stops training after iteration ``it`` (a run that dies), once its checkpoint is written."""

    def __init__(self, it: int) -> None:
        self.it = it

    def after_step(self) -> None:
        if self.trainer.iter == self.it:
            raise _Killed(f"killed after iteration {self.it}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_R18_demo", "cascade_R18_demo", "mask_rcnn_MNv2_demo",
                                  "cascade_MNv2_demo"])
def test_train_predict_evaluate(name: str, shapes_dir: Path, tmp_path: Path) -> None:
    train_json, val_json = shapes_dir / "train_gt.json", shapes_dir / "val_gt.json"
    work, live = tmp_path / "work", tmp_path / "live"
    trained, timings = dtrain.train_detector(name, tiny_params(), train_json, shapes_dir, work, live, num_threads=1)
    assert trained.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5 and trained.cfg.MODEL.WEIGHTS == ""
    assert trained.info["iterations"] == 3 and timings["resumed_from_iter"] == 0
    losses = _losses(work)
    assert losses and all(math.isfinite(v) for v in losses)
    assert not list(work.glob("model_*.pth")) and (work / "log.txt").is_file()  # checkpoints dropped, logs kept
    trained.write(tmp_path / "out")
    saved = det.load_cfg(tmp_path / "out" / "config.yaml")
    assert saved.OUTPUT_DIR == str(tmp_path / "out")
    result, _ = evaluate_detector(saved, tmp_path / "out" / "model_final.pth", val_json, shapes_dir,
                                  EvaluateParams(), num_threads=1)
    val_ids = {im["id"] for im in json.loads(val_json.read_text())["images"]}
    preds = result.predictions
    assert all(p["image_id"] in val_ids and 1 <= p["category_id"] <= 5 for p in preds)
    assert all(list(p) == ["image_id", "category_id", "bbox", "score", "segmentation"] for p in preds)
    m = result.metrics
    assert result.evaluator == "coco" and m["num_predictions"] == len(preds)
    assert 0.0 <= m["mask_AP"] <= 100.0 and 0.0 <= m["box_AP"] <= 100.0
    if preds:  # the records are what was scored: re-scoring them gives the same numbers
        assert evaluate_predictions(val_json, preds) == m
    if name.startswith("cascade"):
        assert saved.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
        return
    if "MNv2" in name:
        assert saved.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone" and saved.INPUT.FORMAT == "RGB"
        return
    _check_resume(name, shapes_dir, tmp_path)


def _check_resume(name: str, shapes_dir: Path, tmp_path: Path) -> None:
    """A run killed after iteration 1 (checkpoint model_0000001.pth) resumes at 2 with complete curves; a
    different config does not resume from the old run's checkpoints."""
    train_json, work, live = shapes_dir / "train_gt.json", tmp_path / "work2", tmp_path / "live2"
    with pytest.MonkeyPatch.context() as mp:
        build = dtrain.MalTrainer.build_hooks
        mp.setattr(dtrain.MalTrainer, "build_hooks", lambda self: [*build(self), _KillAfter(1)])
        with pytest.raises(_Killed):
            dtrain.train_detector(name, tiny_params(), train_json, shapes_dir, work, live, num_threads=1)
    assert (work / "last_checkpoint").read_text() == "model_0000001.pth"
    _, timings = dtrain.train_detector(name, tiny_params(), train_json, shapes_dir, work, live, num_threads=1)
    assert timings["resumed_from_iter"] == 2
    assert "Starting training from iteration 2" in (work / "log.txt").read_text()
    steps = [line.split("\t")[0] for line in (live / "plots/metrics/train/total_loss.tsv").read_text().splitlines()]
    assert steps == ["step", "1", "2"]  # the killed run's last record, then the resumed run's
    (work / "last_checkpoint").write_text("model_final.pth")  # pretend: a finished run's checkpoint is there
    _, timings = dtrain.train_detector(name, tiny_params(), train_json, shapes_dir, work, live, seed=7)
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
    cfg = det.build_cfg("mask_rcnn_R18_demo", tiny_params(), device="cpu")
    with pytest.raises(det.CheckpointError, match="does not fit"):
        det.load_model(cfg, wrong)


def test_configs_build_offline(tmp_path: Path) -> None:
    p = detector_yaml()
    p["opts"]["SOLVER"]["MAX_ITER"] = 3
    p["opts"]["TEST"]["DETECTIONS_PER_IMAGE"] = 50
    p["pretrained"] = {"R50": str(tmp_path / "R-50.pkl"), "R101": None, "X101": "https://example.org/x.pkl",
                       "MNv2": "none"}
    params = DetectorParams.model_validate(p)
    for name, spec in det.DETECTORS.items():
        cfg = det.build_cfg(name, params)
        assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.TEST.DETECTIONS_PER_IMAGE == 50
        assert ("Cascade" in cfg.MODEL.ROI_HEADS.NAME) == name.startswith("cascade")
        if spec.profile == "demo":
            assert cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.WEIGHTS == ""
            assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.MAX_ITER == (250 if "R18" in name else 3)
            assert (cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN) == (600, 300)
        if spec.profile == "demo" and spec.timm_model:
            assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone" and cfg.MODEL.TIMM.NAME == "mobilenetv2_100"
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.TIMM.WEIGHTS == ""  # 'none': random init
            assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
        elif spec.profile == "demo":
            assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.NORM == "GN"
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.SOLVER.WARMUP_ITERS == 50
    r50 = det.build_cfg("mask_rcnn_R50_FPN_3x", params)
    assert r50.MODEL.WEIGHTS == str(tmp_path / "R-50.pkl") and r50.SOLVER.MAX_ITER == 3
    zoo = DetectorParams.model_validate({**p, "opts": {}})
    r101 = det.build_cfg("mask_rcnn_R101_FPN_3x", zoo)
    assert r101.MODEL.WEIGHTS.startswith("detectron2://") and r101.SOLVER.MAX_ITER == 270000  # zoo 3x
    nulls = copy.deepcopy(p)
    nulls["opts"]["SOLVER"].update(MAX_ITER=None, BASE_LR=None)  # null: the zoo's value (a profile's way back)
    r101 = det.build_cfg("mask_rcnn_R101_FPN_3x", DetectorParams.model_validate(nulls))
    assert (r101.SOLVER.MAX_ITER, r101.SOLVER.BASE_LR, r101.SOLVER.IMS_PER_BATCH) == (270000, 0.02, 2)
    x101 = det.build_cfg("mask_rcnn_X101_FPN_3x", params)
    assert x101.MODEL.WEIGHTS == "https://example.org/x.pkl" and x101.MODEL.RESNETS.NUM_GROUPS == 32
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        det.build_cfg("nope", params)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        det.register_json(tmp_path / "missing.json", tmp_path)


@pytest.mark.parametrize(("where", "over", "message"), [
    ("models", {"SOLVER": {"MAX_ITR": 100}},
     "detector.models.mask_rcnn_MNv2_demo: SOLVER.MAX_ITR: not a detectron2 config key"),
    ("models", {"SOLVER": {"MAX_ITER": "a hundred"}},
     "detector.models.mask_rcnn_MNv2_demo: SOLVER.MAX_ITER: expected int as detectron2's 40000, got 'a hundred'"),
    ("opts", {"SOLVER": 3}, "detector.opts: SOLVER: a group of detectron2 keys, not a value"),
    ("opts", {"MODEL": {"ROI_HEADS": {"IOU_THRESHOLDS": "high"}}}, "detector.opts: MODEL.ROI_HEADS.IOU_THRESHOLDS: "
     "expected list"),
])
def test_a_wrong_detectron2_key_or_type_is_named(where: str, over: dict, message: str) -> None:
    p = detector_yaml()
    if where == "models":
        p["models"]["mask_rcnn_MNv2_demo"] = over
    else:
        p["opts"] = {**p["opts"], **over}
    params = DetectorParams.model_validate(p)
    with pytest.raises(det.DetectorConfigError, match=message.replace("(", r"\(")) as e:
        det.check_params(params)
    assert "\n" not in str(e.value)
    with pytest.raises(det.DetectorConfigError, match=message.split(":")[0]):
        det.build_cfg("mask_rcnn_MNv2_demo", params)


def test_detector_params_are_checked() -> None:
    p = detector_yaml()
    det.check_params(DetectorParams.model_validate(p))
    p["opts"]["SOLVER"]["BASE_LR"] = 1  # an int for a float key is that float
    assert det.build_cfg("mask_rcnn_MNv2_demo", DetectorParams.model_validate(p)).SOLVER.BASE_LR == 1.0
    with pytest.raises(det.DetectorConfigError, match="detector.models.mask_rcnn_R152: unknown detector"):
        det.check_params(DetectorParams.model_validate({**p, "models": {"mask_rcnn_R152": {}}}))
    for bad in ({"train": {"max_iter": 100}}, {"demo_arch": {"dept": 18}}, {"pretrained": {"R152": None}},
                {"demo_arch": {"depth": 19}}, {"num_workers": -1}):
        with pytest.raises(ValidationError):
            DetectorParams.model_validate({**p, **bad})
    with pytest.raises(ValidationError):
        EvaluateParams.model_validate({"evaluator": "voc"})


@pytest.mark.slow
def test_stages_cli(shapes_dir: Path, tmp_path: Path) -> None:
    params: dict[str, Any] = {  # the sections the two stages read (the others keep their defaults)
        "data": {"dataset": "shapes"},  # a built-in set: file_names are relative to the prepared folder
        "detector": tiny_params(max_iter=2).model_dump(), "evaluate": {"max_dets": 100},
        "run": {"train_detector": {"num_gpus": 0, "num_threads": 1}, "evaluate": {"num_threads": 1}}}
    params["detector"]["models"]["mask_rcnn_R18_demo"] = {"SOLVER": {"MAX_ITER": 2}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    cell = "gt__mask_rcnn_R18_demo__s3"
    out, live, work = tmp_path / "models" / cell, tmp_path / "live" / cell, tmp_path / "work" / cell
    train = ["--detector", "mask_rcnn_R18_demo", "--masks", "gt", "--seed", "3", "--train-json",
             str(shapes_dir / "train_gt.json"), "--images", str(shapes_dir / "images"), "--out", str(out),
             "--live-dir", str(live), "--work-dir", str(work), "--params", str(pfile)]
    evaluate = ["--model", str(out), "--val-gt", str(shapes_dir / "val_gt.json"), "--predictions",
                str(tmp_path / "predictions.json"), "--metrics", str(tmp_path / "metrics.json"), "--work-dir",
                str(tmp_path / "work_eval"), "--params", str(pfile)]
    for stage, args in (("train_detector", train), ("evaluate", evaluate)):
        r = subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py"), *args], capture_output=True,
                           text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
    assert {f.name for f in out.iterdir()} == {"model_final.pth", "config.yaml", "train_info.json"}
    curve = live / "plots" / "metrics" / "train" / "total_loss.tsv"
    assert curve.read_text().splitlines()[0] == "step\ttotal_loss" and len(curve.read_text().splitlines()) == 2
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert "mask_AP" in m and "box_AP75" in m and not any("time" in k for k in m)
    assert len(json.loads((tmp_path / "predictions.json").read_text())) == m["num_predictions"]
    info = json.loads((out / "train_info.json").read_text())
    assert info["iterations"] == 2 and info["seed"] == 3 and det.load_cfg(out / "config.yaml").SEED == 3
    assert json.loads((work / "timings.json").read_text())["s_per_iter"] > 0 and (work / "log.txt").is_file()
    assert not list(work.glob("model_*.pth"))
    assert json.loads((tmp_path / "work_eval" / "timings.json").read_text())["eval_time_s"] > 0
    # Missing pseudo-labels: a clear error naming the file; a misspelt detectron2 key: one line, before training.
    missing = [*train[:3], "nolabeler", *train[4:7], str(tmp_path / "pseudo.json"), *train[8:]]
    r = subprocess.run([sys.executable, str(REPO / "stages/train_detector.py"), *missing], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode != 0 and "pseudo.json: training JSON not found" in r.stderr
    params["detector"]["models"]["mask_rcnn_R18_demo"] = {"SOLVER": {"MAX_ITR": 2}}
    pfile.write_text(yaml.safe_dump(params))
    r = subprocess.run([sys.executable, str(REPO / "stages/train_detector.py"), *train], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"error: {pfile}: detector.models.mask_rcnn_R18_demo: SOLVER.MAX_ITR: not a detectron2 config key")
    # Corrupt model: evaluate names the checkpoint.
    (out / "model_final.pth").write_bytes(b"junk")
    r = subprocess.run([sys.executable, str(REPO / "stages/evaluate.py"), *evaluate], capture_output=True,
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
    p = tiny_params(max_iter=LEARN_ITERS).model_dump()
    p["pretrained"]["MNv2"] = str(mobilenet_weights)
    p["opts"]["SOLVER"].update(WARMUP_ITERS=10, CHECKPOINT_PERIOD=LEARN_ITERS, BASE_LR=0.002)
    train_json = shapes_dir / "train_gt.json"
    trained, _ = dtrain.train_detector("mask_rcnn_MNv2_demo", DetectorParams.model_validate(p), train_json,
                                       shapes_dir, tmp_path / "work", num_threads=2)
    trained.write(tmp_path / "out")
    result, _ = evaluate_detector(trained.cfg, tmp_path / "out" / "model_final.pth", train_json, shapes_dir,
                                  EvaluateParams(), num_threads=2)
    assert det.load_cfg(tmp_path / "out" / "config.yaml").MODEL.TIMM.WEIGHTS == str(mobilenet_weights)
    box_ap = result.metrics["box_AP"]
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
    train = shapes_dir / "train_copy_for_fingerprint.json"
    train.write_bytes((shapes_dir / "train_gt.json").read_bytes())
    cfg = det.build_cfg("mask_rcnn_R18_demo", tiny_params(max_iter=2), train_json=train, image_root=shapes_dir)
    before = dtrain.run_fingerprint(cfg, train)
    assert dtrain.run_fingerprint(cfg, train) == before
    data = json.loads(train.read_text())
    data["annotations"] = data["annotations"][:-1]
    train.write_text(json.dumps(data))
    assert dtrain.run_fingerprint(cfg, train) != before


def test_paper_schedule_scales_to_the_world_size() -> None:
    """The zoo 3x schedule (8 GPUs x 2 images) on N GPUs: same images per GPU and epochs (detectron2's
    auto_scale_workers, from SOLVER.REFERENCE_WORLD_SIZE)."""
    p = detector_yaml()
    p["opts"] = {"SOLVER": {"IMS_PER_BATCH": 16, "CHECKPOINT_PERIOD": 5000, "REFERENCE_WORLD_SIZE": 8}}
    p["pretrained"]["R50"] = "none"
    cfg = det.build_cfg("mask_rcnn_R50_FPN_3x", DetectorParams.model_validate(p))
    assert cfg.MODEL.WEIGHTS == ""  # `none`: random init, nothing downloaded
    one = det.scale_to_world_size(cfg, 1)
    assert (one.SOLVER.IMS_PER_BATCH, one.SOLVER.BASE_LR, one.SOLVER.MAX_ITER) == (2, 0.0025, 8 * 270000)
    assert tuple(one.SOLVER.STEPS) == (8 * 210000, 8 * 250000) and one.SOLVER.WARMUP_ITERS == 8 * 1000
    assert det.scale_to_world_size(one, 1) == one  # the trainer's own call is then a no-op
    eight = det.scale_to_world_size(cfg, 8)
    assert (eight.SOLVER.IMS_PER_BATCH, eight.SOLVER.BASE_LR, eight.SOLVER.MAX_ITER) == (16, 0.02, 270000)
    sixteen = det.scale_to_world_size(cfg, 16)
    assert (sixteen.SOLVER.IMS_PER_BATCH, sixteen.SOLVER.MAX_ITER) == (32, 135000)
    p["pretrained"]["R50"] = None
    assert det.build_cfg("mask_rcnn_R50_FPN_3x", DetectorParams.model_validate(p)).MODEL.WEIGHTS.startswith(
        "detectron2://")
    p["opts"] = {"SOLVER": {"IMS_PER_BATCH": 12, "REFERENCE_WORLD_SIZE": 8}}
    with pytest.raises(ValueError, match="IMS_PER_BATCH 12 is not divisible by SOLVER.REFERENCE_WORLD_SIZE 8"):
        det.scale_to_world_size(det.build_cfg("mask_rcnn_R50_FPN_3x", DetectorParams.model_validate(p)), 1)
