"""Every DVC stage lists, as deps, every file of the ``mal`` package its script can execute.

A module missing from a stage's deps means an edit to it does not re-run the stage (stale outputs,
silently). The imports are resolved statically (AST), transitively, including imports inside
functions; importing ``mal.a.b`` also executes ``mal/__init__.py`` and ``mal/a/__init__.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mal"


def _module_file(root: Path, module: str) -> Path | None:
    """``mal.a.b`` -> ``mal/a/b.py`` or ``mal/a/b/__init__.py`` (relative to ``root``), if it exists."""
    base = Path(*module.split("."))
    for rel in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / rel).is_file():
            return rel
    return None


def _module_name(rel: Path) -> str:
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(root: Path, rel: Path) -> set[str]:
    """``mal`` modules a file imports anywhere in it (a ``from X import y`` counts ``X.y`` when it is a module)."""
    tree = ast.parse((root / rel).read_text(), filename=str(rel))
    package = _module_name(rel) if rel.name == "__init__.py" else _module_name(rel).rpartition(".")[0]
    found: set[str] = set()
    for node in _walk(tree, skip_lazy=rel.name == "__init__.py"):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _module_file(root, f"{base}.{a.name}"))
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _walk(tree: ast.Module, skip_lazy: bool) -> list[ast.AST]:
    """``ast.walk(tree)``, leaving out a package's module-level ``__getattr__`` when ``skip_lazy``: its
    imports (lazy attributes) run only when the attribute is used, never when a stage imports a submodule."""
    lazy = [n for n in tree.body if skip_lazy and isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    skip = {id(n) for root in lazy for n in ast.walk(root)}
    return [n for n in ast.walk(tree) if id(n) not in skip]


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def executed_files(root: Path, script: Path) -> set[Path]:
    """Files of the ``mal`` package that running ``script`` can execute (paths relative to ``root``)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        rel = todo.pop()
        for module in _imported_modules(root, rel):
            for name in _with_parents(module):
                f = _module_file(root, name)
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def _covered(file: Path, deps: list[str]) -> bool:
    return any(file == Path(d) or Path(d) in file.parents for d in deps)


def missing_deps(root: Path) -> dict[str, list[str]]:
    """Per stage of ``root/dvc.yaml``: the script (if not a dep) and the executed ``mal`` files no dep covers."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    problems: dict[str, list[str]] = {}
    for name, stage in stages.items():
        match = re.search(r"\bpython\s+(stages/\S+\.py)", stage["cmd"])
        assert match, f"stage {name}: cmd {stage['cmd']!r} does not run a stages/*.py script"
        script = Path(match[1])
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        missing = [] if str(script) in deps else [str(script)]
        missing += sorted(str(f) for f in executed_files(root, script) if not _covered(f, deps))
        if missing:
            problems[name] = missing
    return problems


def test_every_stage_depends_on_the_code_it_runs():
    problems = missing_deps(REPO)
    assert not problems, "dvc.yaml deps miss files the stage executes:\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in problems.items()
    )


def test_import_resolution_sees_nested_submodule_and_function_imports(tmp_path):
    """The resolver itself: ``from pkg import submodule``, imports inside functions, relative imports;
    not the imports of a package's lazy ``__getattr__``."""
    (tmp_path / "mal" / "a").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    for f, text in {
        "mal/__init__.py": "def __getattr__(name):\n    from mal import lazy\n",
        "mal/lazy.py": "",
        "mal/a/__init__.py": "",
        "mal/a/b.py": "from . import c\n",
        "mal/a/c.py": "def f():\n    from ..d import g\n",
        "mal/d.py": "g = 1\n",
        "mal/unused.py": "",
        "stages/s.py": "def main():\n    from mal.a import b\n",
    }.items():
        (tmp_path / f).write_text(text)
    got = {str(p) for p in executed_files(tmp_path, Path("stages/s.py"))}
    assert got == {"mal/__init__.py", "mal/a/__init__.py", "mal/a/b.py", "mal/a/c.py", "mal/d.py"}
