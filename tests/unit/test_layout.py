"""The package's shape: data flows one way, so no module in agent/ imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"


def _module(path: Path) -> str:
    parts = ("agent", *path.relative_to(AGENT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports, `from agent import x` resolved to agent.x."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "agent":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in AGENT.rglob("*.py")}
    modules = set(files)
    return {m: _imports(p, modules) - {m} for m, p in files.items()}


def test_no_import_cycles_in_agent():
    graph = _graph()
    assert len(graph) > 20 and "agent.reader" in graph["agent.pipeline"]  # the graph is really read

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                # A package importing its own submodules (agent.formats -> agent.formats.lager) is no cycle.
                if dep == start and not node.startswith(start + "."):
                    return path + [dep]
                if dep not in seen and not dep.startswith(start + "."):
                    seen.add(dep)
                    stack.append((dep, path + [dep]))
        return None

    cycles = [c for m in graph if (c := cycle_from(m))]
    assert cycles == []


def test_formats_import_nothing_from_config():
    graph = _graph()
    assert all("agent.config" not in deps for m, deps in graph.items() if m.startswith("agent.formats"))
