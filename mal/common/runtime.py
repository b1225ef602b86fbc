"""Process settings that must precede importing torch; import this module first (``import mal.common.runtime``).

Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``): on a CPU shared with other
processes, spinning waiters made torch steps up to 5x slower (measured on the 2-core demo machine:
ViT-Tiny fwd+bwd 10 s vs 1.8 s; a detector iteration 12 s vs 2 s); sleeping waiters cost little otherwise.
OpenMP reads the variable once, when torch loads it, hence the import-time side effect. A value already in
the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
