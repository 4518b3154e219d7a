"""The package's layers point down only, and nothing is installed outside ``compressor``.

Read from the source (``ast``), not by importing: every ``import`` counts, those
inside functions too (a lazy import is still a dependency), except the ones under
``if TYPE_CHECKING:`` (annotations only).  The layers, lowest first:

    base          compressor/*.py: errors, choice names, atomic writes, output dirs, trust
    engine        analyse -> plan -> apply, costs, importance, checks
    schedules     when and how much to prune (one-cycle, LAASP, stability, shrinking)
    models        the zoo (models/ on disk, installed as compressor.models)
    data          datasets, the digits set: what training, export and eval read images with
    runfiles      what a run leaves on disk: the model file format, its digest, a run's data settings
    training      a prune run: data, loop, checkpoints, artifacts
    integrations  other frameworks' loops (Lightning)
    export        ONNX / TensorRT behind a gate (exporters/ on disk: compressor.export)
    evaluation    the library behind `compress eval`: accuracy of a run's model and its exports
    bench         the library behind `compress bench`
    report        the library behind `compress run`: its stage record, and the report that joins the stages' files
    cli           one module per command

Export, evaluation, bench and report sit above training but read what a run left through
runfiles and data, never through the trainer or another framework's loop: they may not
import training or integrations at all (``NEVER``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - CI runs 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["base", "engine", "schedules", "models", "data", "runfiles", "training", "integrations", "export", "evaluation", "bench", "report", "cli"]
# Layers that may not import another layer although it is lower: a later command reads a run's
# files (runfiles, data), so exporting, evaluating or timing a model never loads the trainer.
NEVER = {layer: ("training", "integrations") for layer in ("export", "evaluation", "bench", "report")}
# Where each installed package lives on disk (pyproject's package-dir, and the plain ones).
SOURCES = {"compressor": ROOT / "compressor", "compressor.export": ROOT / "exporters",
           "compressor.models": ROOT / "models"}


def layer_of(module: str) -> str:
    """A subpackage's layer is its name; a plain module directly in compressor/ is base."""
    parts = module.split(".")
    if parts[0] != "compressor":
        raise ValueError(module)
    if len(parts) == 1:
        return "base"
    if parts[1] == "__main__":
        return "cli"
    return parts[1] if parts[1] in LAYERS else "base" if _is_plain_module(parts[1]) else parts[1]


def _is_plain_module(name: str) -> bool:
    return (SOURCES["compressor"] / f"{name}.py").is_file()


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "compressor" and len(parts) and parts[0] in ("export", "models"):
                continue  # not on disk under compressor/
            found[name] = path
    return found


def imports(path: Path, name: str) -> list[tuple[str, bool]]:
    """(imported compressor module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if _is_type_checking(node) for n in ast.walk(node)}
    top_level = {id(n) for n in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] == "compressor":
                found.append((target, id(node) in top_level))
    return found


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The module a dotted import target lands in (``from a.b import c`` may name a function)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_every_import_points_down_or_sideways():
    known = modules()
    wrong = []
    for name, path in known.items():
        mine = LAYERS.index(layer_of(name))
        for target, _ in imports(path, name):
            module = resolve(target, known)
            if module is not None and LAYERS.index(layer_of(module)) > mine:
                wrong.append(f"{name} ({layer_of(name)}) imports {module} ({layer_of(module)})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_export_evaluation_and_bench_never_import_the_trainer():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target, _ in imports(path, name):
            module = resolve(target, known)
            if module is not None and layer_of(module) in NEVER.get(layer_of(name), ()):
                wrong.append(f"{name} ({layer_of(name)}) imports {module} ({layer_of(module)})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles_even_through_imports_inside_functions():
    known = modules()
    graph = {name: {resolve(t, known) for t, _ in imports(path, name)} - {None, name}
             for name, path in known.items()}
    cycles = []

    def visit(node, stack, state):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules (``__init__`` re-exports)
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt], state)
        state[node] = "done"

    state: dict = {}
    for name in sorted(graph):
        if name not in state:
            visit(name, [name], state)
    assert not cycles, "\n".join(cycles)


def test_every_module_belongs_to_a_layer():
    unknown = [name for name in modules() if layer_of(name) not in LAYERS]
    assert not unknown, unknown


def test_the_installed_packages_are_exactly_the_package_folders_under_one_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert {k: str(ROOT / v) for k, v in config["package-dir"].items()} == \
        {k: str(v) for k, v in SOURCES.items() if k != "compressor"}
    on_disk = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert listed == on_disk, (sorted(listed - on_disk), sorted(on_disk - listed))
    assert all(name == "compressor" or name.startswith("compressor.") for name in listed)
