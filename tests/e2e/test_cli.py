"""The ``compress`` command line, end to end: mostly in-process through click's
CliRunner (fast), plus one real run of the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from compressor import (
    CostModel,
    ModelSpec,
    SelectionConfig,
    apply_plan,
    count_params,
    group_l2,
    save_pruned,
    select_plan,
)
from compressor.cli import main
from compressor.models.zoo import build
from tests.cli_runs import ENV

INFO_OPTIONS = [
    "--input-size",
    "--num-classes",
    "--flops-reduction",
    "--round-to",
    "--max-prune-fraction",
    "--min-width",
    "--ignore",
    "--groups",
    "--json",
]
RESNET20_PARAMS = 272_474


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def ok_json(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception
    return json.loads(result.stdout)


def assert_user_error(result: Result, exit_code: int, *hints: str) -> str:
    """Non-zero exit through SystemExit, no traceback, exactly one 'Error:' line holding every hint."""
    output = result.output
    assert result.exit_code == exit_code, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for hint in hints:
        assert hint in errors[0], errors[0]
    if exit_code == 1:  # a CompressorError: nothing but the one line
        assert output.strip() == errors[0], output
    return errors[0]


# -- help and listing --------------------------------------------------------------------


def test_top_level_help_and_version():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "info" in result.output and "models" in result.output
    assert invoke("-h").output == result.output
    version = invoke("--version")
    assert version.exit_code == 0 and "0.1.0" in version.output


def test_info_help_mentions_every_option():
    result = invoke("info", "--help")
    assert result.exit_code == 0, result.output
    assert "MODEL" in result.output
    missing = [option for option in INFO_OPTIONS if option not in result.output]
    assert not missing, result.output


def test_models_help():
    result = invoke("models", "--help")
    assert result.exit_code == 0, result.output
    assert "--family" in result.output and "--json" in result.output


def test_models_table_lists_zoo_and_torchvision():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    names = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert {"resnet56", "vit_tiny_cifar", "resnet50"} <= names
    resnet56 = next(line for line in result.output.splitlines() if line.split()[0] == "resnet56")
    assert resnet56.split()[1:] == ["cifar", "3x32x32"]


def test_models_family_filter_json():
    cifar = ok_json("models", "--family", "cifar", "--json")
    assert cifar and all(row["family"] == "cifar" for row in cifar)
    names = {row["name"] for row in cifar}
    assert {"resnet56", "vit_tiny_cifar"} <= names and "resnet50" not in names
    assert all(row["input_size"] == [3, 32, 32] for row in cifar)

    torchvision = ok_json("models", "--family", "torchvision", "--json")
    assert {row["family"] for row in torchvision} == {"torchvision"}
    assert "resnet50" in {row["name"] for row in torchvision}
    assert not names & {row["name"] for row in torchvision}

    detection = ok_json("models", "--family", "torchvision-detection", "--json")
    segmentation = ok_json("models", "--family", "torchvision-segmentation", "--json")
    assert "retinanet_resnet50_fpn" in {row["name"] for row in detection}
    assert "deeplabv3_resnet50" in {row["name"] for row in segmentation}
    everything = ok_json("models", "--json")
    assert len(everything) == len(cifar) + len(torchvision) + len(detection) + len(segmentation)


# -- info --------------------------------------------------------------------------------


def test_info_resnet56_counts():
    report = ok_json("info", "resnet56", "--json")
    assert report["model"] == "resnet56"
    assert report["input_size"] == [3, 32, 32] and report["num_classes"] == 10
    assert 0.84e6 <= report["params"] <= 0.87e6, report["params"]
    assert 120e6 <= report["macs"] <= 130e6, report["macs"]
    assert report["groups"] > 0 and report["prunable_channels"] > 0
    assert "pruned_macs" not in report


@pytest.fixture(scope="module")
def pruned_half():
    return ok_json("info", "resnet20", "--flops-reduction", "0.5", "--groups", "--json")


def test_info_flops_reduction_really_prunes(pruned_half):
    report = pruned_half
    assert report["params"] == RESNET20_PARAMS
    assert report["flops_reduction_target"] == 0.5
    assert report["pruned_macs"] == report["predicted_macs"]
    assert abs(report["macs_reduction"] - 0.5) <= 0.01
    assert report["macs_reduction"] >= 0.5
    assert report["pruned_macs"] == pytest.approx(report["macs"] * (1 - report["macs_reduction"]))
    assert report["pruned_params"] < report["params"]
    assert report["max_abs_diff"] <= 1e-4
    assert 0 < report["kept_channels"] < report["prunable_channels"]
    groups = report["group_list"]
    assert len(groups) == report["groups"]
    assert sum(g["kept"] for g in groups) == report["kept_channels"]
    # default rounding: multiples of 8 for groups of >= 16 channels (all of resnet20's)
    assert all(g["size"] >= 16 and g["kept"] % 8 == 0 for g in groups), groups


def test_info_round_to_4():
    report = ok_json("info", "resnet20", "--flops-reduction", "0.5", "--round-to", "4", "--groups", "--json")
    assert report["pruned_macs"] == report["predicted_macs"]
    assert 0.5 <= report["macs_reduction"] <= 0.51
    assert report["pruned_params"] < report["params"]
    assert report["max_abs_diff"] <= 1e-4
    assert all(g["kept"] % 4 == 0 and 0 < g["kept"] <= g["size"] for g in report["group_list"])


def test_info_text_output(pruned_half):
    result = invoke("info", "resnet20", "--flops-reduction", "0.5")
    assert result.exit_code == 0, result.output
    assert "resnet20" in result.output and f"{RESNET20_PARAMS:,}" in result.output
    assert "pruned at 50% MACs reduction" in result.output
    assert f"{pruned_half['pruned_macs']:,}" in result.output


def test_info_ignore_keeps_the_group_out():
    plain = ok_json("info", "resnet20", "--groups", "--json")
    assert "layer1.0.conv1" in {g["name"] for g in plain["group_list"]}
    assert all(g["kept"] == g["size"] for g in plain["group_list"])

    ignored = ok_json("info", "resnet20", "--ignore", "layer1.0.conv1", "--groups", "--json")
    names = {g["name"] for g in ignored["group_list"]}
    assert "layer1.0.conv1" not in names
    assert ignored["groups"] < plain["groups"]
    assert any("layer1.0.conv1" in reason for reason in ignored["fixed"].values()), ignored["fixed"]


def test_info_input_size_and_num_classes():
    report = ok_json("info", "resnet20", "--input-size", "3x16x16", "--num-classes", "7", "--json")
    assert report["input_size"] == [3, 16, 16] and report["num_classes"] == 7
    assert report["params"] == RESNET20_PARAMS - 3 * 65  # 64->10 head became 64->7


# -- user mistakes: one line, no traceback -----------------------------------------------


def test_unknown_model_suggests_the_near_miss():
    assert_user_error(invoke("info", "resnt56"), 1, "resnt56", "did you mean", "resnet56")


@pytest.mark.parametrize("size", ["3,32", "a,b,c", "3,32,32,1", "0,32,32", ""])
def test_malformed_input_size(size):
    assert_user_error(invoke("info", "resnet20", "--input-size", size), 2, "--input-size", "C,H,W")


@pytest.mark.parametrize("value", ["0", "1.5", "1", "-0.2", "half"])
def test_flops_reduction_out_of_range(value):
    hint = "--flops-reduction"
    assert_user_error(invoke("info", "resnet20", "--flops-reduction", value), 2, hint)


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_flops_reduction_range_is_stated(value):
    assert_user_error(invoke("info", "resnet20", "--flops-reduction", value), 2, value, "0<x<1")


def test_unreachable_flops_reduction_states_the_maximum():
    line = assert_user_error(
        invoke("info", "resnet20", "--flops-reduction", "0.99"), 1, "99.0%", "maximum reachable", "--max-prune-fraction"
    )
    reachable = float(line.split("maximum reachable is ")[1].split("%")[0])
    assert 0 < reachable < 99


def test_ignore_unknown_module_is_named():
    assert_user_error(invoke("info", "resnet20", "--ignore", "no.such.module"), 1, "no.such.module", "--ignore")


def test_ignore_typo_suggests_the_module():
    assert_user_error(invoke("info", "resnet20", "--ignore", "layer1.0.conv"), 1, "did you mean", "layer1.0.conv1")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_corrupt_model_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()))
    assert_user_error(invoke("info", str(path)), 1, str(path), "not a pruned model file")


@pytest.mark.parametrize("content", [b"h\x00", b"."], ids=["memo_miss_KeyError", "empty_stack_IndexError"])
def test_corrupt_model_file_unhandled_unpickler_errors(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert_user_error(invoke("info", str(path)), 1, str(path), "not a pruned model file")


def test_missing_model_file(tmp_path):
    path = tmp_path / "nowhere.pt"
    assert_user_error(invoke("info", str(path)), 1, "no such pruned model file", str(path))


@pytest.mark.parametrize("size", ["1,32,32"])
def test_input_size_the_model_cannot_take(size):
    assert_user_error(invoke("info", "resnet20", "--input-size", size), 1, "--input-size")


# -- pruned model files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("resnet20", 10, (3, 32, 32))
    model = build("resnet20", 10)
    graph = spec.analyse(model)
    plan = select_plan(graph, CostModel(graph, model), group_l2(graph, model), SelectionConfig(0.5))
    pruned = apply_plan(model, graph, plan)
    path = save_pruned(tmp_path_factory.mktemp("cli") / "resnet20_pruned.pt", pruned, spec, plan)
    return path, count_params(pruned)


def test_info_on_a_pruned_file(pruned_file):
    path, pruned_params = pruned_file
    report = ok_json("info", str(path), "--json")
    assert report["model"].startswith("resnet20 (pruned")
    assert report["input_size"] == [3, 32, 32] and report["num_classes"] == 10
    assert report["params"] == pruned_params < RESNET20_PARAMS
    assert 0 < report["macs"] < 40_813_184


# -- the console-script entry point ------------------------------------------------------


def test_console_script_entry_point_runs():
    """`compress` is pyproject's [project.scripts] entry; run that target of this tree in a
    fresh process (not whatever `compress` is on PATH, which may be another install)."""
    root = Path(__file__).resolve().parents[2]
    entry = re.search(r'^compress = "([\w.]+):(\w+)"$', (root / "pyproject.toml").read_text(), re.MULTILINE)
    assert entry, "pyproject.toml declares no `compress` script"
    module, function = entry.groups()
    code = (f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'compress'; "
            f"import compressor; assert compressor.__file__.startswith({str(root)!r}), compressor.__file__; "
            f"from {module} import {function}; {function}()")
    done = subprocess.run([sys.executable, "-c", code, "info", "resnet20", "--json"], env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == "resnet20" and report["params"] == RESNET20_PARAMS
