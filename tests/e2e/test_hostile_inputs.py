"""Hostile and careless inputs: each is one line, a non-zero exit, and changes nothing
outside the output directory.

The table runs the real CLI in-process (click's CliRunner); the two cases that need a
process of their own (timm made unimportable, a file-size limit that makes the final
``model.pt`` write fail like a full disk) run a small driver in a subprocess.  Every
row snapshots the whole temp tree before and after and allows changes only under the
row's output directory.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.cli import main
from tests.cli_runs import ENV
from tests.hostile import TINY, set_key, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def assert_one_line(output: str, exit_code: int, got: int, hint: str) -> None:
    """The exit code, no traceback, exactly one "Error:" line, holding the hint."""
    assert got == exit_code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and hint in errors[0], output


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished two-epoch run: the checkpoint the tampering rows edit."""
    out = tmp_path_factory.mktemp("base") / "run"
    result = CliRunner().invoke(main, ["prune", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _tampered(edit):
    """A copy of the base run whose checkpoint.pt was edited by ``edit(payload)`` and its digest
    recomputed: the digest catches damage, not a deliberate edit (whoever edits can recompute
    it), so every check these rows reach must hold on its own."""

    def make(tmp_path: Path, base_run: Path) -> list[str]:
        from compressor.runfiles.integrity import sealed

        run = tmp_path / "out"
        shutil.copytree(base_run, run)
        payload = torch.load(run / "checkpoint.pt", weights_only=True)
        edit(payload)
        torch.save(sealed(payload), run / "checkpoint.pt")
        return ["prune", "--resume", str(run)]

    return make


def _delete(*keys):
    def edit(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def _wrong_shape(payload):
    state = payload["model"]["state_dict"]
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name] = torch.zeros(3, 3, 3, 3)


def _missing_weight(payload):
    state = payload["model"]["state_dict"]
    del state[next(iter(state))]


def _config_file(text: str, *extra: str):
    def make(tmp_path: Path, base_run: Path) -> list[str]:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        small = [a for i, a in enumerate(TINY) if "--epochs" not in TINY[max(i - 1, 0):i + 1]]  # were it accepted
        return ["prune", "--config", str(path), *small, *extra, "--out", str(tmp_path / "out")]

    return make


def _resume_with(*extra: str):
    def make(tmp_path: Path, base_run: Path) -> list[str]:
        run = tmp_path / "out"
        shutil.copytree(base_run, run)
        (tmp_path / "cfg.yaml").write_text("epochs: 2\n")
        (tmp_path / "w.pt").write_bytes(b"")
        given = [a.replace("CFG", str(tmp_path / "cfg.yaml")).replace("W", str(tmp_path / "w.pt")) for a in extra]
        return ["prune", "--resume", str(run), *given]

    return make


def _image_folder(classes: int, corrupt: bool):
    def make(tmp_path: Path, base_run: Path) -> list[str]:
        from PIL import Image

        root = tmp_path / "images"
        for split in ("train", "val"):
            for c in range(classes):
                folder = root / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(4):
                    Image.new("RGB", (12, 12), (40 * c, 8 * i, 90)).save(folder / f"{i}.jpg")
        if corrupt:
            (root / "train" / "class1" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
        return ["prune", "--dataset", "imagefolder", "--data-dir", str(root), "--input-size", "8", "--batch-size", "4",
                "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out")]

    return make


def _args(*args: str):
    return lambda tmp_path, base_run: [a.replace("OUT", str(tmp_path / "out")) for a in args]


def _export_model_file(*extra: str):
    return lambda tmp_path, base_run: ["export", str(base_run / "model.pt"), *extra, "--out", str(tmp_path / "out")]


# (id, how to build the command, exit code, a distinctive part of the one line)
CASES = [
    ("seed-2**70", _args("prune", *TINY, "--seed", str(2**70), "--out", "OUT"), 2, "--seed"),
    ("device-banana", _args("prune", *TINY, "--device", "banana", "--out", "OUT"), 1, "--device must be auto"),
    ("num-classes--5", _args("info", "resnet20", "--num-classes", "-5"), 2, "--num-classes"),
    ("info-input-size-huge", _args("info", "resnet20", "--input-size", "3,100000,100000"), 1, "needs about"),
    ("export-input-size-huge", _args("export", "resnet20", "--input-size", "3,100000,100000", "--out", "OUT"), 1,
     "needs about"),
    ("export-max-batch-100000", _export_model_file("--max-batch", "100000"), 1, "needs about"),
    ("export-atol-inf", _export_model_file("--atol", "inf"), 2, "--atol"),
    ("export-rtol-0.5", _export_model_file("--rtol", "0.5"), 1, "--rtol must be between 0 and"),
    ("export-file-input-size", _export_model_file("--input-size", "3,16,16"), 1, "--input-size applies to a model-name"),
    ("export-trace-with-a-branch", _args("export", "tests.export_models:doubles_past_four", "--input-size", "3,8,8",
                                         "--out", "OUT"), 1, "--allow-trace"),
    ("config-epochs-1.7", _config_file("epochs: 1.7\n"), 2, "epochs must be an integer, got 1.7"),
    ("config-epochs-true", _config_file("epochs: true\n"), 2, "epochs must be an integer, got True"),
    ("config-lr-string", _config_file("lr: '0.1'\n"), 2, "lr must be a number"),
    ("resume-with-config", _resume_with("--config", "CFG"), 1, "--config"),
    ("resume-with-weights", _resume_with("--weights", "W"), 1, "--weights"),
    ("ckpt-epoch-x", _tampered(set_key("epoch", "x")), 1, "'epoch' is str"),
    ("ckpt-epoch-negative", _tampered(set_key("epoch", -3)), 1, "'epoch' is -3"),
    ("ckpt-lr-string", _tampered(set_key("config", "lr", "0.1")), 1, "lr must be float"),
    ("ckpt-epochs-float", _tampered(set_key("config", "epochs", 1.7)), 1, "epochs must be int"),
    ("ckpt-device-meta", _tampered(set_key("config", "device", "meta")), 1, "--device must be auto"),
    ("ckpt-other-architecture", _tampered(set_key("model_name", "resnet56")), 1, "does not fit the run"),
    ("ckpt-wrong-shape", _tampered(_wrong_shape), 1, "does not fit the run"),
    ("ckpt-missing-weight", _tampered(_missing_weight), 1, "does not fit the run"),
    ("ckpt-missing-optimizer", _tampered(_delete("optimizer")), 1, "'optimizer' is missing"),
    ("ckpt-missing-config", _tampered(_delete("config")), 1, "'config' is missing"),
    ("ckpt-pruner-garbage", _tampered(set_key("pruner", "state", "x")), 1, "no list of applied plans"),
    ("lr-1e6-nan", _args("prune", *TINY, "--lr", "1e6", "--out", "OUT"), 1, "the loss became nan"),
    ("epochs-1-target-not-reached",
     _args("prune", *TINY[:-5], "--no-progress", "--epochs", "1", "--out", "OUT"), 1, "without reaching its target"),
    ("one-class-folder", _image_folder(1, corrupt=False), 1, "only one class folder"),
    ("corrupt-jpg", _image_folder(2, corrupt=True), 1, "cannot read image"),
]


@pytest.mark.parametrize("make, exit_code, hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line(tmp_path, base_run, make, exit_code, hint):
    args = make(tmp_path, base_run)
    out = tmp_path / "out"
    outside, base = snapshot(tmp_path, skip=out), snapshot(base_run.parent)
    result = CliRunner().invoke(main, args)
    assert_one_line(result.output, exit_code, result.exit_code, hint)
    assert snapshot(tmp_path, skip=out) == outside and snapshot(base_run.parent) == base


def test_corrupt_image_line_names_the_file(tmp_path, base_run):
    result = CliRunner().invoke(main, _image_folder(2, corrupt=True)(tmp_path, base_run))
    assert_one_line(result.output, 1, result.exit_code, str(Path("train") / "class1" / "2.jpg"))


def test_resume_allows_display_only_progress(tmp_path, base_run):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    result = CliRunner().invoke(main, ["prune", "--resume", str(run), "--progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


class _NanAfterFirstEvaluation:
    """The validation split, with one NaN pixel from the second evaluation on (epoch 2's):
    training never sees it, so the training loss stays finite and only validation is NaN."""

    def __init__(self, split):
        self.split, self.evaluations = split, 0

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, index_batches, seeds):
        self.evaluations += 1
        for position, (images, labels) in enumerate(self.split.batches(index_batches, seeds)):
            if self.evaluations >= 2 and position == 0:
                images = images.clone()
                images[0, 0, 0, 0] = float("nan")
            yield images, labels


def test_nan_only_in_validation_stops_the_run(tmp_path, monkeypatch):
    """README: "NaN loss stops the run", validation included (training.Trainer.run)."""
    import dataclasses

    import compressor.training.run as run

    real = run.load_data

    def load_data(config):
        data = real(config)
        return dataclasses.replace(data, val_split=_NanAfterFirstEvaluation(data.val_split))

    monkeypatch.setattr(run, "load_data", load_data)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["prune", *TINY, "--out", str(out)])
    assert_one_line(result.output, 1, result.exit_code, "the loss became nan at validation after epoch 2")
    assert f"the last good checkpoint {out / 'checkpoint.pt'} is kept" in result.output
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1] and all(map(math.isfinite, (epochs[0]["train_loss"], epochs[0]["val_loss"])))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "model.pt").exists() and not (out / "summary.json").exists()


# -- cases that need a process of their own ------------------------------------------------------------
_NO_TIMM = "import sys; sys.modules['timm'] = None\nfrom compressor.cli import main\nmain(sys.argv[1:])\n"
# A file-size limit makes the write of the final model.pt fail with EFBIG, as a full disk
# would; set only at that write so the checkpoints before it are real.
_FULL_AT_MODEL = """
import resource, signal, sys
import compressor.training.run as run
real = run.save_pruned
def limited(*args, **kwargs):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    return real(*args, **kwargs)
run.save_pruned = limited
from compressor.cli import main
main(sys.argv[1:])
"""


def _driver(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=300)


def test_timm_family_without_timm_names_the_extra(tmp_path):
    done = _driver(_NO_TIMM, "models", "--family", "timm", cwd=tmp_path)
    assert_one_line(done.stderr, 1, done.returncode, "onecycle-compress[timm]")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_at_model_pt_says_the_checkpoint_is_intact(tmp_path):
    out = tmp_path / "out"
    done = _driver(_FULL_AT_MODEL, "prune", *TINY, "--out", str(out), cwd=tmp_path)
    assert_one_line(done.stderr, 1, done.returncode, "the disk is full; the last checkpoint")
    assert "no earlier checkpoint" not in done.stderr and "--resume" in done.stderr
    assert not (out / "model.pt").exists() and not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert CliRunner().invoke(main, ["prune", "--resume", str(out)]).exit_code == 0  # and it can finish
    assert (out / "model.pt").is_file()




# -- a model returning a tuple at export: every output exported and gated; a None refused -----------
TUPLE_MODULE = (
    "from torch import nn\n"
    "class Two(nn.Module):\n"
    "    def __init__(self, last=None):\n"
    "        super().__init__(); self.conv = nn.Conv2d(3, 8, 3); self.fc = nn.Linear(8, 10); self.last = last\n"
    "    def forward(self, x):\n"
    "        f = self.conv(x).mean((2, 3)); return self.fc(f), (f if self.last is None else None)\n"
    "def make(num_classes=10):\n"
    "    return Two()\n"
    "def make_none(num_classes=10):\n"
    "    return Two(last='none')\n"
)


def test_export_of_a_tuple_model_gates_both_outputs(tmp_path, monkeypatch):
    (tmp_path / "tuplemod.py").write_text(TUPLE_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", "tuplemod:make", "--input-size", "3,16,16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["output_0", "output_1"]
    assert manifest["parity"]["passed"] and manifest["parity"]["outputs"] == 2


def test_export_of_a_model_returning_none_is_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "tuplemod.py").write_text(TUPLE_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=out)
    result = CliRunner().invoke(main, ["export", "tuplemod:make_none", "--input-size", "3,16,16", "--out", str(out)])
    assert_one_line(result.output, 1, result.exit_code, "the model's output[1] is a NoneType, not a tensor")
    assert snapshot(tmp_path, skip=out) == before
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


# -- item 4: bench reuses only what it verified ----------------------------------------------------------
FAST = ["--backend", "onnxruntime", "--batch-size", "1", "--warmup-s", "0", "--warmup-runs", "1", "--min-runs", "3",
        "--min-time-s", "0", "--rounds", "1"]


@pytest.fixture(scope="module")
def planted_bench(base_run, tmp_path_factory):
    """Bench a copy of the run whose cache holds a planted pruned ONNX (the dense one,
    renamed: a valid file that would fake a speed-up of 1x and a wrong graph)."""
    from compressor.bench.subjects import _digest

    run = tmp_path_factory.mktemp("bench") / "run"
    shutil.copytree(base_run, run)
    cache = run / "bench" / "cache" / _digest(run / "model.pt")
    cache.mkdir(parents=True)
    planted = b"planted: not an ONNX file this tool made"
    (cache / "resnet20-pruned.onnx").write_bytes(planted)
    result = CliRunner().invoke(main, ["bench", str(run), *FAST, "--out", str(run / "report")])
    return run, cache, planted, result


def test_bench_rebuilds_a_planted_cache_file(planted_bench):
    run, cache, planted, result = planted_bench
    assert result.exit_code == 0, result.output
    from compressor.hashing import file_sha256

    rebuilt = cache / "resnet20-pruned.onnx"
    assert rebuilt.read_bytes() != planted  # (the CLI also logs "... rebuilding it" on stderr)
    assert json.loads((cache / ".resnet20-pruned.onnx.record.json").read_text())["sha256"] == file_sha256(rebuilt)
    records = json.loads((run / "report" / "bench.json").read_text())["records"]
    pruned = next(r for r in records if r["variant"] == "pruned")
    assert 1.9 < pruned["macs_ratio"] < 2.2


def test_bench_refuses_a_manifest_whose_macs_do_not_match_the_graph(planted_bench, tmp_path):
    from compressor.bench.provenance import onnx_macs

    _, cache, _, _ = planted_bench
    shutil.copy(cache / "resnet20-pruned.onnx", tmp_path / "model.onnx")
    counted = onnx_macs(tmp_path / "model.onnx")
    for claimed, ok in ((1, False), ("many", False), (counted, True)):
        (tmp_path / "manifest.json").write_text(json.dumps({"files": {"model.onnx": {}}, "macs": claimed}))
        result = CliRunner().invoke(main, ["bench", str(tmp_path / "model.onnx"), *FAST, "--out", str(tmp_path / "r")])
        if ok:
            assert result.exit_code == 0, result.output
            assert json.loads((tmp_path / "r" / "bench.json").read_text())["records"][0]["macs"] == counted
        else:
            assert_one_line(result.output, 1, result.exit_code, f"claims {claimed!r} MACs but the ONNX graph has")
            assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("multiple", ["abc", 1.5, None, 0, True, 3])
def test_a_cached_round_to_that_is_not_a_multiple_is_measured_again(tmp_path, multiple):
    from compressor.bench.rounding import _read_cached

    entry = {"multiple": multiple, "scores": {"8": 0.9}, "latency_ms": {"64": 1.0}, "config": {}, "environment": {}}
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    assert _read_cached(tmp_path / "entry.json") is None
    entry["multiple"] = 8
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    assert _read_cached(tmp_path / "entry.json").multiple == 8
