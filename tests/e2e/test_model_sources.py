"""``--model module.path:factory`` and ``timm:NAME`` through the CLI: a user's own model
class works end to end (info, prune, export of the run) with no registry change, and
bad input ends with one clear line and a non-zero exit."""
from __future__ import annotations

import json
import sys
import uuid

import pytest
from click.testing import CliRunner, Result

from compressor.cli import main

USER_MODELS = '''
import torch
from torch import nn

INPUT_SIZE = (3, 32, 32)


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def make_net(num_classes=10):
    return Net(num_classes)


def not_a_module():
    return "a string"


def broken():
    raise ValueError("bad width")
'''


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """A ``usermodels_<id>.py`` in the current directory (unique: imports are cached)."""
    name = f"usermodels_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    sys.modules.pop(name, None)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result: Result, *hints: str) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def test_factory_model_through_info_prune_and_export(user_module, tmp_path):
    model = f"{user_module}:make_net"
    info = invoke("info", model, "--json", "--flops-reduction", "0.5")
    assert info.exit_code == 0, info.output
    report = json.loads(info.stdout)
    assert report["model"] == model and report["input_size"] == [3, 32, 32] and report["num_classes"] == 10
    assert report["max_abs_diff"] <= 1e-5 and report["pruned_macs"] == report["predicted_macs"] < report["macs"]
    # The dense model exports by name ...
    dense_out = tmp_path / "dense"
    exported = invoke("export", model, "--out", str(dense_out), "--no-simplify")
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((dense_out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["model"] == model and manifest["macs"] == report["macs"]
    # ... and a pruned run of it saves a model file that rebuilds from the same string.
    run = tmp_path / "run"
    pruned = invoke("prune", "--model", model, "--epochs", "2", "--monitor-start", "1", "--max-prune-epoch", "1",
                    "--dataset", "synthetic", "--synthetic-train", "128", "--synthetic-val", "64", "--batch-size", "64", "--no-progress",
                    "--out", str(run))
    assert pruned.exit_code == 0, pruned.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == model and summary["pruned_macs"] < summary["dense_macs"]
    exported = invoke("export", str(run), "--no-simplify", "--trust-code")  # the file names our own factory
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["source"]["pruned"] and manifest["macs"] == summary["pruned_macs"]
    assert manifest["parity"]["passed"]
    info = invoke("info", str(run / "model.pt"), "--json", "--trust-code")
    assert info.exit_code == 0 and json.loads(info.stdout)["macs"] == summary["pruned_macs"]


def test_factory_input_size_option_for_export(user_module, tmp_path):
    out = tmp_path / "e"
    result = invoke("export", f"{user_module}:make_net", "--input-size", "3,48,48", "--out", str(out), "--no-simplify")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["source"]["input_size"] == [3, 48, 48]


@pytest.mark.parametrize("command", ["info", "export", "prune"])
def test_bad_factories_and_names_fail_with_one_line(user_module, tmp_path, command):
    def run(model: str) -> Result:
        if command == "info":
            return invoke("info", model)
        if command == "export":
            return invoke("export", model, "--out", str(tmp_path / "never"))
        return invoke("prune", "--model", model, "--epochs", "1", "--out", str(tmp_path / "never"))

    assert_one_line_error(run("no_such_module_xyz:make"), "cannot import module 'no_such_module_xyz'")
    assert_one_line_error(run(f"{user_module}:not_a_module"), "returned str, not a torch.nn.Module")
    assert_one_line_error(run(f"{user_module}:make_nett"), "has no attribute 'make_nett'", "make_net")
    assert_one_line_error(run(f"{user_module}:broken"), "raised ValueError: bad width")
    assert_one_line_error(run("timm:resnet18dd"), "unknown timm model 'resnet18dd'", "timm:resnet18d")
    assert not (tmp_path / "never").exists()


def test_timm_model_through_info():
    pytest.importorskip("timm")
    result = invoke("info", "timm:vit_tiny_patch16_224", "--input-size", "3,64,64", "--flops-reduction", "0.3",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_classes"] == 1000 and report["max_abs_diff"] <= 1e-5
    assert report["pruned_macs"] == report["predicted_macs"] and abs(report["macs_reduction"] - 0.3) <= 0.01
