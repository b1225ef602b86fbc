"""The run's path layout, read from its dvc.yaml: dvc.yaml passes every path to its stage, so it is the one
place a file's path is written. DVC's own API resolves it (matrix entries, ``${...}`` from the run's
params.yaml), exactly as ``dvc repro`` does; the review page and README's results block take each file from
the stage that writes it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any


class StageOutputs:
    """The stages of ``<root>/dvc.yaml`` as DVC resolves them: per stage its outs, metrics and plots (paths
    relative to ``root``) and the ``--option value`` arguments of its cmd."""

    def __init__(self, root: Path):
        self.stages: dict[str, Any] = {}
        if (root / "dvc.yaml").is_file():
            from dvc.exceptions import DvcException
            from dvc.repo import Repo  # DVC's parser: matrix and ${...} resolved exactly as `dvc repro` does

            try:
                self.stages = {s.name: s for s in Repo(str(root), uninitialized=True).index.stages}
            except DvcException as e:  # one line naming the file, not a traceback
                raise ValueError(f"{root / 'dvc.yaml'}: {' '.join(str(e).split())}") from None

    def paths(self, stage: str, kind: str = "outs") -> list[str]:
        """``kind`` = ``outs`` (plain outs), ``metrics`` or ``plots`` of ``stage`` (``[]`` when it is not there)."""
        found = self.stages.get(stage)
        if found is None:
            return []
        picked = [o for o in found.outs if kind == "outs" and not (o.metric or o.plot)
                  or kind == "metrics" and o.metric or kind == "plots" and o.plot]
        return [str(o.def_path) for o in picked]

    def arg(self, stage: str, option: str) -> str | None:
        """The value the stage's cmd passes for ``option`` (``--pseudo``), or None."""
        found = self.stages.get(stage)
        words = shlex.split(found.cmd if isinstance(found.cmd, str) else " ".join(found.cmd)) if found else []
        for i, word in enumerate(words[:-1]):
            if word == option:
                return words[i + 1]
        return None

    def named(self, stage: str, file_name: str) -> str | None:
        """The out (of any kind) of ``stage`` whose file name is ``file_name``."""
        return next((p for k in ("outs", "metrics", "plots") for p in self.paths(stage, k)
                     if Path(p).name == file_name), None)
