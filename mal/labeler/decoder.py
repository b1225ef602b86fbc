"""MAL's attention decoder (YOLACT-like): mask logits = per-pixel dot product of an instance vector q and
pixel features V, with the COCO size-bucket rescale of the encoder grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAX_AREA = 32.0**2  # COCO: small < 32^2 <= medium < 96^2 <= large
LARGE_MIN_AREA = 96.0**2
BUCKET_SCALES = (0.5, 1.0, 2.0)


def size_bucket(box_areas: torch.Tensor) -> torch.Tensor:
    """COCO size bucket of each box area: 0 small (< 32^2), 1 medium ([32^2, 96^2)), 2 large (>= 96^2).

    Unlike the official MAL code, areas exactly 32^2 or 96^2 do fall in a bucket (medium / large).
    ``box_areas``: ``B`` float -> ``B`` long.
    """
    areas = box_areas.reshape(-1)
    bucket = torch.ones_like(areas, dtype=torch.long)
    bucket[areas < SMALL_MAX_AREA] = 0
    bucket[areas >= LARGE_MIN_AREA] = 2
    return bucket


class AttentionDecoder(nn.Module):
    """``forward(grid: B x C x h x w, box_areas: B) -> logits B x 1 x M x M`` (``M = mask_size``).

    q: global average pool of the grid -> Linear(C, D) -> ReLU -> Linear(D, D).
    V: (optional bucket rescale of the grid by 0.5 / 1 / 2) -> 3 x [conv3x3(D) + ReLU] -> 2x bilinear
    upsample -> conv3x3(D) + ReLU. Logits = q . V per pixel, bilinearly resized to ``M x M``.
    """

    def __init__(self, in_channels: int, mask_size: int, dim: int = 256, bucket_rescale: bool = True):
        super().__init__()
        self.mask_size = int(mask_size)
        self.bucket_rescale = bool(bucket_rescale)
        self.query = nn.Sequential(nn.Linear(in_channels, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.convs = nn.ModuleList(
            [nn.Conv2d(in_channels if i == 0 else dim, dim, 3, padding=1) for i in range(4)]
        )

    def pixel_features(self, grid: torch.Tensor) -> torch.Tensor:
        """``B x C x h x w -> B x D x 2h x 2w``."""
        v = grid
        for i, conv in enumerate(self.convs):
            if i == len(self.convs) - 1:
                v = F.interpolate(v, scale_factor=2.0, mode="bilinear", align_corners=False)
            v = F.relu(conv(v))
        return v

    def _logits(self, grid: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
        if scale != 1.0:
            h, w = grid.shape[-2:]
            size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
            grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
        v = self.pixel_features(grid)
        logits = torch.einsum("bd,bdhw->bhw", q, v).unsqueeze(1)
        if logits.shape[-1] != self.mask_size or logits.shape[-2] != self.mask_size:
            logits = F.interpolate(
                logits, size=(self.mask_size, self.mask_size), mode="bilinear", align_corners=False
            )
        return logits

    def forward(self, grid: torch.Tensor, box_areas: torch.Tensor | None = None) -> torch.Tensor:
        """``box_areas``: ``B`` float, best on the host (as the loader gives them): the buckets are computed
        there, so the step needs no device-to-host sync."""
        q = self.query(grid.mean(dim=(2, 3)))
        if not self.bucket_rescale or box_areas is None:
            return self._logits(grid, q, 1.0)
        buckets = size_bucket(box_areas.detach().cpu())
        present = sorted(set(buckets.tolist()))
        if len(present) == 1:
            return self._logits(grid, q, BUCKET_SCALES[present[0]])
        out = grid.new_empty((grid.shape[0], 1, self.mask_size, self.mask_size))
        for b in present:
            idx = (buckets == b).nonzero(as_tuple=True)[0].to(grid.device, non_blocking=True)
            out[idx] = self._logits(grid[idx], q[idx], BUCKET_SCALES[b]).to(out.dtype)
        return out
