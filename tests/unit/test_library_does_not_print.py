"""Library code logs, never prints.

Only the command line (``compressor/cli``) writes to the console; everything else says
what it has to say through ``logging.getLogger(__name__)``, so a program that imports
the library decides what is shown.  An AST scan of every library source file: no
``print(...)``, no ``sys.stdout`` / ``sys.stderr`` ``.write(...)``, no ``click.echo``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("compressor", "exporters", "models")
CONSOLE = ROOT / "compressor" / "cli"


def library_files() -> list[Path]:
    files = [path for folder in LIBRARY for path in sorted((ROOT / folder).rglob("*.py"))]
    return [path for path in files if CONSOLE not in path.parents]


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def console_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("print", "click.echo", "click.secho", "echo", "secho") or name in (
                "sys.stdout.write", "sys.stderr.write", "sys.stdout.writelines", "sys.stderr.writelines"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}(...)")
    return found


def test_the_scan_sees_the_library_and_skips_the_cli():
    files = library_files()
    names = {str(path.relative_to(ROOT)) for path in files}
    assert {"compressor/training/loop.py", "compressor/integrations/lightning.py", "exporters/pipeline.py"} <= names
    assert not any(name.startswith("compressor/cli/") for name in names)
    assert console_writes(CONSOLE / "prune.py")  # the detector does find the CLI's own echo calls


def test_no_library_module_prints():
    found = [hit for path in library_files() for hit in console_writes(path)]
    assert not found, "library code must log (logging.getLogger(__name__)), not print:\n" + "\n".join(found)
