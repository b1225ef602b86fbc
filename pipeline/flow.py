"""Prefect flow running the DVC pipeline: one task per DVC stage, DVC stays the single cache.

The flow reads the stage graph from DVC (:func:`pipeline.dag.load_dag`), submits one task per stage
(matrix cells are separate tasks) that runs ``dvc repro --single-item <stage>`` once its upstream tasks
completed, and returns which stages DVC ran, skipped (unchanged) or restored from its run-cache.
GPU-heavy stages carry the tag ``mal-gpu`` (settable) and, while their ``dvc repro`` runs, hold one slot
of the Prefect global concurrency limit of the same name
(``prefect global-concurrency-limit create mal-gpu --limit <n_gpus>``), which caps GPU stages across all
flow runs and workers; without that limit they are not capped.

Run locally (temporary Prefect server, no API URL needed)::

    .venv/bin/python -m pipeline.flow                      # whole pipeline
    .venv/bin/python -m pipeline.flow --targets prepare    # a stage and its upstream

Tunables (read from the ``prefect:`` section of ``params_file``; defaults below when absent)::

    prefect:
      retries: 1                # per stage task
      retry_delay_seconds: 30
      gpu_tag: mal-gpu          # tag of GPU stages = name of the global concurrency limit they occupy
      gpu_stages: ["train_labeler*", "pseudo_label*", "train_detector*", "evaluate*"]  # fnmatch
      gpus_per_worker: 1        # GPUs of one flow run's pod (= the deployment's gpu_count); a GPU stage
                                # uses all of them and holds that many slots of the gpu_tag limit

Stages of one flow run run one at a time (the workspace lock of :mod:`pipeline.dvc_runner`), so a GPU stage
has its pod's GPUs to itself: train_detector launches one process per visible GPU. The ``gpu_tag`` limit
therefore counts GPUs (``--limit`` = the GPUs all workers may use together), each stage occupying
``gpus_per_worker`` slots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # loaded by path (Prefect entrypoint `pipeline/flow.py:mal_pipeline`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.concurrency.sync import concurrency  # noqa: E402
from prefect.futures import wait  # noqa: E402

from mal.config import load_params  # noqa: E402
from pipeline.dag import is_gpu_stage, load_dag  # noqa: E402
from pipeline.dvc_runner import StageResult, repro_lock, repro_stage, run_dvc  # noqa: E402
from pipeline.mounts import link_mounts  # noqa: E402
from pipeline.run_cache import push_run_cache  # noqa: E402


def load_settings(params_path: Path) -> dict[str, Any]:
    """The ``prefect:`` section of the params file (typed: :class:`mal.config.prefect.PrefectParams`); the whole
    file is validated, so a bad key anywhere stops the flow before any stage runs."""
    return load_params(params_path).prefect.model_dump()


def _status_is_clean(lines: list[str]) -> bool:
    """``dvc status --json`` output -> True iff it reports nothing (``{}``); non-JSON lines are ignored."""
    for line in reversed(lines):
        try:
            return json.loads(line) == {}
        except ValueError:
            continue
    return False


@task(name="dvc-stage", cache_policy=NO_CACHE)  # staleness is DVC's call, never Prefect's input hash
def dvc_stage(
    stage: str,
    repo_dir: str,
    force: bool = False,
    pull: bool = False,
    push: bool = False,
    gpu_limit: str | None = None,
    gpu_slots: int = 1,
) -> dict:
    """Reproduce one DVC stage (``dvc repro --single-item``), streaming DVC's output to the Prefect log.

    ``gpu_limit``: name of a Prefect global concurrency limit; ``gpu_slots`` slots (the pod's GPUs) are held
    while DVC runs (taken after the workspace lock). With ``push`` the stage outputs and DVC's run-cache go to
    the default DVC remote afterwards, so other workers' clones restore this stage instead of re-running it.
    """
    logger = get_run_logger()
    gate = (lambda: concurrency(gpu_limit, occupy=gpu_slots)) if gpu_limit else None
    result: StageResult = repro_stage(stage, repo_dir, log=logger.info, force=force, pull=pull, gate=gate)
    if push:
        with repro_lock(repo_dir):
            run_dvc(["push", "--run-cache", stage], repo_dir, log=logger.info)
            push_run_cache(repo_dir, log=logger.info)  # + objects of cache: false outs, or no clone restores it
    logger.info("stage %s: %s in %.1f s", stage, result.outcome, result.seconds)
    return {"stage": result.stage, "outcome": result.outcome, "seconds": result.seconds}


def _submit_stages(dag: Any, settings: dict[str, Any], repo: Path, **repro: bool) -> dict[str, Any]:
    """One ``dvc_stage`` task per stage, in DAG order, each waiting for its upstream stages; GPU stages hold the
    GPU tag's concurrency slots."""
    futures: dict[str, Any] = {}
    for stage in dag.order:
        gpu_limit = str(settings["gpu_tag"]) if is_gpu_stage(stage, settings["gpu_stages"]) else None
        configured = dvc_stage.with_options(
            task_run_name=stage,
            tags={"mal-dvc", *([gpu_limit] if gpu_limit else [])},
            retries=int(settings["retries"]),
            retry_delay_seconds=float(settings["retry_delay_seconds"]),
        )
        futures[stage] = configured.submit(
            stage=stage, repo_dir=str(repo), **repro, gpu_limit=gpu_limit,
            gpu_slots=int(settings["gpus_per_worker"]), wait_for=[futures[u] for u in dag.upstream[stage]],
        )
    wait(list(futures.values()))
    return futures


def _collect(futures: dict[str, Any]) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """(outcome per stage, seconds per stage that completed, stages that failed or never ran)."""
    outcomes: dict[str, str] = {}
    seconds: dict[str, float] = {}
    failed: list[str] = []
    for stage, fut in futures.items():
        if fut.state.is_completed():
            res = fut.result()
            outcomes[stage], seconds[stage] = res["outcome"], res["seconds"]
        else:
            outcomes[stage] = fut.state.name.lower()
            failed.append(stage)
    return outcomes, seconds, failed


def _summary(outcomes: dict[str, str], seconds: dict[str, float], failed: list[str], clean: bool) -> dict[str, Any]:
    by = {kind: [s for s, o in outcomes.items() if o == kind] for kind in ("ran", "skipped", "restored", "pulled")}
    return {"stages": outcomes, **by, "failed": failed, "seconds": seconds, "dvc_status_clean": clean}


@flow(name="mal-pipeline", log_prints=True)
def mal_pipeline(
    params_file: str = "params.yaml",
    targets: list[str] | None = None,
    repo_dir: str = ".",
    profile: str | None = None,
    force: bool = False,
    pull: bool = False,
    push: bool = False,
) -> dict[str, Any]:
    """Run the MAL DVC pipeline (or ``targets`` + their upstream) as one Prefect task per DVC stage.

    Args:
        params_file: the params file (relative to ``repo_dir``) whose ``prefect:`` section sets
            retries, retry delay and the GPU tag; DVC itself reads ``params.yaml`` as dvc.yaml says.
        targets: DVC targets (stage, matrix group or ``stage@cell`` names); None = every stage.
        repo_dir: the DVC workspace (a git clone with ``.dvc/``).
        profile: first switch ``params.yaml`` to this profile (``paper`` = ``profiles/paper.yaml``,
            merged over params.yaml exactly like ``python -m mal profile paper``).
        force: pass ``--force`` to every ``dvc repro``.
        pull: ``dvc repro --pull`` (fetch missing deps/outs and run-cache entries from the DVC remote).
        push: ``dvc push --run-cache <stage>`` after each stage (share results with other workers).

    Returns:
        ``{"stages": {stage: outcome}, "ran": [...], "skipped": [...], "restored": [...] (DVC run-cache),
        "pulled": [...] (outputs pulled from the DVC remote), "failed": [...], "seconds": {stage: s},
        "dvc_status_clean": bool}``; raises if a stage failed (the summary artifact is written first).
    """
    logger = get_run_logger()
    repo = Path(repo_dir).resolve()
    for rel, what in link_mounts(repo).items():  # cluster volumes (datasets/, weights/, .work/); none locally
        logger.info("mounted volume %s %s", rel, what)
    if profile:
        from mal.common.profiles import apply_profile

        apply_profile(profile, repo / "params.yaml", root=repo)
        logger.info("params.yaml switched to profile %s", profile)
    settings = load_settings(repo / params_file)
    dag = load_dag(repo, targets)
    if not dag.stages:
        raise ValueError(f"{repo}: no DVC pipeline stages found for targets {targets}")
    logger.info("%d stages: %s", len(dag.stages), ", ".join(dag.stages))

    futures = _submit_stages(dag, settings, repo, force=force, pull=pull, push=push)
    outcomes, seconds, failed = _collect(futures)

    clean = False
    if not failed:
        status = run_dvc(["status", "--json", *(["--with-deps", *targets] if targets else [])], repo,
                         log=logger.info)
        clean = _status_is_clean(status)
    summary = _summary(outcomes, seconds, failed, clean)
    create_table_artifact(
        key="mal-pipeline-summary",
        table=[{"stage": s, "outcome": o, "seconds": seconds.get(s)} for s, o in outcomes.items()],
        description=f"DVC stages run by this flow run (dvc status clean: {clean})",
    )
    logger.info("summary: %s", {k: v for k, v in summary.items() if k != "seconds"})
    if failed:
        raise RuntimeError(f"DVC stage(s) failed or never ran: {failed}")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import argparse

    ap = argparse.ArgumentParser(description="Run the MAL DVC pipeline as a Prefect flow (local).")
    ap.add_argument("--params-file", default="params.yaml")
    ap.add_argument("--targets", nargs="*", default=None)
    ap.add_argument("--repo-dir", default=".")
    ap.add_argument("--profile", default=None, help="profile name (profiles/NAME.yaml) or path")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--pull", action="store_true")
    ap.add_argument("--push", action="store_true")
    a = ap.parse_args(argv)
    return mal_pipeline(
        params_file=a.params_file, targets=a.targets or None, repo_dir=a.repo_dir,
        profile=a.profile, force=a.force, pull=a.pull, push=a.push,
    )


if __name__ == "__main__":
    main()
