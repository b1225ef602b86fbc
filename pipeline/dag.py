"""The DVC stage graph, as DVC itself sees it (no Prefect import here).

DVC stays the single source of truth: stage names (including ``matrix``/``foreach`` cells such as
``train_detector@vit_tiny-mask_rcnn_R18``), their dependencies and the target selection all come from
``dvc.repo.Repo(...).index``, so the Prefect flow can never disagree with ``dvc dag`` / ``dvc repro``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# fnmatch patterns over stage (matrix group) names: labeler training, labeling, detector training/inference


@dataclass(frozen=True)
class StageDag:
    """Pipeline stages and their direct upstream stages.

    ``upstream[name]`` lists the stages whose outputs ``name`` depends on. ``order`` is a topological
    order (every stage after all of its upstream stages; ties broken by dvc.yaml order).
    """

    upstream: dict[str, tuple[str, ...]]
    order: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.order:
            object.__setattr__(self, "order", topological_order(self.upstream))

    @property
    def stages(self) -> tuple[str, ...]:
        return self.order

    def edges(self) -> set[tuple[str, str]]:
        """``(upstream, downstream)`` pairs, the direction ``dvc dag`` draws."""
        return {(u, s) for s, ups in self.upstream.items() for u in ups}


def topological_order(upstream: dict[str, Sequence[str]]) -> tuple[str, ...]:
    """Kahn's algorithm, stable w.r.t. the insertion order of ``upstream``; raises on cycles."""
    remaining = {s: set(ups) for s, ups in upstream.items()}
    for s, ups in remaining.items():
        missing = ups - remaining.keys()
        if missing:
            raise ValueError(f"stage {s!r} depends on unknown stage(s) {sorted(missing)}")
    order: list[str] = []
    done: set[str] = set()
    while remaining:
        ready = [s for s, ups in remaining.items() if ups <= done]
        if not ready:
            raise ValueError(f"cycle among stages {sorted(remaining)}")
        for s in ready:
            order.append(s)
            done.add(s)
            del remaining[s]
    return tuple(order)


def base_name(stage: str) -> str:
    """``'sub/dvc.yaml:train_detector@a-b'`` -> ``'train_detector'`` (the name before ``@``)."""
    return stage.rsplit(":", 1)[-1].split("@", 1)[0]


def is_gpu_stage(stage: str, gpu_stages: Iterable[str]) -> bool:
    """True if the stage's group name matches one of the fnmatch patterns ``gpu_stages``."""
    name = base_name(stage)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in gpu_stages)


def stage_address(stage) -> str:
    """DVC's ``addressing`` of a pipeline stage relative to the repo root, not the process cwd.

    ``name`` for the root ``dvc.yaml`` (matrix cells: ``name@v1-v2``), ``sub/dvc.yaml:name`` otherwise:
    what ``dvc repro`` accepts when run from the repo root.
    """
    rel = stage.path_in_repo.replace(os.sep, "/")
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def _absolute_target(root: str, target: str) -> str:
    """Resolve a ``dvc repro`` target against the repo root instead of the process cwd.

    ``name`` -> ``<root>/dvc.yaml:name``; ``sub/dvc.yaml:name`` -> ``<root>/sub/dvc.yaml:name``;
    an existing path (``sub/dvc.yaml``, ``data.dvc``) -> ``<root>/<path>``.
    """
    if os.path.isabs(target):
        return target
    if os.path.exists(os.path.join(root, target)):
        return os.path.join(root, target)
    path, sep, name = target.rpartition(":")
    if sep and path:
        return f"{os.path.join(root, path)}:{name}"
    return f"{os.path.join(root, 'dvc.yaml')}:{target}"


def load_dag(repo_dir: str | os.PathLike = ".", targets: Sequence[str] | None = None) -> StageDag:
    """Read the pipeline graph of the DVC repo at ``repo_dir`` through DVC's own index.

    ``targets`` are anything ``dvc repro`` accepts as a target (a stage name, a matrix group name such as
    ``train_detector`` for all its cells, ``path/dvc.yaml:stage``); the result is then the targets plus
    everything upstream of them, exactly the set ``dvc repro <targets>`` would consider. ``.dvc`` data
    sources are not stages to run and are left out (they are inputs, DVC checks them as deps).

    Raises ``ValueError`` naming ``repo_dir`` and the target when DVC cannot resolve it.
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    try:
        repo = Repo(os.fspath(repo_dir))
    except DvcException as exc:
        raise ValueError(f"{os.fspath(repo_dir)!r} is not a DVC repo: {exc}") from exc
    try:
        graph = repo.index.graph  # edges: stage -> stage it depends on
        nodes = list(graph.nodes)
        if targets:
            wanted: set = set()
            for target in targets:
                try:
                    collected = repo.stage.collect(_absolute_target(repo.root_dir, target))
                except DvcException as exc:
                    raise ValueError(f"{os.fspath(repo_dir)}: unknown DVC target {target!r}: {exc}") from exc
                for stage in collected:
                    wanted.update(nx.dfs_postorder_nodes(graph, stage))
            nodes = [n for n in nodes if n in wanted]
        pipeline = [n for n in nodes if isinstance(n, PipelineStage)]
        keep = set(pipeline)
        upstream = {
            stage_address(s): tuple(sorted(stage_address(d) for d in graph.successors(s) if d in keep))
            for s in pipeline
        }
    finally:
        repo.close()
    return StageDag(upstream=upstream)


def parse_dot_edges(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Nodes and edges of ``dvc dag --dot`` output (used to cross-check :func:`load_dag`)."""
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for line in dot.splitlines():
        line = line.strip().rstrip(";")
        if not line.startswith('"'):
            continue
        if "->" in line:
            a, b = (p.strip().strip('"') for p in line.split("->", 1))
            edges.add((a, b))
            nodes.update((a, b))
        else:
            nodes.add(line.strip('"'))
    return nodes, edges
