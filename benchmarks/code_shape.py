"""The shape of the installed code at two revisions: import names, modules per package,
import cycles, the largest functions and lines of code.

    python -m benchmarks.code_shape BEFORE_REV [AFTER_REV] > benchmarks/results/code_shape.md

Each revision is checked out into a temporary git worktree and read as text (``ast``),
never imported.  A cycle is a strongly connected set of modules in the graph of every
``import`` (those inside functions too, since a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOTS = ("compressor", "exporters", "benchmarks", "models")  # folders that ever held installed code


def installed_packages(tree: Path) -> dict[str, Path]:
    """Import name -> folder, from pyproject's setuptools settings (an explicit list with
    package-dir, or ``packages.find`` include patterns)."""
    import tomllib

    config = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = config.get("packages")
    if isinstance(packages, list):
        dirs = config.get("package-dir", {})
        return {name: tree / dirs.get(name, name.replace(".", "/")) for name in packages}
    include = [pattern.rstrip("*") for pattern in packages["find"]["include"]]
    found = {}
    for root in ROOTS:
        for init in sorted((tree / root).rglob("__init__.py")):
            name = ".".join(init.parent.relative_to(tree).parts)
            if any(name.startswith(prefix) for prefix in include):
                found[name] = init.parent
    return found


def modules(tree: Path) -> dict[str, Path]:
    found = {}
    for name, folder in installed_packages(tree).items():
        for path in folder.glob("*.py"):
            found[name if path.stem == "__init__" else f"{name}.{path.stem}"] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w.startswith(v + ".") or v.startswith(w + "."):
                continue  # a package and its own modules
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def functions(known: dict[str, Path]) -> list[tuple[int, str]]:
    sizes = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(sizes, reverse=True)


def code_lines(known: dict[str, Path]) -> int:
    return sum(1 for path in known.values() for line in path.read_text().splitlines() if line.strip())


def duplicate_pairs(tree: Path, known: dict[str, Path]) -> str:
    try:
        done = subprocess.run(["duplicates", "--repo", str(tree), "--most", "1", "--seconds", "120"],
                              capture_output=True, text=True, cwd=tree, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    first = done.stdout.splitlines()[0] if done.stdout else "n/a"
    return first.split(" pairs")[0] if " pairs" in first else first


def shape(tree: Path) -> dict:
    known = modules(tree)
    graph = {name: imports(path, name, known) for name, path in known.items()}
    top = Counter(name.split(".")[0] for name in known)
    per_package = Counter(name.rpartition(".")[0] if known[name].name != "__init__.py" else name for name in known)
    return {
        "import names": ", ".join(sorted(top)),
        "packages": len({n for n, p in known.items() if p.name == "__init__.py"}),
        "modules": len(known),
        "largest package (modules)": "{} ({})".format(*per_package.most_common(1)[0]),
        "import cycles (modules in them)": f"{len(cycles(graph))} ({sum(len(c) for c in cycles(graph))})",
        "largest functions (lines)": ", ".join(f"{n.split('.')[-1]} {s}" for s, n in functions(known)[:3]),
        "functions over 50 lines": sum(1 for s, _ in functions(known) if s > 50),
        "non-blank lines": code_lines(known),
        "duplicated pairs (whole tree, `duplicates`)": duplicate_pairs(tree, known),
    }


def at(rev: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
        try:
            return shape(tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, capture_output=True)


def main(argv: list[str]) -> None:
    before, after = argv[0], argv[1] if len(argv) > 1 else "HEAD"
    rows = {"before": at(before), "after": at(after)}
    print(f"| installed code | before ({before[:7]}) | after ({after[:7]}) |\n|---|---|---|")
    for key in rows["before"]:
        print(f"| {key} | {rows['before'][key]} | {rows['after'][key]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
