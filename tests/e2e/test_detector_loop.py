"""The README's detector example, run as written: OneCyclePruner inside a torchvision
detector's own training loop prunes mid-training, the optimizer keeps going and the loss
keeps falling.  The loop keeps its last ``loss`` referenced across the prune, as most
loops do; slicing must not leave autograd holding the old parameter shapes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def readme_detector_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- detector-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its detector example"
    return match.group(1)


def test_one_cycle_prunes_inside_a_detectors_training_loop(capsys):
    namespace: dict = {}
    exec(compile(readme_detector_example(), "README detector example", "exec"), namespace)  # noqa: S102
    pruner, losses, model, optimizer = (namespace[k] for k in ("pruner", "epoch_losses", "model", "optimizer"))
    pruned_at = pruner.state.prune_epochs
    assert pruned_at and pruned_at[0] <= 2  # mid-training, by the cap
    assert pruner.macs <= 0.71 * pruner.dense_macs
    after = losses[pruned_at[0] + 1:]
    assert len(after) >= 2 and after[-1] < after[0] and after[-1] < losses[0]  # still learning after the slice
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in model.parameters())  # the same optimizer trains the sliced model
    model.eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 64, 64)])
    assert set(detections[0]) == {"boxes", "labels", "scores"}
    assert "pruned" in capsys.readouterr().out
