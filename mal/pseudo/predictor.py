"""A labeler on a device as the engine calls it: uint8 crops + box areas in, mask probabilities out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mal.config.pseudo import Which


class ModelPredictor:
    """``__call__(crops uint8 B x S x S x 3, box_areas B) -> probs B x M x M`` (float32 numpy).

    ``models``: one labeler, or several whose probabilities are averaged (``which: average``); ``norm``: their
    input ``(mean, std)`` (:func:`mal.labeler.model.input_norm`); ``flip_tta`` also averages the horizontally
    flipped crop's prediction; ``amp``: fp16 autocast on CUDA. The models are put in eval mode. The labeler's
    validation wraps the model it trains in one; :class:`Predictor` loads a checkpoint's.
    """

    def __init__(self, models: Sequence[nn.Module], crop_size: int, norm: tuple[Sequence[float], Sequence[float]],
                 device: str | torch.device = "cpu", flip_tta: bool = False, amp: bool = True) -> None:
        self.models = [m.eval() for m in models]
        self.crop_size, self.norm = int(crop_size), norm
        self.device, self.flip_tta, self.amp = torch.device(device), bool(flip_tta), bool(amp)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        from mal.labeler.model import normalize

        x = torch.from_numpy(crops).to(self.device, non_blocking=True)  # uint8 over the bus
        x = normalize(x, *self.norm)
        areas = torch.as_tensor(box_areas, dtype=torch.float32, device=self.device)
        inputs = [(x, False)] + ([(x.flip(-1), True)] if self.flip_tta else [])
        total = None
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp and self.device.type == "cuda"):
            for model in self.models:
                for inp, flipped in inputs:
                    p = torch.sigmoid(model(inp, areas).float())
                    p = p.flip(-1) if flipped else p
                    total = p if total is None else total + p
        probs = total / (len(self.models) * len(inputs))
        return probs[:, 0].cpu().numpy()


class Predictor(ModelPredictor):
    """The labeler(s) of ``checkpoint`` on ``device`` (``auto`` | ``cpu`` | ``cuda[:N]``; a CUDA request
    without CUDA raises, naming ``run.pseudo_label.device``); ``which: average`` loads student and teacher."""

    def __init__(self, checkpoint: str | Path, which: Which = "student", flip_tta: bool = False,
                 device: str = "auto") -> None:
        from mal.common.devices import resolve_device
        from mal.labeler.model import input_norm, load_labeler

        dev = resolve_device(device, "run.pseudo_label.device")
        names = ["student", "teacher"] if which == "average" else [which]
        models = [load_labeler(checkpoint, n, map_location=dev)[0] for n in names]
        self.cfg = models[0].cfg
        super().__init__(models, int(self.cfg["crop_size"]), input_norm(self.cfg), dev, flip_tta)
