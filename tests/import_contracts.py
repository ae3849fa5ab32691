"""An import-linter contract type for a subpackage that lives in another directory.

``ragloom.plugins`` is ``plugins/`` (setuptools ``package-dir``), not ``core/plugins/``, so grimp,
which walks ``ragloom``'s directory, leaves it out of the graph together with every import of
it, and a plain ``forbidden`` contract cannot name it. :class:`ForbiddenElsewhereContract` reads
the imports of those modules back from the sources of the graph's modules (function-local ones
included, as grimp counts them) and then checks as ``forbidden`` does.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from importlinter.contracts.forbidden import ForbiddenContract


def _source(module: str, root: str, root_directory: Path) -> Path | None:
    relative = Path(*module.split(".")[1:]) if module != root else Path()
    for candidate in (root_directory / relative / "__init__.py", root_directory / f"{relative}.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> list[tuple[str, int, str]]:
    """Every module ``path`` imports (at any depth): (name, line number, line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse("\n".join(lines), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        line = lines[node.lineno - 1].strip()
        found += [(name, node.lineno, line) for name in names]
    return found


class ForbiddenElsewhereContract(ForbiddenContract):
    """``forbidden``, for forbidden modules outside the root package's directory."""

    type_name = "forbidden_elsewhere"

    def check(self, graph, verbose):  # type: ignore[no-untyped-def]
        forbidden = {str(expression) for expression in self.forbidden_modules}  # type: ignore[attr-defined]
        for root in {module.split(".")[0] for module in graph.modules}:
            spec = importlib.util.find_spec(root)
            if spec is None or not spec.submodule_search_locations:
                continue
            root_directory = Path(next(iter(spec.submodule_search_locations)))
            for module in sorted(m for m in graph.modules if m.split(".")[0] == root):
                path = _source(module, root, root_directory)
                for name, number, line in _imports(path, module) if path else []:
                    if any(name == f or name.startswith(f + ".") for f in forbidden):
                        parts = name.split(".")
                        for end in range(1, len(parts) + 1):
                            graph.add_module(".".join(parts[:end]))
                        graph.add_import(
                            importer=module, imported=name, line_number=number, line_contents=line
                        )
        for name in forbidden:
            graph.add_module(name)
        return super().check(graph, verbose)
