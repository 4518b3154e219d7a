"""A user's project with a ``models/`` package of its own (most ML repositories have one).

The install puts only ``compressor`` on the import path, so ``models.mynet:build`` typed
in that project is the user's module, not ours.  Run as the user would: the installed
package, a subprocess whose working directory is the project, no PYTHONPATH.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROJECT = {
    "models/__init__.py": "",
    "models/mynet.py": (
        "from torch import nn\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes))\n"
        "build.input_size = (3, 16, 16)\n"
    ),
    "exporters/__init__.py": "raise ImportError('the user project exporters package must not be imported')\n",
    "benchmarks/__init__.py": "raise ImportError('the user project benchmarks package must not be imported')\n",
}


def make_project(root):
    for relative, text in PROJECT.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_in(project, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "compressor", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def test_info_builds_the_users_own_models_package(tmp_path):
    make_project(tmp_path)
    done = run_in(tmp_path, "info", "models.mynet:build", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["params"] == 3 * 6 * 9 + 6 + 2 * 6 + 6 * 10 + 10  # conv, BN affine, linear: the user's net
    assert report["input_size"] == [3, 16, 16]


def test_export_of_the_users_model_loads_none_of_the_projects_other_packages(tmp_path):
    """The project's exporters/ and benchmarks/ packages raise on import: export and the
    gate run through compressor.export without ever touching them."""
    make_project(tmp_path)
    done = run_in(tmp_path, "export", "models.mynet:build", "--opset", "17", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "ok"
