"""The effect of ``compress info`` / ``compress models`` options that only ``--help`` mentioned
before: ``info --max-prune-fraction``, ``info --min-width``, ``models --family timm``."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compressor.cli import main

HALF = ["--flops-reduction", "0.5", "--round-to", "1"]  # round-to 1: nothing but the option under test bounds a width

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ok_json(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def groups(*options: str) -> list[dict]:
    report = ok_json("info", "resnet20", *HALF, *options, "--groups", "--json")
    assert abs(report["macs_reduction"] - 0.5) <= 0.01
    return report["group_list"]


def removed_fraction(group: dict) -> float:
    return 1 - group["kept"] / group["size"]


def test_info_max_prune_fraction_caps_every_group():
    """(The model's random init comes from conftest's per-test seed, so both plans see the same weights.)"""
    unbounded = groups()
    assert max(map(removed_fraction, unbounded)) > 0.4, "the default plan never exceeds the cap under test"
    capped = groups("--max-prune-fraction", "0.4")
    assert max(map(removed_fraction, capped)) <= 0.4


def test_info_min_width_keeps_n_channels_per_group():
    unbounded = groups()
    assert min(g["kept"] for g in unbounded) < 12, "the default plan never goes below the width under test"
    widened = groups("--min-width", "12")
    assert all(g["kept"] >= min(12, g["size"]) for g in widened)


def test_models_family_timm_lists_timm_names_only():
    pytest.importorskip("timm", reason="timm is the optional timm extra (installed with .[dev])")
    rows = ok_json("models", "--family", "timm", "--json")
    assert len(rows) > 500 and all(r["family"] == "timm" and r["name"].startswith("timm:") for r in rows)
    assert "timm:resnet18" in {r["name"] for r in rows}
    assert all(len(r["input_size"]) == 3 for r in rows)
    everything = {r["name"] for r in ok_json("models", "--json")}
    assert not any(name.startswith("timm:") for name in everything)  # documented: 'all' leaves timm out
