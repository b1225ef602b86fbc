"""Cluster volumes in the flow's fresh clone: `datasets/`, `weights/` and `.work/` as links to mounted folders.

Every flow run on the GPU pool works in a new git clone (prefect.yaml's pull steps), but the paper profile reads
COCO from `datasets/` and encoder/backbone files from `weights/`, and the stages keep their resume state in
`.work/` (git-ignored, not a DVC output). A volume cannot be mounted inside a clone that does not exist yet, so
the pod mounts them at fixed paths (pipeline/work_pools/kubernetes-gpu.json; the image sets the variables below)
and the flow links them into the clone before DVC runs. `.work/` gets one sub-folder per `MAL_WORK_KEY`
(default: the clone's branch), so a killed pod's successor resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# repo-relative path -> environment variable naming the mounted folder
MOUNTS: dict[str, str] = {"datasets": "MAL_DATASETS_DIR", "weights": "MAL_WEIGHTS_DIR", ".work": "MAL_WORK_DIR"}


def _branch(repo: Path) -> str:
    """The checked-out branch from .git/HEAD (no git process); "default" when detached or not a clone."""
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
    except OSError:
        return "default"
    return head.removeprefix("ref: refs/heads/").replace("/", "_") if head.startswith("ref: ") else "default"


def link_mounts(repo: str | Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Link each mounted folder into ``repo``; returns {repo path: what happened} for the ones configured.

    A variable that is unset or names a missing folder (no volume mounted) is skipped, so local runs are
    untouched. An existing real folder in the clone is kept (never deleted); an existing link is replaced.
    """
    env = os.environ if env is None else env
    repo = Path(repo)
    done: dict[str, str] = {}
    for rel, var in MOUNTS.items():
        src = env.get(var, "")
        if not src or not Path(src).is_dir():
            continue
        target = Path(src)
        if rel == ".work":
            target = target / (env.get("MAL_WORK_KEY") or _branch(repo))
            target.mkdir(parents=True, exist_ok=True)
        link = repo / rel
        if link.exists() and not link.is_symlink():
            done[rel] = f"kept the existing folder (not linked to {target})"
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
        done[rel] = f"-> {target}"
    return done
