"""Pretrained encoder weights from pinned packages (mal/weights, stages/weights.py) and their use in the labeler."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from matplotlib import cbook
from PIL import Image
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

from mal.common.files import file_sha256
from mal.labeler.model import IMAGENET_MEAN, build_labeler, load_labeler, normalize, save_checkpoint
from mal.weights import build, convnets, onnx_vit, sources
from mal.weights.sources import WeightsSourceError
from tests.conftest import REPO, tool_env

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper photo (ships with matplotlib)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The ViT and EfficientNet-Lite0 files, built once for the module."""
    out = tmp_path_factory.mktemp("weights")
    for name in ("dinov2_vits14_imgfocus", "efficientnet_lite0"):
        build.build_encoder(name, out)
    return out


def test_sha256_mismatch_names_package_file_and_hashes(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_weights_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the package code must not be imported')\n")
    (pkg / "models" / "w.pth").write_bytes(b"not the pinned bytes")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = replace(sources.SOURCES["efficientnet_lite0"], package="fake_weights_pkg", distribution="fake-weights-pkg",
                    relpath="models/w.pth")
    monkeypatch.setitem(sources.SOURCES, "efficientnet_lite0", entry)
    with pytest.raises(WeightsSourceError) as e:
        build.build_encoder("efficientnet_lite0", tmp_path / "out")
    msg = str(e.value)
    actual = file_sha256(pkg / "models" / "w.pth")
    assert "fake-weights-pkg" in msg and str(pkg / "models" / "w.pth") in msg
    assert entry.sha256 in msg and actual in msg
    assert not (tmp_path / "out" / "efficientnet_lite0.safetensors").exists()


def test_missing_package_is_a_clear_error(monkeypatch):
    entry = replace(sources.SOURCES["efficientnet_lite0"], package="no_such_pkg_xyz", distribution="no-such-pkg")
    with pytest.raises(WeightsSourceError, match="no-such-pkg.*not installed"):
        sources.verified_path(entry)


def test_installed_package_files_match_the_recorded_sha256():
    for src in sources.SOURCES.values():
        assert file_sha256(sources.locate(src)) == src.sha256, src.name


def test_vit_matches_onnxruntime_backbone_output():
    src = sources.get_source("dinov2_vits14_imgfocus")
    graph = onnx_vit.load_graph(sources.verified_path(src))
    state = onnx_vit.onnx_dinov2_to_timm(graph)
    assert len(state) == 4 + 12 * 14 + 2  # cls, pos, patch w/b; 14 per block; final norm
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    diff = build.onnx_check(graph, state, src.timm_model)
    print(f"timm vs onnxruntime at 224 px: max abs diff {diff:.2e}")  # measured: 2.3e-05
    assert diff < 1e-3
    # The check discriminates: timm's default (antialiased) pos-embed resample is far off the export's.
    aa = dict(state, pos_embed=resample_abs_pos_embed(state["pos_embed"], [16, 16], num_prefix_tokens=1))
    assert build.onnx_check(graph, aa, src.timm_model) > 0.05


def _grace_hopper(mean: list[float], std: list[float]) -> torch.Tensor:
    """``1 x 3 x 224 x 224``: the centre square, bicubic-resized, normalised with ``mean``/``std``."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        im = Image.open(f).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224), Image.BICUBIC)
    return normalize(np.array(im), mean, std)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2_100"])
def test_convnets_load_strict_and_classify_imagenet(name):
    src = sources.get_source(name)
    raw = torch.load(sources.verified_path(src), map_location="cpu", weights_only=True)
    model = timm.create_model(src.timm_model, pretrained=False).eval()
    fn = {"efficientnet_lite0": convnets.lukemelas_efficientnet_to_timm,
          "mobilenetv2_100": convnets.torchvision_mobilenetv2_to_timm}[name]
    state = fn(raw, model)
    convnets.strict_load(model, state, name)
    assert len(state) == len(raw) == len(model.state_dict())
    cfg = timm.data.resolve_model_data_config(model)
    with torch.inference_mode():
        probs = model(_grace_hopper(cfg["mean"], cfg["std"])).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs[MILITARY_UNIFORM]) > 0.3


def test_efficientnet_key_map_spot_checks():
    raw = torch.load(sources.verified_path(sources.get_source("efficientnet_lite0")), map_location="cpu",
                     weights_only=True)
    state = convnets.lukemelas_efficientnet_to_timm(raw, timm.create_model("tf_efficientnet_lite0"))
    pairs = {"_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
             "_blocks.1._bn0.running_var": "blocks.1.0.bn1.running_var",
             "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight", "_bn1.weight": "bn2.weight",
             "_fc.weight": "classifier.weight"}
    for src, dst in pairs.items():
        assert state[dst] is raw[src]


def test_vit_file_loads_into_labeler_with_unaliased_pos_embed(built):
    path = built / "dinov2_vits14_imgfocus.safetensors"
    meta = json.loads((built / "dinov2_vits14_imgfocus.json").read_text())
    assert meta["timm_model"] == "vit_small_patch14_dinov2" and meta["sha256"] == file_sha256(path)
    m = build_labeler({"encoder": "vit_small_patch14_dinov2", "pretrained": str(path), "crop_size": 112,
                       "decoder_dim": 16})
    pe = load_file(str(path))["pos_embed"]
    got = m.encoder.model.pos_embed.detach()
    want = resample_abs_pos_embed(pe, [8, 8], num_prefix_tokens=1, antialias=False)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, resample_abs_pos_embed(pe, [8, 8], num_prefix_tokens=1), atol=1e-2)
    assert torch.equal(m.encoder.model.blocks[3].ls1.gamma.detach(), load_file(str(path))["blocks.3.ls1.gamma"])
    assert m.cfg["norm_mean"] == meta["data_config"]["mean"]


def test_normalisation_comes_from_the_pretrained_config_and_the_checkpoint(built, tmp_path):
    cfg = {"encoder": "tf_efficientnet_lite0", "pretrained": str(built / "efficientnet_lite0.safetensors"),
           "crop_size": 64, "decoder_dim": 16}
    m = build_labeler(cfg)
    assert m.cfg["norm_mean"] == [0.5, 0.5, 0.5] == m.cfg["norm_std"]  # TF-Lite's, not ImageNet's
    save_checkpoint(tmp_path / "c.pt", m, None, cfg)  # params cfg (null norm): the model's is recorded
    loaded, lcfg = load_labeler(tmp_path / "c.pt")
    assert lcfg["norm_mean"] == [0.5, 0.5, 0.5] == loaded.cfg["norm_std"]
    # From scratch, and checkpoints that record none: ImageNet, as before.
    assert build_labeler({"encoder": "vit_tiny_patch16_224", "crop_size": 32, "decoder_dim": 8}).cfg["norm_mean"] == list(
        IMAGENET_MEAN)
    old = torch.load(tmp_path / "c.pt", weights_only=True)
    old["cfg"] = {k: v for k, v in old["cfg"].items() if k not in ("norm_mean", "norm_std")}
    torch.save(old, tmp_path / "old.pt")
    assert load_labeler(tmp_path / "old.pt")[1]["norm_mean"] == list(IMAGENET_MEAN)


def test_predictor_and_dataset_use_the_checkpoint_normalisation(built, tmp_path):
    from mal.labeler.data import BoxCropDataset
    from mal.pseudo.label import Predictor

    cfg = {"encoder": "tf_efficientnet_lite0", "pretrained": str(built / "efficientnet_lite0.safetensors"),
           "crop_size": 64, "decoder_dim": 16}
    m = build_labeler(cfg).eval()
    save_checkpoint(tmp_path / "c.pt", m, None, m.cfg)
    crops = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    areas = np.array([100.0, 900.0], np.float32)
    with torch.inference_mode():
        want = torch.sigmoid(m(normalize(crops, [0.5] * 3, [0.5] * 3), torch.from_numpy(areas)))[:, 0].numpy()
    got = Predictor(tmp_path / "c.pt", device="cpu")(crops, areas)
    assert np.allclose(got, want, atol=1e-5)
    ds = BoxCropDataset([], 64, 16, train=False, norm=([0.5] * 3, [0.5] * 3))
    assert ds.norm == ([0.5] * 3, [0.5] * 3)


@pytest.mark.slow
def test_stage_builds_then_is_a_no_op(tmp_path):
    out = tmp_path / "w"
    params = tmp_path / "params.yaml"
    params.write_text("weights:\n  encoders: [dinov2_vits14_imgfocus, efficientnet_lite0]\n")
    cmd = [sys.executable, str(REPO / "stages" / "weights.py"), "--out", str(out), "--params", str(params)]
    env = tool_env(PYTHONPATH=str(REPO))
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("(built)") == 2 and "max abs diff" in first.stdout
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["dinov2_vits14_imgfocus.json", "dinov2_vits14_imgfocus.safetensors",
                                       "efficientnet_lite0.json", "efficientnet_lite0.safetensors"]
    before = {f.name: (f.stat().st_mtime_ns, file_sha256(f)) for f in files}
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0 and second.stdout.count("(up to date)") == 2
    assert {f.name: (f.stat().st_mtime_ns, file_sha256(f)) for f in sorted(out.iterdir())} == before
    meta = json.loads((out / "efficientnet_lite0.json").read_text())
    assert meta["source"]["sha256"] == sources.SOURCES["efficientnet_lite0"].sha256
    assert meta["data_config"]["mean"] == [0.5, 0.5, 0.5] and meta["tensors"] == 296


def test_stage_fine_tunes_a_pretrained_convnet_with_its_own_train_params(built, tmp_path):
    """`stages/train_labeler.py` on a labeler whose encoder file comes from the weights stage and whose own
    ``train`` mapping overrides ``labeler.train`` (the demo's pretrained labelers)."""
    from tests.conftest import load_stage, tiny_shapes_records

    data_dir, _, _ = tiny_shapes_records(tmp_path / "data", num_val=1)
    model = {"encoder": "tf_efficientnet_lite0", "pretrained": str(built / "efficientnet_lite0.safetensors"),
             "crop_size": 32, "decoder_dim": 16, "encoder_args": {"features_only": True, "out_indices": [3]},
             "train": {"epochs": 1, "lr_per_sample": 1e-5}}
    params = {"seed": 0,
              "data": {"dataset": "shapes", "min_train_box_area": 16, "min_train_box_side": 2},
              "labeler": {"train": {"epochs": 5, "batch_size": 2, "lr_per_sample": 1e-4, "crf_iterations": 2},
                          "models": {"effnet": model}},
              "run": {"train_labeler": {"num_threads": 1}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_stage("train_labeler").main([
        "--params", str(tmp_path / "params.yaml"), "--labeler", "effnet",
        "--train-boxes", str(data_dir / "train_boxes.json"), "--val-gt", str(data_dir / "val_gt.json"),
        "--checkpoint", str(tmp_path / "models" / "effnet" / "checkpoint.pt"),
        "--metrics", str(tmp_path / "metrics" / "effnet.json"), "--plots", str(tmp_path / "metrics" / "effnet_plots"),
        "--work-dir", str(tmp_path / "work" / "effnet")]) == 0
    metrics = json.loads((tmp_path / "metrics" / "effnet.json").read_text())
    assert metrics["epochs"] == 1 and metrics["steps"] >= 1  # the model's epochs, not labeler.train's 5
    ckpt = torch.load(tmp_path / "models" / "effnet" / "checkpoint.pt", weights_only=True)
    assert "train" not in ckpt["cfg"] and ckpt["cfg"]["pretrained"] == model["pretrained"]
    mean = json.loads((built / "efficientnet_lite0.json").read_text())["data_config"]["mean"]
    assert ckpt["cfg"]["norm_mean"] == pytest.approx(mean)  # the file's pretrained config, in the checkpoint
