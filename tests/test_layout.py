"""The package layout keeps its promises (docs/design.md's module map): no import cycles, function-level
imports included; no module over 500 lines; the kind of dataset is decided only inside recpack/backends/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import recpack

PACKAGE = Path(recpack.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (module level or inside functions), except under
    ``if TYPE_CHECKING:`` (never executed)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            subs = [f"{target}.{a.name}" for a in node.names]
            found.update(s for s in subs if s in modules)
            if not all(s in modules or s.endswith("_jpegregion") for s in subs):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_backend_names_only_inside_backends() -> None:
    """Readers talk to the RecordSource protocol: no module outside recpack/backends/ reading datasets tests
    for a backend by name or imports a backend module. (The packer and the CLI name the backends a user can
    write, which is their job.)"""
    readers = ["dataset", "loader", "epoch", "steps", "verify", "info", "convert", "torchdata", "table",
               "bench/dataset.py", "bench/dataset_runs.py"]
    pattern = re.compile(r"""["'](lmdb|mxrec|shards)["']|is_rec\(|backends\.(lmdb|mxrec|shards)|data\.mdb""")
    offenders = []
    for name in readers:
        path = PACKAGE / (name if name.endswith(".py") else f"{name}.py")
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]) and not line.lstrip().startswith(('"', "'", "``")):
                offenders.append(f"{path.relative_to(PACKAGE)}:{k}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
