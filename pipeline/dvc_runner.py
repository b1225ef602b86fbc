"""Run one DVC stage as a subprocess (``dvc repro --single-item <stage>``), no Prefect import here.

DVC holds a repo-wide lock for the whole of a ``dvc repro``; two in one workspace fail with "Unable to
acquire lock". :func:`repro_stage` therefore takes an inter-process file lock
(``<repo>/.dvc/tmp/mal-repro.lock``) around each call, so stages of one workspace run one at a time
while the scheduler may still submit them in parallel. Parallel *execution* happens across workspaces
(one clone per worker sharing a DVC remote + run-cache), see docs/prefect.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

RAN, SKIPPED, RESTORED, PULLED = "ran", "skipped", "restored", "pulled"

_RUNNING = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
_RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")
_PULLED = re.compile(r"Pulling data for stage: '([^']+)'")


class DvcStageError(RuntimeError):
    """A ``dvc`` command exited non-zero; the message names the stage, exit code and output tail."""


@dataclass(frozen=True)
class StageResult:
    stage: str
    outcome: str  # RAN | SKIPPED | RESTORED | PULLED
    seconds: float


def dvc_executable() -> str:
    """The ``dvc`` next to the running interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).with_name("dvc")
    if here.exists():
        return str(here)
    found = shutil.which("dvc")
    if not found:
        raise FileNotFoundError("dvc executable not found next to the Python interpreter nor on PATH")
    return found


def dvc_env(repo_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment for ``dvc``: no analytics, unbuffered output, and the workspace first on
    ``PYTHONPATH`` so stage scripts (``python stages/x.py``) import the workspace's ``mal`` package,
    the code DVC hashed as the stage's dependency, not some other installed copy."""
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if repo_dir is not None:
        paths = [os.path.abspath(repo_dir), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def parse_outcome(stage: str, lines: Sequence[str]) -> str:
    """Classify a ``dvc repro --single-item <stage>`` log.

    ``ran`` (DVC executed the command), ``restored`` (outputs checked out from DVC's run-cache),
    ``skipped`` (unchanged) or ``pulled`` (unchanged per dvc.lock, outputs pulled from the DVC remote;
    ``--pull`` only). If a pull fails DVC runs the stage, and the "Running stage" line wins.

    Raises ``ValueError`` if the log says nothing about ``stage`` (so a silent change in DVC's wording
    cannot make every stage look "skipped").
    """
    for pattern, outcome in ((_RUNNING, RAN), (_RESTORED, RESTORED), (_SKIPPED, SKIPPED), (_PULLED, PULLED)):
        if any(m.group(1) == stage for line in lines for m in [pattern.search(line)] if m):
            return outcome
    raise ValueError(f"dvc output does not say whether stage {stage!r} ran or was skipped")


def run_dvc(
    args: Sequence[str],
    repo_dir: str | os.PathLike,
    log: Callable[[str], None] = print,
    tail: int = 40,
) -> list[str]:
    """Run ``dvc <args>`` in ``repo_dir``, streaming merged stdout/stderr line by line to ``log``.

    Returns all output lines; raises :class:`DvcStageError` (with the last ``tail`` lines) on failure.
    """
    cmd = [dvc_executable(), *args]
    proc = subprocess.Popen(
        cmd,
        cwd=os.fspath(repo_dir),
        env=dvc_env(repo_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: list[str] = []
    last: deque[str] = deque(maxlen=tail)
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            last.append(line)
            log(line)
    rc = proc.wait()
    if rc != 0:
        joined = "\n".join(last)
        raise DvcStageError(f"`{' '.join(['dvc', *args])}` in {os.fspath(repo_dir)} exited {rc}:\n{joined}")
    return lines


def repro_lock(repo_dir: str | os.PathLike) -> FileLock:
    """The per-workspace lock serialising ``dvc repro`` calls (lives in DVC's ignored tmp dir)."""
    tmp = Path(repo_dir) / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return FileLock(str(tmp / "mal-repro.lock"))


def repro_stage(
    stage: str,
    repo_dir: str | os.PathLike = ".",
    log: Callable[[str], None] = print,
    force: bool = False,
    pull: bool = False,
    lock_timeout: float = -1,
    gate: Callable[[], AbstractContextManager] | None = None,
) -> StageResult:
    """``dvc repro --single-item [--force] [--pull] <stage>`` under the workspace lock.

    ``--single-item`` because the caller has already run the upstream stages (the Prefect DAG);
    DVC still decides whether *this* stage is stale, so an unchanged stage is skipped and
    ``dvc.lock`` is only rewritten by DVC itself. ``gate`` (e.g. a Prefect concurrency slot) is entered
    *inside* the workspace lock, so a stage waiting for the workspace never holds a GPU slot.
    """
    import time

    args = ["repro", "--single-item"]
    if force:
        args.append("--force")
    if pull:
        args.append("--pull")
    args.append(stage)
    with repro_lock(repo_dir).acquire(timeout=lock_timeout), (gate or nullcontext)():
        t0 = time.monotonic()
        lines = run_dvc(args, repo_dir, log=log)
        seconds = time.monotonic() - t0
    return StageResult(stage=stage, outcome=parse_outcome(stage, lines), seconds=round(seconds, 2))
