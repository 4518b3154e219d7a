"""No module uses another package's private names (a leading underscore).

A name like ``_our_files`` is its module's own business: it may change or go without
notice, so a package that needs it elsewhere makes it public (named, documented) or
moves it to a floor both packages share.  Read from the source (``ast``), like
``test_layers.py``, over everything installed (compressor/, exporters/, models/); the
tests themselves may reach into private names.  Two ways in are caught:

* ``from compressor.x.y import _name`` (or a private module: ``compressor.x._y``);
* ``y._name`` where ``y`` is another package's module bound by an import
  (``from compressor.x import y``, ``import compressor.x.y as y``, ``compressor.x.y._name``).

The package is the first level below ``compressor`` (``compressor.bench`` holds
``compressor.bench.backends``); the plain modules directly in ``compressor/`` (the base
floor) are a package of their own, ``compressor``.  Within one package, private names
are shared freely.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.unit.test_layers import modules, resolve


@cache
def subpackages() -> frozenset[str]:
    """``compressor.X`` for every package folder X (``compressor.export``, ``compressor.bench``, ...)."""
    return frozenset(".".join(name.split(".")[:2]) for name, path in modules().items()
                     if path.name == "__init__.py" and name.count(".") >= 1)


def package_of(module: str) -> str:
    """``compressor.bench.backends.base`` -> ``compressor.bench``; a base module -> ``compressor``."""
    first = ".".join(module.split(".")[:2])
    return first if first in subpackages() else "compressor"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module an ``ImportFrom`` names (``from .x import y`` made absolute)."""
    base = node.module or ""
    if not node.level:
        return base
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    parts = package.split(".")
    return ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))


def private_uses(name: str, path: Path, known: dict[str, Path]) -> list[str]:
    """What ``name`` (at ``path``) takes from another package under a private name."""
    tree = ast.parse(path.read_text())
    mine = package_of(name)
    found = []
    bound: dict[str, str] = {}  # local name -> another package's module it is bound to

    def foreign(module: str | None) -> bool:
        return module is not None and module.startswith("compressor") and package_of(module) != mine

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = absolute(node, name, path)
            for alias in node.names:
                full = f"{source}.{alias.name}"
                module = resolve(full, known)
                if not foreign(module):
                    continue
                if full in known:  # a module imported by name: its attributes are watched below
                    bound[alias.asname or alias.name] = full
                private = [p for p in full.split(".") if is_private(p)]
                if private:
                    found.append(f"{name}:{node.lineno} imports {full}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                module = resolve(alias.name, known)
                if not foreign(module):
                    continue
                if any(is_private(p) for p in alias.name.split(".")):
                    found.append(f"{name}:{node.lineno} imports {alias.name}")
                if alias.asname and alias.name in known:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = ast.unparse(node.value)
            module = bound.get(owner) or (owner if owner in known and foreign(owner) else None)
            if module is not None:
                found.append(f"{name}:{node.lineno} uses {module}.{node.attr}")
    return found


def test_no_module_uses_another_packages_private_names():
    known = modules()
    found = [use for name, path in sorted(known.items()) for use in private_uses(name, path, known)]
    assert not found, "\n".join(found)


def test_the_scan_sees_each_way_in(tmp_path):
    """The scan itself: each form of reaching in is reported, and the same package's is not."""
    known = {**modules()}
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from compressor.export.manifest import _our_files\n"
        "from compressor.export import manifest\n"
        "import compressor.export.manifest as m\n"
        "import compressor.export.manifest\n"
        "from compressor.bench.stats import _same_package_is_fine\n"
        "manifest._x, m._y, compressor.export.manifest._z, manifest.public, manifest.__name__\n"
    )
    found = private_uses("compressor.bench.probe", probe, {**known, "compressor.bench.probe": probe})
    assert [line.split(" ", 1)[1] for line in found] == [
        "imports compressor.export.manifest._our_files",
        "uses compressor.export.manifest._x",
        "uses compressor.export.manifest._y",
        "uses compressor.export.manifest._z",
    ]
