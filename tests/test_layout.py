"""The layout the README promises: imports point one way (no cycles), no module reaches into another's private
names, and the app talks to the library only through Index, IndexJob and Judgments (never `.store`)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = sorted((REPO / "irs").glob("*.py"))
UI = [REPO / "app.py", REPO / "home.py", REPO / "views.py", *sorted((REPO / "app_pages").glob("*.py"))]


def imports_of(path: Path) -> set[str]:
    """The irs modules a file imports, anywhere in it (type-checking and function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "irs":
            found.add(node.module.split(".")[1] if "." in node.module else "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("irs.")}
    return found - {path.stem}


def test_the_library_has_no_import_cycle():
    graph = {path.stem: imports_of(path) for path in LIBRARY}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_no_module_reaches_into_another_modules_private_names():
    reach_ins = []
    for path in LIBRARY + UI:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("irs"):
                reach_ins += [f"{path.name}: {node.module}.{a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    reach_ins.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert reach_ins == []


def test_the_app_never_touches_the_store():
    touching = [
        f"{path.name}:{node.lineno}"
        for path in UI
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    assert touching == []


def test_the_library_never_imports_streamlit():
    assert [p.name for p in LIBRARY if "streamlit" in {n.split(".")[0] for n in _modules(p)}] == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_importing_irs_lets_waiting_openmp_threads_sleep_unless_the_user_chose():
    """Set before torch loads (spinning threads starve beside another busy process: README, Search latency)."""
    code = "import os, irs, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        extra = {"OMP_WAIT_POLICY": given} if given else {}
        command = [sys.executable, "-c", code]
        out = subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, cwd=REPO)
        assert out.stdout.split()[-1] == expected, out.stderr
