"""Running ``compress`` as a real subprocess: what the resume tests share."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def compress(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "compressor", *args], capture_output=True, text=True, env=ENV, timeout=600, **kwargs
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def kill_after_epochs(args: list[str], out: Path, epochs: int, timeout_s: float = 300) -> None:
    """Start ``compress prune ARGS --out OUT`` and SIGKILL it once ``epochs`` metric lines exist."""
    process = subprocess.Popen(
        [sys.executable, "-m", "compressor", "prune", *args, "--out", str(out)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout_s
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.time() < deadline and len((out / "metrics.jsonl").read_text().splitlines()) < epochs:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
