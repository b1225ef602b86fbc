"""Share DVC's run-cache with other clones: every run entry *and every object it names*.

    python -m pipeline.run_cache [--remote NAME]      # after `dvc repro`, in the clone that ran the stages

Why not just ``dvc push --run-cache``: DVC 3 pushes the run entries but only the objects of the workspace's
*cached* outputs. Our metrics, plots and paper table are ``cache: false`` (git-tracked), so their objects stay
behind; another clone's ``dvc repro --pull`` then finds the entry, cannot check those outputs out and re-runs
the stage (tests/test_dvc_remote_clones.py). This pushes the objects of every output the entries list, as
DVC 2 did. The other clone needs nothing special: ``dvc repro --pull`` restores from the run-cache.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def push_run_cache(repo_dir: str | Path = ".", remote: str | None = None,
                   log: Callable[[str], None] = print) -> tuple[int, int]:
    """Push the run-cache entries of ``repo_dir`` and the objects they reference (cached or not) to ``remote``
    (default: the default DVC remote). Returns ``(entries, objects transferred)``; raises if any object failed."""
    from dvc.repo import Repo

    with Repo(str(repo_dir)) as repo, repo.lock:
        entries = repo.stage_cache.push(remote)
        objs = set()
        for hashes in repo.stage_cache.get_used_objs(entries).values():
            objs |= hashes
        result = repo.cloud.push(objs, remote=remote)
    if result.failed:
        raise RuntimeError(f"run-cache push: {len(result.failed)} objects failed (missing from the local cache?)")
    log(f"run-cache push: {len(entries)} entries, {len(objs)} objects referenced, "
        f"{len(result.transferred)} transferred")
    return len(entries), len(result.transferred)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.run_cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remote", default=None, help="DVC remote name (default: the core.remote one)")
    ap.add_argument("--repo", default=".", help="the DVC repository (default: %(default)s)")
    args = ap.parse_args(argv)
    push_run_cache(args.repo, args.remote)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
