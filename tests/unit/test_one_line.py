"""One helper squeezes third-party messages onto one line (``compressor.errors.one_line``):
every layer imports it from the base layer instead of writing its own."""
from __future__ import annotations

import re
from pathlib import Path

from compressor.errors import one_line

ROOT = Path(__file__).resolve().parents[2]
# `" ".join(x.split())`, `' '.join(str(e).split())[:200]`, ...: the squeeze itself.
SQUEEZE = re.compile(r"""["'] ["']\.join\(.*\.split\(\)\)""")


def test_one_line_squeezes_and_cuts():
    error = RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch  for conv.weight")
    assert one_line(error) == "RuntimeError: Error(s) in loading state_dict: size mismatch for conv.weight"
    assert one_line(error, 8) == "RuntimeError: Error(s)"
    assert one_line(str(error), 8) == "Error(s)"  # text alone: no type
    assert one_line(KeyError()) == "KeyError" and one_line(" a \n b ", None) == "a b"
    assert one_line("x" * 400) == "x" * 300
    # torch.export colours its messages; a log, bench.json or a pipe gets the text only.
    assert one_line("Failed. \x1b[96mThis is step 1/3\x1b[0m of exporting") == "Failed. This is step 1/3 of exporting"


def test_no_module_squeezes_messages_on_its_own():
    copies = [f"{path.relative_to(ROOT)}:{number}"
              for folder in ("compressor", "exporters", "models")
              for path in (ROOT / folder).rglob("*.py") if path != ROOT / "compressor" / "errors.py"
              for number, line in enumerate(path.read_text().splitlines(), start=1) if SQUEEZE.search(line)]
    assert copies == [], f"use compressor.errors.one_line instead: {copies}"
    helpers = [str(path.relative_to(ROOT)) for folder in ("compressor", "exporters", "models")
               for path in (ROOT / folder).rglob("*.py")
               if re.search(r"^def _?one_line\(", path.read_text(), re.M) and path != ROOT / "compressor" / "errors.py"]
    assert helpers == []


def test_every_command_turns_user_errors_into_one_line_in_one_place():
    """Each command's function is wrapped in ``compressor.cli.common.user_errors``, and no
    command module converts ``CompressorError`` itself: one place says how a user error ends."""
    from compressor.cli import main

    unwrapped = [name for name, command in main.commands.items() if not getattr(command.callback, "user_errors", False)]
    assert unwrapped == []
    converting = [str(path.relative_to(ROOT)) for path in (ROOT / "compressor" / "cli").glob("*.py")
                  if path.name != "common.py" and "ClickException(" in path.read_text()]
    assert converting == []
