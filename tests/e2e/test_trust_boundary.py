"""Files are data, never code: a model file or checkpoint whose stored model name is a
``module.path:factory`` is refused in one line -- naming the module and ``--trust-code``
-- before the module is imported, by every command that loads one and by the Python
API; ``--trust-code`` / ``trust_code=True`` lets a legitimate local factory through.

The hostile stdlib names (``os:fork``, ``http.server:test`` ...) are only ever loaded in
a child process: should the check regress, the fork or the server happens there, the
child's output misses its report (or it times out) and the test fails, while pytest
itself stays intact.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from compressor.training.checkpoint import LATEST, load_checkpoint, save_checkpoint
from compressor.runfiles.integrity import sealed
from compressor.engine.plan import PruningPlan
from compressor.runfiles.modelfile import ModelSpec, save_pruned
from tests.hostile import invoke, one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOSTILE = ["http.server:test", "os:fork", "sys:exit", "code:interact", "pwn:make"]
MARKER = "PWNED"  # pwn.py writes it the moment it is imported

FACTORY = '''
from torch import nn

INPUT_SIZE = (3, 8, 8)


def make(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''
PWN = f'''
from pathlib import Path

Path(__file__).with_name("{MARKER}").write_text("imported")


def make(num_classes=10):
    raise SystemExit("pwn.make was called")
'''


def tiny_model(num_classes: int = 10) -> nn.Module:
    """FACTORY's make(), built here so writing the files imports nothing from the work dir."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def file_name(model: str) -> str:
    return model.replace(":", "_").replace(".", "_") + ".pt"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """goodnet_<id>.py (a legitimate factory, unique: imports are cached per process),
    pwn.py, and a pruned model file per name: the legitimate one and every hostile one."""
    root = tmp_path_factory.mktemp("trust")
    good = f"goodnet_{uuid.uuid4().hex[:8]}"
    (root / f"{good}.py").write_text(FACTORY)
    (root / "pwn.py").write_text(PWN)
    model = tiny_model()
    spec = ModelSpec(f"{good}:make", 10, (3, 8, 8))
    save_pruned(root / "good.pt", model, spec, PruningPlan.dense(spec.analyse(model)))
    payload = torch.load(root / "good.pt", weights_only=True)
    for name in HOSTILE:
        payload["spec"]["name"] = name
        torch.save(sealed(payload), root / file_name(name))  # a digest proves no origin: whoever edits, reseals
    (root / "good_module.txt").write_text(good)
    return root


@pytest.fixture
def inside(work, monkeypatch) -> Path:
    """Run from the work directory with the process's own sys.path (the work directory is
    not on it, as under the `compress` script), restored afterwards."""
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(work))])
    return work


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# -- compress info and the Python API, in a fresh process (Must show) ------------------------------------
PROBE = r'''
import json, os, sys
from click.testing import CliRunner
from compressor.cli import main
from compressor.runfiles.modelfile import load_pruned
from compressor.trust import UntrustedCodeError

names, files = json.loads(sys.argv[1]), json.loads(sys.argv[2])
watched = ["http.server", "code", "pwn"]
report = {"already": [m for m in watched if m in sys.modules], "cli": {}, "api": {}}
for name, path in zip(names, files):
    result = CliRunner().invoke(main, ["info", path])
    report["cli"][name] = [result.exit_code, result.output]
    try:
        load_pruned(path)
        report["api"][name] = "loaded"
    except UntrustedCodeError as error:
        report["api"][name] = str(error)
report["imported"] = [m for m in watched if m in sys.modules]
report["cwd_on_path"] = os.getcwd() in sys.path
report["marker"] = os.path.exists("PWNED")
# The control: with trust_code the same file does import pwn, so the probe can see an import.
try:
    load_pruned(files[names.index("pwn:make")], trust_code=True)
except SystemExit as stop:
    report["trusted"] = str(stop)
report["marker_after_trust"] = os.path.exists("PWNED")
report["imported_after_trust"] = [m for m in watched if m in sys.modules]
print("REPORT " + json.dumps(report))
'''


