"""Running ``compress`` as a real subprocess: what the resume and error tests share.

Every run is this tree's ``compressor`` (``sys.executable -m compressor``), never
whatever ``compress`` is on PATH.  Kill/resume tests kill the run at a chosen
write, not at a polled moment: the subprocess is a small driver that wraps the
run's real ``save_checkpoint`` and SIGKILLs its own process at epoch N's
``checkpoint.pt``, either just after it is written or just before (the metrics
line of epoch N is already on disk then, the checkpoint still holds epoch N-1).
The training itself is the real one; only the moment of death is chosen.

``colour_run`` is the real run the INT8 export and eval tests share: a ResNet-20 trained on
a small folder of colour images that it learns for certain.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from compressor.training.checkpoint import LATEST, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# PYTHONPATH first: ``-m compressor`` then imports this tree whatever the working
# directory, not an installed copy.
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]  # one class each
AFTER_CHECKPOINT = "after-checkpoint"
BEFORE_CHECKPOINT = "before-checkpoint"  # between epoch N's metrics line and its checkpoint

_KILL_DRIVER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.cli_runs import die_at_checkpoint
die_at_checkpoint(int(sys.argv[1]), sys.argv[2], sys.argv[3:])
"""


def compress(*args: str, check: bool = True, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``env``: variables set for this run on top of ENV (a cache directory, say)."""
    result = subprocess.run(
        [sys.executable, "-m", "compressor", *args], capture_output=True, text=True, env={**ENV, **(env or {})},
        timeout=600, **kwargs
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def make_image_folder(root: Path, train: int = 60, val: int = 12, size: int = 20, flat: bool = False,
                      classes: int = len(COLOURS)) -> Path:
    """``root/{train,val}/class<i>/<n>.png``: COLOURS[i] plus noise (none with ``flat``), the first ``classes``."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, colour in enumerate(COLOURS[:classes]):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = 0 if flat else rng.normal(0, 40, (size, size, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def colour_run(root: Path) -> Path:
    """``root/run``: ``compress prune`` of a ResNet-20 on ``root/images`` (make_image_folder), 16 px
    images, three epochs: a model sure of its classes, so that 8-bit rounding flips none."""
    make_image_folder(root / "images")
    run = root / "run"
    compress("prune", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", str(root / "images"),
             "--input-size", "16", "--batch-size", "16", "--epochs", "3", "--max-prune-epoch", "1",
             "--monitor-start", "1", "--no-progress", "--out", str(run))
    return run


def one_error_line(result: subprocess.CompletedProcess, exit_code: int, *hints: str) -> str:
    """The exact exit code, no traceback, exactly one 'Error:' line on stderr holding every hint."""
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for hint in hints:
        assert hint in errors[0], errors[0]
    return errors[0]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_epoch(out: Path) -> int:
    return int(load_checkpoint(out / LATEST)["epoch"])


def kill_at_checkpoint(args: list[str], out: Path, epoch: int, when: str, command: str = "prune") -> None:
    """Run ``compress prune ARGS --out OUT`` (or ``compress run``: ``command``) and have it SIGKILL itself at epoch
    ``epoch``'s checkpoint (numbered from 1, as the checkpoint's ``epoch``) (``when``: AFTER_CHECKPOINT or BEFORE_CHECKPOINT); then
    check that the directory holds exactly what that kill point leaves."""
    command = [sys.executable, "-c", _KILL_DRIVER, str(epoch), when, command, *args, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == -signal.SIGKILL, f"not killed at epoch {epoch}:\n{done.stdout}{done.stderr[-3000:]}"
    assert len(metrics(out)) == epoch
    assert checkpoint_epoch(out) == (epoch if when == AFTER_CHECKPOINT else epoch - 1)


def die_at_checkpoint(epoch: int, when: str, args: list[str]) -> None:
    """In the driver process: run ``compress ARGS`` here, SIGKILL-ing this process
    around the write of epoch ``epoch``'s checkpoint.pt."""
    import compressor.training.loop as training
    from compressor.cli import main

    real_save = training.save_checkpoint

    def save_and_die(path: Path, payload: dict) -> Path:
        due = Path(path).name == LATEST and payload["epoch"] == epoch
        if due and when == BEFORE_CHECKPOINT:
            os.kill(os.getpid(), signal.SIGKILL)
        saved = real_save(path, payload)
        if due:
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    if when not in (AFTER_CHECKPOINT, BEFORE_CHECKPOINT):
        raise ValueError(f"unknown kill point {when!r}")
    training.save_checkpoint = save_and_die
    main(args=args, prog_name="compress")
