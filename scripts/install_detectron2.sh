#!/usr/bin/env bash
# Install detectron2 (pure-Python, CPU-capable) into the environment of PYTHON. Idempotent, ~3 s.
#
#   bash scripts/install_detectron2.sh .venv/bin/python
#
# Route (docs/detector.md, "Installing detectron2"): detectron2 is not on PyPI. `sal-detectron2==0.7.2` is
# upstream detectron2 (~2024-08) as a cp310 wheel whose only binary is the cp310 `_C` extension. We unpack it
# into <prefix>/detectron2-pure, delete `_C*.so`, the top-level `tools/` package and the dist-info (it pins
# numpy<2), add `detectron2/_C.py` that raises a clear ImportError (detectron2 guards every `_C` import, so
# Mask R-CNN / Cascade Mask R-CNN run on torchvision RoIAlign/NMS; deformable conv, rotated boxes and
# COCOEvaluator(use_fast_impl=True) are unavailable), and point a `.pth` file in site-packages at that directory.
#
# A compiled detectron2 (a `_C` extension, e.g. built from source on a GPU machine; the Dockerfile's CUDA build) wins
# whenever present: it is left alone and our .pth is removed so it cannot shadow it. A marker file makes a second
# run a no-op.
set -euo pipefail

PYTHON=${1:-${PYTHON:-python3}}
VERSION=0.7.2
PREFIX=$("$PYTHON" -c 'import sys; print(sys.prefix)')
SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TARGET="$PREFIX/detectron2-pure"
MARKER="$TARGET/.mal-detectron2-$VERSION"
PTH="$SITE/mal-detectron2-pure.pth"

# 1. A compiled detectron2 (a `_C` extension next to its package, e.g. built from source on a GPU machine) wins
# whenever present, so this runs before the marker check. Found without importing it (no torch import: seconds),
# with our own directory taken off sys.path: our .pth would otherwise shadow it (a setuptools editable install of
# detectron2 resolves through a meta-path finder, which Python asks only after every sys.path entry).
compiled=$(MAL_D2_PURE="$TARGET" "$PYTHON" - <<'EOF' 2>/dev/null || true
import glob, importlib.util, os, sys
pure = os.path.realpath(os.environ["MAL_D2_PURE"])
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != pure]
spec = importlib.util.find_spec("detectron2")
for loc in (spec.submodule_search_locations or []) if spec else []:
    if glob.glob(os.path.join(loc, "_C*.so")) + glob.glob(os.path.join(loc, "_C*.pyd")):
        print(loc)
        break
EOF
)
if [ -n "$compiled" ]; then
  rm -f "$PTH" "$MARKER"  # our pure copy must not shadow it; a later run reinstalls it if the compiled one goes
  echo "install_detectron2: a compiled detectron2 is already installed ($compiled); leaving it alone"
  exit 0
fi

# 2. Already done by this script -> no-op (the marker is written last, after the import check).
# No import here (importing torch takes seconds): the marker is only written after a verified import.
if [ -f "$MARKER" ] && [ -f "$TARGET/detectron2/__init__.py" ] && [ "$(cat "$PTH" 2>/dev/null)" = "$TARGET" ]; then
  echo "install_detectron2: already installed at $TARGET (marker $MARKER); nothing to do"
  exit 0
fi

# 3. Fresh install into $TARGET.
echo "install_detectron2: installing sal-detectron2==$VERSION (pure Python) into $TARGET"
TMP=$(mktemp -d "$PREFIX/.detectron2-tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.10 --target "$TMP/pkg" "sal-detectron2==$VERSION"
if [ ! -f "$TMP/pkg/detectron2/__init__.py" ]; then
  echo "install_detectron2: ERROR: sal-detectron2==$VERSION did not unpack a detectron2 package into $TMP/pkg" >&2
  exit 1
fi
rm -f "$TMP"/pkg/detectron2/_C*.so
rm -rf "$TMP/pkg/tools" "$TMP"/pkg/sal_detectron2-*.dist-info "$TMP/pkg/bin"
cat > "$TMP/pkg/detectron2/_C.py" <<'EOF'
"""Placeholder for detectron2's compiled extension (installed by scripts/install_detectron2.sh).

This detectron2 is the pure-Python part of sal-detectron2; its compiled ops are absent. detectron2 guards every
``from detectron2 import _C`` with ``except ImportError``, so Mask R-CNN and Cascade Mask R-CNN train and infer
with torchvision's RoIAlign/NMS. Deformable convolution, rotated boxes and the C++ COCO evaluation
(``COCOEvaluator(use_fast_impl=True)``; it falls back to pycocotools here) are not available: build detectron2
from source (https://github.com/facebookresearch/detectron2) if you need them.
"""

raise ImportError(
    "detectron2._C (compiled ops: deformable conv, rotated boxes, fast COCO eval) is not available in this "
    "pure-Python detectron2 install (scripts/install_detectron2.sh); build detectron2 from source to use them"
)
EOF
rm -rf "$TARGET"
mkdir -p "$(dirname "$TARGET")"
mv "$TMP/pkg" "$TARGET"
echo "$TARGET" > "$PTH"

# 4. Verify, then write the marker.
"$PYTHON" - <<EOF
import detectron2, detectron2.modeling  # noqa: F401
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model  # noqa: F401
from detectron2.engine import DefaultTrainer  # noqa: F401
from detectron2.evaluation import COCOEvaluator  # noqa: F401
assert detectron2.__file__.startswith("$TARGET"), detectron2.__file__
cfg = get_cfg()
cfg.merge_from_file(model_zoo.get_config_file("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"))
print("install_detectron2: detectron2", detectron2.__version__, "OK at", "$TARGET")
EOF
echo "sal-detectron2==$VERSION pure-python install" > "$MARKER"
