"""ImageNet ConvNet checkpoints -> timm state dicts (explicit key maps, checked by a strict load).

Both sources have timm's block structure (depthwise-separable first block, then inverted residuals, no SE in
EfficientNet-Lite): block ``k`` of the flat source list is timm's ``blocks.<stage>.<index>``, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

# lukemelas EfficientNet-PyTorch names (`_blocks.<k>.<part>`) -> timm efficientnet parts.
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                  "_fc": "classifier"}
# torchvision MobileNetV2 `features.<k>.conv.<i>[.<j>]` -> timm parts (first block has no expansion).
_TV_DS = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_TV_IR = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
          "conv.2": "conv_pwl", "conv.3": "bn3"}


def _timm_blocks(model: nn.Module) -> list[str]:
    """``["blocks.0.0", "blocks.1.0", ...]``: timm's blocks in forward order (flat source index order)."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def _split(key: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> ``("a.b", "weight")``."""
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _convert(
    sd: dict[str, torch.Tensor], model: nn.Module, block_re: str, top: dict[str, str],
    block_map: Callable[[int, str, dict[str, torch.Tensor]], str],
) -> dict[str, torch.Tensor]:
    blocks = _timm_blocks(model)
    out = {}
    for key, v in sd.items():
        module, leaf = _split(key)
        m = re.match(block_re, module)
        if m:
            k = int(m[1])
            if k >= len(blocks):
                raise ValueError(f"{key}: block {k} but the timm model has {len(blocks)} blocks")
            out[f"{blocks[k]}.{block_map(k, m[2], sd)}.{leaf}"] = v
        elif module in top:
            out[f"{top[module]}.{leaf}"] = v
        else:
            raise ValueError(f"{key}: no timm counterpart")
    return out


def lukemelas_efficientnet_to_timm(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """lukemelas-named EfficientNet(-Lite) state dict -> ``model``'s (timm ``efficientnet_*``) names."""

    def part(k: int, name: str, sd: dict[str, torch.Tensor]) -> str:
        table = _LUKEMELAS_IR if f"_blocks.{k}._expand_conv.weight" in sd else _LUKEMELAS_DS
        return table[name]

    return _convert(sd, model, r"^_blocks\.(\d+)\.(\w+)$", _LUKEMELAS_TOP, part)


def torchvision_mobilenetv2_to_timm(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision ``mobilenet_v2`` state dict -> timm ``mobilenetv2_100`` names."""
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("features."))
    top = {"features.0.0": "conv_stem", "features.0.1": "bn1", f"features.{last}.0": "conv_head",
           f"features.{last}.1": "bn2", "classifier.1": "classifier"}

    def part(k: int, name: str, sd: dict[str, torch.Tensor]) -> str:
        return (_TV_DS if k == 0 else _TV_IR)[name]

    # features.1 .. features.<last-1> are the blocks; shift to a 0-based flat index.
    shifted = {}
    for key, v in sd.items():
        m = re.match(r"^features\.(\d+)\.(conv\..+)$", key)
        if m and 0 < int(m[1]) < last:
            shifted[f"block.{int(m[1]) - 1}.{m[2]}"] = v
        else:
            shifted[key] = v
    return _convert(shifted, model, r"^block\.(\d+)\.(conv(?:\.\d+)+)$", top, part)


def strict_load(model: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` plus a tensor-count check; errors name ``what``."""
    expected = model.state_dict()
    if len(sd) != len(expected):
        raise ValueError(f"{what}: {len(sd)} tensors converted, timm model has {len(expected)}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what}: converted weights do not fit the timm model: {e}") from e
