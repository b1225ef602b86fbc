"""The Mask Auto-Labeler network (encoder + attention decoder), its checkpoints and input normalisation.

Interface used by the pseudo-label stage (mal/pseudo/label.py) and the benchmarks:
``build_labeler(cfg)``, ``MaskLabeler.forward(images, box_areas)``, ``save_checkpoint``, ``load_labeler``,
``normalize`` (with the cfg's ``norm_mean`` / ``norm_std``: :func:`input_norm`), ``IMAGENET_MEAN`` / ``IMAGENET_STD``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mal.common.files import atomic_path
from mal.config.labeler import DEFAULT_MASK_THRESHOLD, LabelerModelParams
from mal.config.load import validate
from mal.labeler.decoder import AttentionDecoder
from mal.labeler.encoder import Encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# DEFAULT_MASK_THRESHOLD (mal.config.labeler): the threshold of checkpoints that record none (trained before
# ``labeler.train.mask_threshold`` existed); the paper uses 0.1, the demo's val sweep docs/pseudo_labels.md.

NORM_KEYS = ("norm_mean", "norm_std")


def resolve_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A model cfg (``labeler.models.<name>`` without ``train``, or what a checkpoint stores) validated by
    :class:`~mal.config.labeler.LabelerModelParams` (defaults filled, ``mask_size`` resolved): a new plain dict."""
    cfg = {k: v for k, v in (cfg or {}).items() if k != "train"}
    return validate(LabelerModelParams, cfg, "labeler model cfg").model_cfg()


def input_norm(cfg: dict[str, Any]) -> tuple[list[float], list[float]]:
    """``(mean, std)`` a labeler cfg's inputs are normalised with (ImageNet's when it records none)."""
    mean, std = cfg.get("norm_mean"), cfg.get("norm_std")
    return list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD)


class MaskLabeler(nn.Module):
    """Box crop -> mask logits.

    ``forward(images: B x 3 x S x S float (normalised with :func:`input_norm` of ``cfg``), box_areas: B float
    (box area in original image pixels)) -> logits B x 1 x M x M`` with ``M = mask_size`` (``S / 4`` by default).
    """

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = resolve_cfg(cfg)
        kwargs = dict(self.cfg["encoder_args"])
        if self.cfg["drop_path_rate"] > 0:
            kwargs["drop_path_rate"] = self.cfg["drop_path_rate"]
        self.encoder = Encoder(self.cfg["encoder"], self.cfg["crop_size"], self.cfg["pretrained"], **kwargs)
        if self.cfg["pretrained"] not in (False, None, ""):  # the loaded weights' own mean/std
            for key, field in zip(NORM_KEYS, ("mean", "std"), strict=True):
                if self.cfg[key] is None:
                    self.cfg[key] = [float(x) for x in self.encoder.data_config[field]]
        self.cfg["norm_mean"], self.cfg["norm_std"] = input_norm(self.cfg)  # recorded in checkpoints
        self.decoder = AttentionDecoder(
            self.encoder.out_channels,
            self.cfg["mask_size"],
            self.cfg["decoder_dim"],
            self.cfg["bucket_rescale"],
        )

    def forward(self, images: torch.Tensor, box_areas: torch.Tensor | None = None) -> torch.Tensor:
        s = self.cfg["crop_size"]
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(f"MaskLabeler expects B x 3 x {s} x {s} images, got {tuple(images.shape)}")
        return self.decoder(self.encoder(images), box_areas)


def build_labeler(cfg: dict[str, Any]) -> MaskLabeler:
    """Build a labeler from a model cfg (``labeler.models.<name>``: :class:`~mal.config.labeler.LabelerModelParams`)."""
    return MaskLabeler(cfg)


def normalize(
    batch_uint8_nhwc: np.ndarray | torch.Tensor,
    mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
    std: tuple[float, ...] | list[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 ``B x H x W x 3`` (or ``H x W x 3``) RGB -> float32 ``B x 3 x H x W``, ``(x/255 - mean) / std``.

    The one input normalisation (training crops, validation, labelling): pass ``input_norm(cfg)``.
    """
    t = torch.as_tensor(batch_uint8_nhwc)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"normalize expects B x H x W x 3 uint8, got shape {tuple(t.shape)}")
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
    return (t - m) / s


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    inner = module.module if hasattr(module, "module") else module  # unwrap DDP
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def save_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module | None,
    cfg: dict[str, Any],
    extra: dict | None = None,
) -> None:
    """Write ``{"student", "teacher", "cfg", "epoch", **extra}`` atomically (:func:`~mal.common.files.atomic_path`).

    ``extra`` must hold only what ``torch.load(weights_only=True)`` accepts (tensors, numbers, strings,
    lists, tuples, dicts).
    """
    ckpt: dict[str, Any] = {"epoch": 0, **(extra or {})}
    ckpt["student"] = _plain_state(student)
    ckpt["teacher"] = _plain_state(teacher) if teacher is not None else None
    ckpt["cfg"] = resolve_cfg(cfg)
    inner_cfg = getattr(student.module if hasattr(student, "module") else student, "cfg", {})
    for key in NORM_KEYS:  # params leave them null: record what the built model resolved
        if ckpt["cfg"][key] is None and inner_cfg.get(key) is not None:
            ckpt["cfg"][key] = list(inner_cfg[key])
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a ``ValueError`` naming the path for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: labeler checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt/foreign file
        raise ValueError(f"{path}: not a readable labeler checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "student" not in ckpt:
        raise ValueError(f"{path}: not a labeler checkpoint (needs keys 'student' and 'cfg')")
    return ckpt


def checkpoint_mask_threshold(path: str | Path) -> float:
    """The mask threshold a checkpoint was trained to be used at (``DEFAULT_MASK_THRESHOLD`` if it has none)."""
    value = read_checkpoint(path).get("mask_threshold")
    return DEFAULT_MASK_THRESHOLD if value is None else float(value)


def load_labeler(
    path: str | Path, which: str = "student", map_location: str | torch.device = "cpu"
) -> tuple[MaskLabeler, dict[str, Any]]:
    """Load a trained labeler (eval mode) and its cfg. ``which``: "student" or "teacher".

    The encoder is built without pretrained weights (they are in the checkpoint).
    """
    if which not in ("student", "teacher"):
        raise ValueError(f"which must be 'student' or 'teacher', got {which!r}")
    ckpt = read_checkpoint(path, map_location)
    state = ckpt.get(which)
    if state is None:
        raise ValueError(f"{path}: checkpoint has no '{which}' weights")
    cfg = resolve_cfg(ckpt["cfg"])
    cfg["norm_mean"], cfg["norm_std"] = input_norm(cfg)  # ImageNet's for checkpoints that record none
    model = MaskLabeler({**cfg, "pretrained": False})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: '{which}' weights do not match cfg {cfg['encoder']}: {e}") from e
    model.cfg = cfg
    model.to(map_location).eval()
    return model, cfg
