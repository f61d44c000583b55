"""The package's shape: no import cycles between semseg's modules, and no global side effects
on import."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import semseg

PACKAGE = Path(semseg.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """semseg modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a.b import c` imports a.b.c when c is a module, else a name of a.b
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            names = [n for n in names[:-1] if n in modules] or [node.module]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_semseg_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "semseg.inference.predictor" in graph["semseg.engine.evaluate"]  # the graph is real
    assert cycles(graph) == []


def test_importing_semseg_changes_no_environment_variable_or_thread_count():
    script = (
        # OpenCV edits LD_LIBRARY_PATH when imported: a third-party effect, taken first.
        "import os, torch, cv2; before = (dict(os.environ), torch.get_num_threads());"
        "import semseg, semseg.cli, semseg.engine.trainer, semseg.inference.predictor;"
        "import semseg.data.dataset, semseg.plots, logging;"
        "after = (dict(os.environ), torch.get_num_threads());"
        "assert before == after, set(after[0].items()) ^ set(before[0].items());"
        "assert logging.root.manager.disable == 0"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations' own network check, not semseg's
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
