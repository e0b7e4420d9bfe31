"""The package's shape: stages import forward only, and source files stay small.

Stages, earliest first. A module may import from its own stage or an earlier one, at module level or
inside a function (a deferred import is still a dependency), by absolute or relative import:

    base (tailor/__init__.py, errors, config) -> data -> models -> plan -> runtime -> adapters -> training
    -> evaluation -> compression -> export -> serving -> mlops -> quickstart -> ui -> cli

`cli.py` is last, so it may import anything. A module in a package missing from the order fails, so a
new package gets a place in it on purpose. Imports under `if TYPE_CHECKING:` count too: a type taken
from a later stage is still a backward dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

STAGES = ("base", "data", "models", "plan", "runtime", "adapters", "training", "evaluation", "compression", "export",
          "serving", "mlops", "quickstart", "ui", "cli")
BASE = ("__init__", "errors", "config")  # tailor/__init__.py, errors.py, config.py or config/

MAX_LINES = 500
# Files allowed past MAX_LINES: data tables, not logic. Path relative to src/tailor -> why.
LONG_FILES = {
    "quickstart/store_templates.py": "the quickstart store domain's question/answer/document wording: one literal table",
    "data/synonyms.py": "the built-in bilingual synonym word lists (~430 of its lines), plus the few functions that parse them",
}


@dataclass(frozen=True)
class Edge:
    """One import of a tailor module by another."""

    file: str  # relative to the source root
    line: int
    importer: str
    imported: str


def module_name(path: Path, root: Path) -> str:
    """tailor/data/clean.py -> tailor.data.clean; tailor/data/__init__.py -> tailor.data."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str | None:
    """The stage a dotted tailor module belongs to; None when its package is not in STAGES."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    return parts[1] if parts[1] in STAGES else None


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names (relative imports resolved against the importer)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path, known: set[str]) -> list[Edge]:
    """Every import of a tailor module in one file, module-level and nested, with its line."""
    importer = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, importer, is_package)
            # `from tailor import data` imports the package tailor.data, `from tailor import __version__` only tailor.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for target in dict.fromkeys(targets):
            if target == "tailor" or target.startswith("tailor."):
                edges.append(Edge(rel, node.lineno, importer, target))
    return sorted(edges, key=lambda e: e.line)  # ast.walk goes breadth first


def check_tree(root: Path) -> list[str]:
    """Violations under `root` (the folder holding the `tailor` package), one line each, in file order."""
    files = sorted((root / "tailor").rglob("*.py"))
    known = {module_name(f, root) for f in files}
    problems = []
    for f in files:
        importer = module_name(f, root)
        own = stage_of(importer)
        if own is None:
            problems.append(f"{f.relative_to(root).as_posix()}: package '{importer.split('.')[1]}' has no stage; "
                            "add it to STAGES in tests/test_architecture.py at its place in the pipeline")
            continue
        for e in imports_of(f, root, known):
            theirs = stage_of(e.imported)
            if theirs is None:
                problems.append(f"{e.file}:{e.line} {e.importer} -> {e.imported}: package "
                                f"'{e.imported.split('.')[1]}' has no stage; add it to STAGES in tests/test_architecture.py")
            elif STAGES.index(theirs) > STAGES.index(own):
                problems.append(f"{e.file}:{e.line} {e.importer} ({own}) -> {e.imported} ({theirs})")
    return problems


def test_stages_import_forward_only():
    problems = check_tree(SRC)
    assert not problems, ("backward imports (a stage may import only itself and earlier stages: "
                          f"{' -> '.join(STAGES)}):\n" + "\n".join(f"src/{p}" for p in problems))


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_checker_reports_backward_imports(tmp_path):
    """The checker finds each kind of backward import in a synthetic tree, and nothing in forward ones."""
    for rel in ("tailor/__init__.py", "tailor/errors.py", "tailor/data/__init__.py", "tailor/models/__init__.py",
                "tailor/training/__init__.py", "tailor/training/run.py", "tailor/serving/__init__.py",
                "tailor/mlops/__init__.py", "tailor/mlops/registry.py"):
        _write(tmp_path, rel)
    _write(tmp_path, "tailor/data/load.py", "from tailor.errors import TailorError\nfrom tailor import __version__\n"
                                            "import tailor.models\n")
    _write(tmp_path, "tailor/models/fwd.py", "from tailor.data import load\nfrom . import fwd\n")  # forward: fine
    _write(tmp_path, "tailor/serving/follow.py", "import os\n\n\ndef f():\n    from ..mlops.registry import Registry\n")
    _write(tmp_path, "tailor/training/callbacks.py", "from tailor import serving\n")
    _write(tmp_path, "tailor/cli.py", "import tailor.mlops.registry\n")  # cli may import anything
    _write(tmp_path, "tailor/extras/thing.py", "import tailor.data\n")
    problems = check_tree(tmp_path)
    assert problems == [
        "tailor/data/load.py:3 tailor.data.load (data) -> tailor.models (models)",
        "tailor/extras/thing.py: package 'extras' has no stage; add it to STAGES in tests/test_architecture.py "
        "at its place in the pipeline",
        "tailor/serving/follow.py:5 tailor.serving.follow (serving) -> tailor.mlops.registry (mlops)",
        "tailor/training/callbacks.py:1 tailor.training.callbacks (training) -> tailor.serving (serving)",
    ]


def test_relative_imports_resolve_against_the_package():
    tree = ast.parse("from . import a\nfrom .. import b\nfrom ..c import d\n")
    nodes = tree.body
    assert [_resolve(n, "tailor.data.load", False) for n in nodes] == ["tailor.data", "tailor", "tailor.c"]
    assert [_resolve(n, "tailor.data", True) for n in nodes] == ["tailor.data", "tailor", "tailor.c"]


def long_files(root: Path, allowed: dict[str, str]) -> list[str]:
    """Files under root/tailor past MAX_LINES that are not allowed, and allowed ones that no longer need it."""
    problems = []
    for f in sorted((root / "tailor").rglob("*.py")):
        rel = f.relative_to(root / "tailor").as_posix()
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in allowed:
            problems.append(f"{rel}: {n} lines (over {MAX_LINES}: split it by idea)")
        elif n <= MAX_LINES and rel in allowed:
            problems.append(f"{rel}: {n} lines, no longer needs its place in LONG_FILES")
    problems += [f"{rel}: in LONG_FILES but not found" for rel in allowed if not (root / "tailor" / rel).is_file()]
    return problems


def test_source_files_stay_small():
    problems = long_files(SRC, LONG_FILES)
    assert not problems, "\n".join(problems)


def test_long_file_check_fails_on_a_long_file(tmp_path):
    _write(tmp_path, "tailor/big.py", "x = 1\n" * (MAX_LINES + 1))
    _write(tmp_path, "tailor/table.py", "x = 1\n" * (MAX_LINES + 1))
    _write(tmp_path, "tailor/small.py", "x = 1\n")
    assert long_files(tmp_path, {"table.py": "a table", "small.py": "was long once", "gone.py": "deleted"}) == [
        f"big.py: {MAX_LINES + 1} lines (over {MAX_LINES}: split it by idea)",
        "small.py: 1 lines, no longer needs its place in LONG_FILES",
        "gone.py: in LONG_FILES but not found",
    ]
