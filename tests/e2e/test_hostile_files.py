"""Hostile and damaged files: a graph that runs for ever, a model file or checkpoint whose
bytes were damaged or whose contents were edited.  Each is one ``Error:`` line naming the
file and what was hit, exit code 1, and nothing on disk changed -- for a refused resume,
not the run either: resuming never writes over a run it cannot show it continued.

The time limit is injected (``COMPRESS_ORT_RUN_LIMIT_S``, a fraction of a second against a
graph of 10^15 iterations): no row depends on how fast this machine is.  Edits that should
reach a check behind the digest recompute it (``sealed``): whoever edits a file on purpose
can, so those checks must hold on their own; the rows that do not reseal are the damage the
digest exists for.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import Result

from compressor.export.runlimit import LIMIT_ENV
from compressor.runfiles.integrity import DIGEST_KEY, sealed
from tests.hostile import TINY, invoke, set_key, snapshot
from tests.unit.test_runlimit import looping_onnx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = ["--dataset", "synthetic", *TINY]  # the dataset said, whatever the default becomes
FAST_BENCH = ["--backend", "onnxruntime", "--batch-size", "1", "--warmup-s", "0", "--warmup-runs", "1",
              "--min-runs", "3", "--min-time-s", "0", "--rounds", "1"]
EVAL = ["--data", "synthetic", "--limit", "8"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished two-epoch run: its model.pt and checkpoint.pt are what the rows damage or edit."""
    out = tmp_path_factory.mktemp("base") / "run"
    result = invoke("prune", *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# -- ways to damage or edit a file ----------------------------------------------------------------------


def write_noise_into_tensor_data(path: Path, size: int = 4096) -> None:
    """4 KB of random bytes written over the middle of the largest tensor stored in ``path`` (a
    torch zip file): the file still loads, its weights are garbage."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert record.compress_type == zipfile.ZIP_STORED and record.file_size > size
    with path.open("r+b") as stream:
        stream.seek(record.header_offset + 26)
        name_length, extra_length = (int.from_bytes(stream.read(2), "little") for _ in range(2))
        start = record.header_offset + 30 + name_length + extra_length
        stream.seek(start + (record.file_size - size) // 2)
        stream.write(torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(0))
                     .to(torch.uint8).numpy().tobytes())


def _edit(path: Path, edit, reseal: bool) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(sealed(payload) if reseal else payload, path)


def _weights_as(dtype: torch.dtype, state: str):
    """Every floating tensor of the state dict (``state``: where it is in the payload) as ``dtype``."""
    def edit(payload):
        holder = payload[state] if state == "state_dict" else payload[state]["state_dict"]
        for key, value in holder.items():
            if value.is_floating_point():
                holder[key] = value.to(dtype)

    return edit


def _drop_digest(payload):
    del payload[DIGEST_KEY]


# -- rows -------------------------------------------------------------------------------------------------


def _copy(tmp_path: Path, base_run: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    return run


def _model_file(command: str, damage):
    """``command`` on a copy of the run's model.pt damaged by ``damage(path)``."""
    def make(tmp_path: Path, base_run: Path) -> list:
        path = tmp_path / "model.pt"
        shutil.copy(base_run / "model.pt", path)
        damage(path)
        extra = {"info": [], "eval": EVAL, "export": ["--out", tmp_path / "out"],
                 "bench": ["--backend", "torch", "--out", tmp_path / "out"]}[command]
        return [command, path, *extra]

    return make


def _resume(damage):
    """``prune --resume`` of a copy of the run whose checkpoint.pt was damaged by ``damage(path)``."""
    def make(tmp_path: Path, base_run: Path) -> list:
        run = _copy(tmp_path, base_run)
        damage(run / "checkpoint.pt")
        return ["prune", "--resume", run]

    return make


def _edited(edit, reseal: bool = True):
    return lambda path: _edit(path, edit, reseal)


def _without_metrics(path: Path) -> None:
    (path.parent / "metrics.jsonl").write_text("")  # a run whose log says no epoch finished


def _looping(command: str):
    def make(tmp_path: Path, base_run: Path) -> list:
        path = looping_onnx(tmp_path / "looping.onnx")
        extra = EVAL if command == "eval" else [*FAST_BENCH, "--out", tmp_path / "out"]
        return [command, path, *extra]

    return make


LIMIT = f"the limit of 0.5 s per run"
INTEGRITY = "fails its integrity check"
# (id, how to build the command, a distinctive part of the one line)
CASES = [
    ("eval-onnx-loop-1e15", _looping("eval"), ["looping.onnx", LIMIT, LIMIT_ENV]),
    ("bench-onnx-loop-1e15", _looping("bench"), ["looping.onnx", LIMIT, LIMIT_ENV]),
    ("info-noise-in-tensor-data", _model_file("info", write_noise_into_tensor_data), ["model.pt", INTEGRITY]),
    ("eval-noise-in-tensor-data", _model_file("eval", write_noise_into_tensor_data), ["model.pt", INTEGRITY]),
    ("export-noise-in-tensor-data", _model_file("export", write_noise_into_tensor_data), ["model.pt", INTEGRITY]),
    ("bench-noise-in-tensor-data", _model_file("bench", write_noise_into_tensor_data), ["model.pt", INTEGRITY]),
    ("info-edited-num-classes", _model_file("info", _edited(set_key("spec", "num_classes", 11), reseal=False)),
     ["model.pt", INTEGRITY]),
    ("info-float64-weights", _model_file("info", _edited(_weights_as(torch.float64, "state_dict"))),
     ["model.pt", "is float64 where the architecture holds float32"]),
    ("info-int32-weights", _model_file("info", _edited(_weights_as(torch.int32, "state_dict"))),
     ["model.pt", "is int32 where the architecture holds float32"]),
    ("resume-noise-in-tensor-data", _resume(write_noise_into_tensor_data), ["checkpoint.pt", INTEGRITY]),
    ("resume-epoch-999-edited", _resume(_edited(set_key("epoch", 999), reseal=False)), ["checkpoint.pt", INTEGRITY]),
    ("resume-epoch-999-resealed", _resume(_edited(set_key("epoch", 999))),
     ["checkpoint.pt", "cannot belong to its run", "epoch 999 of a 2-epoch run"]),
    ("resume-epoch-999-of-999-resealed", _resume(_edited(lambda p: (set_key("epoch", 999)(p),
                                                                     set_key("config", "epochs", 999)(p)))),
     ["checkpoint.pt", "metrics.jsonl has no record of epoch 999"]),
    ("resume-run-without-a-log", _resume(_without_metrics), ["checkpoint.pt", "has no record of epoch 2"]),
    ("resume-prune-after-the-epoch", _resume(_edited(set_key("pruner", "state", "prune_epochs", [5]))),
     ["checkpoint.pt", "cannot belong to its run", "prunes [5]"]),
    ("resume-float64-weights", _resume(_edited(_weights_as(torch.float64, "model"))),
     ["checkpoint.pt", "is float64 where the architecture holds float32"]),
    ("resume-no-digest", _resume(_edited(_drop_digest, reseal=False)), ["checkpoint.pt", "has no sha256 digest"]),
]


def shown_lines(text: str) -> list[str]:
    """The lines a terminal shows: of each line, what follows its last carriage return (a
    progress bar redraws itself with ``\\r`` and is cleared before the error)."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def assert_one_error_line(result: Result, *hints: str) -> str:
    """Exit 1 through SystemExit, no traceback, and stderr shows exactly one line: ``Error:`` with every hint."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = shown_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


def files(root: Path, skip: Path | None = None) -> dict:
    """``snapshot`` with folders by name only: a resume proves its folder writable with a probe
    file it removes at once, which moves the folder's mtime and nothing else."""
    return {name: "folder" if (root / name).is_dir() and not (root / name).is_symlink() else entry
            for name, entry in snapshot(root, skip).items()}


@pytest.mark.parametrize("make, hints", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_is_one_line(tmp_path, base_run, monkeypatch, make, hints):
    monkeypatch.setenv(LIMIT_ENV, "0.5")
    monkeypatch.chdir(tmp_path)  # bench's default places are relative: they must stay empty too
    args = make(tmp_path, base_run)
    out = tmp_path / "out"
    outside, base = files(tmp_path, skip=out), files(base_run.parent)  # a resumed run (tmp_path/run) included
    assert_one_error_line(invoke(*args), *hints)
    assert files(tmp_path, skip=out) == outside, "a refused command changed files outside its output"
    assert files(base_run.parent) == base


def test_the_noise_really_lands_in_the_weights(tmp_path, base_run):
    """Control for the noise rows: without the digest the damaged file loads, with other weights."""
    path = tmp_path / "model.pt"
    shutil.copy(base_run / "model.pt", path)
    before = torch.load(path, weights_only=True)["state_dict"]
    write_noise_into_tensor_data(path)
    after = torch.load(path, weights_only=True)["state_dict"]
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[key], after[key]) for key in before)


def test_an_intact_run_still_resumes(tmp_path, base_run):
    """The checks refuse only what cannot belong: the run as written resumes (to its artifacts again)."""
    run = _copy(tmp_path, base_run)
    result = invoke("prune", "--resume", run)
    assert result.exit_code == 0, result.output
    assert invoke("info", run / "model.pt").exit_code == 0


def test_a_model_file_from_before_digests_loads_with_a_warning(tmp_path, base_run):
    """Such a file is a deliverable whose run may be gone: loaded, and the user told that damage to
    it cannot be detected (modelfile.read_pruned says why it is not refused)."""
    path = tmp_path / "model.pt"
    shutil.copy(base_run / "model.pt", path)
    _edit(path, _drop_digest, reseal=False)
    result = invoke("info", path, "--json")
    assert result.exit_code == 0, result.output
    assert "has no sha256 digest" in result.stderr and str(path) in result.stderr