def test_info_and_load_pruned_refuse_hostile_names_without_importing_them(work, tmp_path):
    """One child process: `compress info` (CliRunner there) and `load_pruned` on every hostile
    file; then nothing watched is imported, the marker is absent and cwd was not added."""
    repo = Path(__file__).resolve().parents[2]
    # The probe is a file outside the work directory, so sys.path[0] is its folder and the
    # work directory (the cwd) is not on sys.path: pwn.py is found only if the tool adds it.
    probe = tmp_path / "probe_main.py"
    probe.write_text(PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    files = [str(work / file_name(n)) for n in HOSTILE]
    done = subprocess.run([sys.executable, str(probe), json.dumps(HOSTILE), json.dumps(files)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and len(lines) == 1, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(lines[0][len("REPORT "):])
    # The tool's own imports bring in `code` (so for it only the refusal can be checked),
    # never http.server or pwn: their absence below means the refusal did not import them.
    assert "http.server" not in report["already"] and "pwn" not in report["already"]
    for name in HOSTILE:
        module = name.split(":")[0]
        code, output = report["cli"][name]
        lines = output.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (name, output)
        for text in (f"module '{module}'", "--trust-code", file_name(name)):
            assert text in lines[0], (name, lines[0])
        assert f"module '{module}'" in report["api"][name] and "trust_code=True" in report["api"][name]
    assert report["imported"] == report["already"] and not report["marker"] and not report["cwd_on_path"]
    # The control shows the probe would have seen it: trusted, pwn is imported (and its make() called).
    assert report["marker_after_trust"] and "pwn" in report["imported_after_trust"]
    assert report["trusted"] == "pwn.make was called"
    (work / MARKER).unlink()


def test_info_with_trust_code_loads_a_legitimate_local_factory(inside):
    good = (inside / "good_module.txt").read_text()
    imported = good in sys.modules  # the prune fixture below imports it, should it run first
    refused = invoke("info", "good.pt")
    one_line_error(refused, f"module '{good}'", "--trust-code")
    assert (good in sys.modules) == imported and str(inside) not in sys.path
    # Trusted, the module is found in the current directory although sys.path lacks it,
    # as a typed --model's module is: the case of a run of one's own factory.
    result = invoke("info", "good.pt", "--trust-code", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"].startswith(f"{good}:make (pruned")
    assert report["params"] == sum(p.numel() for p in tiny_model().parameters())


# -- export, bench and the Python API of each, with the local pwn:make -------------------------------
@pytest.mark.parametrize("command", [["info"], ["export"], ["bench", "--backend", "torch"]], ids=lambda c: c[0])
@pytest.mark.parametrize("name", ["pwn:make", "sys:exit"])
def test_every_loading_command_refuses_before_importing(inside, command, name):
    before = snapshot(inside)
    result = invoke(*command, file_name(name), "--out", str(inside / "out")) if command[0] != "info" else \
        invoke("info", file_name(name))
    one_line_error(result, f"module '{name.split(':')[0]}'", "--trust-code", file_name(name))
    assert "pwn" not in sys.modules and not (inside / MARKER).exists()
    assert snapshot(inside) == before  # nothing written: no out dir, no cache, no marker


def test_export_and_bench_sources_load_a_trusted_local_factory(inside):
    from compressor.bench.subjects import resolve
    from compressor.export.sources import resolve_source

    good = (inside / "good_module.txt").read_text()
    source = resolve_source("good.pt", trust_code=True)
    assert source.name == f"{good}:make" and source.kind == "file"
    [group] = resolve(["good.pt"], trust_code=True)
    assert [s.variant for s in group.subjects] == ["dense", "pruned"]


# -- prune --resume and --config ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def factory_run(work) -> Path:
    """A finished two-epoch run of the local factory, started the way a user would (typed
    --model, from the directory holding the module)."""
    good = (work / "good_module.txt").read_text()
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    os.chdir(work)
    try:
        result = invoke("prune", "--model", f"{good}:make", "--epochs", "2", "--monitor-start", "1",
                        "--max-prune-epoch", "1", "--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-val", "32",
                        "--batch-size", "32", "--no-progress", "--out", "run")
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
    assert result.exit_code == 0, result.output
    return work / "run"


def test_prune_resume_refuses_a_checkpoint_naming_code(inside, factory_run, tmp_path):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    payload = load_checkpoint(factory_run / LATEST)
    payload["model_name"] = "pwn:make"
    save_checkpoint(tampered / LATEST, {k: v for k, v in payload.items() if k != "format"})
    before = snapshot(tmp_path), snapshot(inside)
    result = invoke("prune", "--resume", str(tampered))
    one_line_error(result, "module 'pwn'", "--trust-code", LATEST)
    assert "pwn" not in sys.modules and not (inside / MARKER).exists()
    assert (snapshot(tmp_path), snapshot(inside)) == before


def test_prune_resume_needs_trust_code_for_its_own_factory_run(inside, factory_run):
    good = (inside / "good_module.txt").read_text()
    before = snapshot(factory_run)
    one_line_error(invoke("prune", "--resume", str(factory_run)), f"module '{good}'", "--trust-code")
    assert snapshot(factory_run) == before
    result = invoke("prune", "--resume", str(factory_run), "--trust-code")  # finished: rewrites its artifacts
    assert result.exit_code == 0, result.output
    assert "done:" in result.output


def test_a_config_file_is_a_file_too(inside, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: pwn:make\nepochs: 1\n")
    before = snapshot(inside)
    result = invoke("prune", "--config", str(config), "--out", str(tmp_path / "never"))
    one_line_error(result, "--config file", "module 'pwn'", "--trust-code")
    config.write_text("model: resnet20\ntrust_code: true\n")  # a file cannot vouch for itself
    result = invoke("prune", "--config", str(config), "--out", str(tmp_path / "never"))
    assert result.exit_code == 2 and "sets trust_code" in result.output, result.output
    assert not (tmp_path / "never").exists() and snapshot(inside) == before and not (inside / MARKER).exists()


def test_every_loading_command_documents_trust_code():
    for command in (["info"], ["export"], ["bench"], ["prune"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "--trust-code" in result.output, command
        assert "module.path:factory" in " ".join(result.output.split()), command
