"""``compress --help`` and ``compress COMMAND --help`` do not import torch or the ONNX stack.

What is asserted is the behaviour that makes help fast (which modules a fresh
interpreter holds after printing it), never a time: ``benchmarks/cli_startup.py``
measures the time.  Each help runs in its own subprocess of this interpreter, from
this checkout, so an import made by an earlier test cannot hide one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from compressor.cli import main

REPO = Path(__file__).resolve().parents[2]
# torch and the ONNX stack cost seconds; the engine, exporters and benchmark backends import them.
MUST_NOT_IMPORT = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "onnxsim", "tensorrt", "timm",
                   "compressor.engine.analysis", "compressor.export.pipeline", "compressor.export.onnx_export", "compressor.bench.backends",
                   "compressor.evaluation",  # eval's library: torch and ONNX Runtime
                   "matplotlib", "onnxconverter_common")  # plots and the FP16 converter: only the commands that use them
PROBE = """
import json, runpy, sys
sys.argv = ["compress", *sys.argv[1:]]
try:
    runpy.run_module("compressor", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
sys.stderr.write("PROBE " + json.dumps({"code": code, "modules": sorted(sys.modules),
                                       "file": sys.modules["compressor"].__file__}) + "\\n")
"""
COMMANDS = sorted(main.commands)


def help_in_fresh_interpreter(*args: str) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args, "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    probe = [line for line in done.stderr.splitlines() if line.startswith("PROBE ")]
    assert probe, done.stderr
    return done.stdout, json.loads(probe[0][len("PROBE "):])


def test_every_command_is_checked():
    assert set(COMMANDS) == {"models", "info", "prune", "export", "eval", "bench", "run"}


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_neither_torch_nor_onnx(command):
    text, probe = help_in_fresh_interpreter(*([command] if command else []))
    assert probe["code"] == 0, text
    assert Path(probe["file"]).resolve().is_relative_to(REPO), probe["file"]  # this tree, not an installed copy
    loaded = [name for name in MUST_NOT_IMPORT if name in probe["modules"]]
    assert not loaded, f"`compress {command or ''} --help` imported {loaded}"
    assert "Usage:" in text
    if command is None:
        assert all(name in text for name in COMMANDS), text
    else:
        assert_explains_every_option(main.commands[command], text)


def assert_explains_every_option(command: click.Command, text: str) -> None:
    """Every option is named in the help and carries a help text of its own."""
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        assert param.help and len(param.help) > 10, f"{command.name} {param.opts} has no help"
        for flag in param.opts + param.secondary_opts:
            assert flag in text, f"`compress {command.name} --help` does not mention {flag}"
        if isinstance(param.type, click.Choice):
            assert "|".join(param.type.choices) in text, (param.opts, param.type.choices)


def test_import_compressor_loads_neither_matplotlib_nor_the_fp16_converter():
    """The library's entry point stays light: matplotlib only for a plot, the converter only for --fp16."""
    probe = "import json, sys, compressor; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert not loaded & {"matplotlib", "onnxconverter_common"}, sorted(loaded & {"matplotlib", "onnxconverter_common"})


def test_the_help_shows_the_opsets_torch_itself_defines():
    """The --opset help reads torch's limits from its source files (no import); they must be
    the numbers torch reports once imported."""
    import importlib
    from importlib import metadata

    import torch  # noqa: F401 - the comparison needs the real values

    from compressor.export import opsets

    def real(module: str, name: str) -> int:
        return int(getattr(importlib.import_module(module), name))

    assert opsets.DEFAULT_OPSET == real("torch.onnx._constants", "ONNX_DEFAULT_OPSET")
    assert opsets.TORCHSCRIPT_OPSETS == (real("torch.onnx._constants", "ONNX_MIN_OPSET"),
                                         real("torch.onnx._constants", "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET"))
    assert opsets.DYNAMO_OPSETS == (real("torch.onnx._internal.exporter._constants", "TORCHLIB_OPSET"),
                                    real("torch.onnx._constants", "ONNX_MAX_OPSET"))
    assert metadata.version("torch") in opsets.supported_range_text()
    assert opsets._torch_constant("torch.onnx._constants", "NO_SUCH_NAME", -1) == -1


def test_the_choice_lists_are_the_registries():
    """The CLI's torch-free names and the implementations are one list."""
    from compressor.bench.backends import BACKENDS
    from compressor import choices
    from compressor.engine.importance import CRITERIA, POOL, SCORING

    assert tuple(SCORING) == choices.CRITERIA and tuple(POOL) == choices.POOL_CRITERIA
    assert set(CRITERIA) == {*choices.CRITERIA, *choices.POOL_CRITERIA}  # one table, both uses
    assert all(SCORING[n] is CRITERIA[n] for n in SCORING) and all(POOL[n] is CRITERIA[n] for n in POOL)
    assert tuple(BACKENDS) == choices.BENCH_BACKENDS
    from compressor.schedules.config import PruneConfig
    from compressor.schedules.base import Schedule
    from compressor.schedules.registry import SCHEDULE_FACTORIES, schedule_names

    assert tuple(SCHEDULE_FACTORIES) == schedule_names()  # the --schedule names: the registry, torch-free
    for name, factory in SCHEDULE_FACTORIES.items():  # each name builds a schedule
        assert isinstance(factory(PruneConfig(epochs=10, schedule=name)), Schedule), name
    from compressor.bench.rounding import SweepConfig
    from compressor.cli.prune import prune_command as prune

    deploy = next(p for p in prune.params if p.name == "deploy_backend")
    assert tuple(deploy.type.choices) == choices.BENCH_BACKENDS  # --round-to auto measures what bench runs
    assert deploy.default == SweepConfig().backend == choices.DEFAULT_DEPLOY_BACKEND in BACKENDS
    with pytest.raises(ImportError, match="no implementation: \\['b'\\]"):
        choices.registry(("a", "b"), {"a": 1}, "--x")
    with pytest.raises(ImportError, match="not in compressor.choices: \\['c'\\]"):
        choices.registry(("a",), {"a": 1, "c": 2}, "--x")


def test_the_public_api_still_imports_on_demand():
    """``import compressor`` is lazy now; every name of ``__all__`` must still resolve."""
    import compressor

    for name in compressor.__all__:
        if name != "PruningCallback":  # needs the optional Lightning extra
            assert getattr(compressor, name) is not None, name
    with pytest.raises(AttributeError):
        compressor.no_such_name  # noqa: B018
