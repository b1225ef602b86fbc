"""Build ``<out_dir>/<name>.safetensors`` (timm names) + ``<name>.json`` from a registered source.

Idempotent: an existing pair whose sidecar records the same source sha256 and format version, and whose
``.safetensors`` bytes hash to the recorded value, is left untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from mal.common.files import atomic_path, file_sha256, write_json_atomic
from mal.weights import convnets, onnx_vit
from mal.weights.sources import Source, get_source, package_version, verified_path

FORMAT_VERSION = 1  # bump when a converter's output changes
ONNX_CHECK_SIZE = 224  # the ONNX graph's fixed input size
ONNX_CHECK_TOL = 1e-3


def resample_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``pos_embed`` resampled to ``model``'s grid as DINOv2 and the ONNX export do (bicubic, no antialias)."""
    from timm.layers import resample_abs_pos_embed

    pe = state["pos_embed"]
    if pe.shape == model.pos_embed.shape:
        return state
    new = resample_abs_pos_embed(pe, list(model.patch_embed.grid_size), num_prefix_tokens=model.num_prefix_tokens,
                                 interpolation="bicubic", antialias=False)
    return {**state, "pos_embed": new}


def onnx_check(graph: Any, state: dict[str, torch.Tensor], timm_model: str, size: int = ONNX_CHECK_SIZE) -> float:
    """Max abs difference of timm's ``forward_features`` and onnxruntime's backbone output, ``2 x 3 x S x S``."""
    model = timm.create_model(timm_model, pretrained=False, num_classes=0, img_size=size).eval()
    model.load_state_dict(resample_pos_embed(state, model), strict=True)
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    ref = onnx_vit.onnx_backbone_tokens(graph, x)
    with torch.inference_mode():
        out = model.forward_features(torch.from_numpy(x)).numpy()
    return float(np.abs(out - ref).max())


def convert(src: Source, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(timm state dict, extra sidecar fields)``; strict-loaded into the timm model before returning."""
    extra: dict[str, Any] = {}
    if src.converter == "onnx_vit":
        graph = onnx_vit.load_graph(path)
        state = onnx_vit.onnx_dinov2_to_timm(graph)
        model = timm.create_model(src.timm_model, pretrained=False, num_classes=0)
        diff = onnx_check(graph, state, src.timm_model)
        print(f"{src.name}: timm vs onnxruntime backbone output at {ONNX_CHECK_SIZE} px: max abs diff {diff:.2e}")
        if not diff < ONNX_CHECK_TOL:
            raise ValueError(f"{src.name}: converted ViT differs from the ONNX graph by {diff:.3g} (> {ONNX_CHECK_TOL})")
        extra["onnx_check"] = {"img_size": ONNX_CHECK_SIZE, "tolerance": ONNX_CHECK_TOL, "passed": True}
        extra["pos_embed_resample"] = {"interpolation": "bicubic", "antialias": False}
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        model = timm.create_model(src.timm_model, pretrained=False)
        fn = {"efficientnet_lukemelas": convnets.lukemelas_efficientnet_to_timm,
              "mobilenetv2_torchvision": convnets.torchvision_mobilenetv2_to_timm}[src.converter]
        state = fn(raw, model)
    convnets.strict_load(model, state, src.name)
    cfg = timm.data.resolve_model_data_config(model)
    extra["data_config"] = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "input_size": list(cfg["input_size"]),
                            "interpolation": cfg["interpolation"]}
    return {k: v.contiguous() for k, v in state.items()}, extra


def _up_to_date(out: Path, meta_path: Path, src: Source) -> bool:
    if not (out.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("source", {}).get("sha256") == src.sha256 and meta.get("format_version") == FORMAT_VERSION
            and meta.get("timm_model") == src.timm_model and meta.get("sha256") == file_sha256(out))


def build_encoder(name: str, out_dir: str | Path) -> tuple[Path, bool]:
    """Write ``<out_dir>/<name>.safetensors`` + ``.json``; returns ``(path, built)`` (False: already up to date)."""
    src = get_source(name)
    out_dir = Path(out_dir)
    out, meta_path = out_dir / f"{name}.safetensors", out_dir / f"{name}.json"
    if _up_to_date(out, meta_path, src):
        return out, False
    path = verified_path(src)  # raises naming package, file and both hashes on a mismatch
    state, extra = convert(src, path)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"source": f"{src.distribution}=={package_version(src)}/{src.relpath}"})
    meta = {
        "name": name, "timm_model": src.timm_model, "format_version": FORMAT_VERSION,
        "source": {"package": src.distribution, "version": package_version(src), "file": src.relpath,
                   "sha256": src.sha256, "license": src.license, "note": src.note},
        "tensors": len(state), "sha256": file_sha256(out), **extra,
    }
    write_json_atomic(meta_path, meta, indent=2)
    return out, True
