"""The sha256 digest of model files and checkpoints (``compressor.runfiles.integrity``), the
dtype check of the weights, and the checks that a resumed checkpoint belongs to its run.

Each refusal is one line naming the file.  Files are real: written by ``save_pruned`` and
``save_checkpoint`` and edited the way a damaged disk or a hand would."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from compressor.engine.plan import PruningPlan
from compressor.errors import CompressorError
from compressor.training.checkpoint import CheckpointError, check_continues, load_checkpoint, save_checkpoint
from compressor.runfiles.integrity import DIGEST_KEY, check_digest, payload_digest, sealed
from compressor.runfiles.modelfile import ModelSpec, load_pruned, save_pruned

SPEC = ModelSpec("resnet20", 10, (3, 32, 32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from compressor.models.zoo import build

    model = build("resnet20", 10)
    return save_pruned(tmp_path_factory.mktemp("saved") / "model.pt", model, SPEC,
                       PruningPlan.dense(SPEC.analyse(model)))


def _copy_edited(saved: Path, tmp_path: Path, edit, reseal: bool) -> Path:
    payload = torch.load(saved, weights_only=True)
    edit(payload)
    path = tmp_path / "model.pt"
    torch.save(sealed(payload) if reseal else payload, path)
    return path


def _one_line(caught, path: Path) -> str:
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


# -- the digest ---------------------------------------------------------------------------------------


def test_the_digest_covers_every_value_tensor_bytes_dtype_and_shape_included():
    base = {"a": torch.arange(6, dtype=torch.float32), "meta": {"n": 1, "names": ["x", "y"]}, "f": 0.5}
    digest = payload_digest(base)
    assert payload_digest({**base}) == digest  # same values: same digest
    changed = [
        {**base, "a": base["a"].clone().index_fill_(0, torch.tensor([3]), 9.0)},  # one value
        {**base, "a": base["a"].double()},  # dtype
        {**base, "a": base["a"].reshape(2, 3)},  # shape
        {**base, "meta": {"n": 2, "names": ["x", "y"]}},
        {**base, "meta": {"n": 1, "names": ("x", "y")}},  # a tuple is not a list
        {**base, "meta": {"n": True, "names": ["x", "y"]}},  # True is not 1
        {**base, "f": 0.5000001},
        {**base, "extra": None},
        {k: v for k, v in base.items() if k != "f"},
    ]
    assert len({payload_digest(p) for p in changed} | {digest}) == len(changed) + 1


def test_the_digest_leaves_itself_out_and_survives_a_save_and_load(tmp_path):
    payload = sealed({"w": torch.randn(3, 3), "t": torch.zeros((), dtype=torch.int64), "e": torch.zeros(0)})
    assert payload_digest(payload) == payload[DIGEST_KEY]
    torch.save(payload, tmp_path / "p.pt")
    assert check_digest(torch.load(tmp_path / "p.pt", weights_only=True), tmp_path / "p.pt")


def test_a_non_contiguous_tensor_digests_as_its_values():
    values = torch.arange(12.0).reshape(3, 4)
    assert payload_digest({"w": values.t()}) == payload_digest({"w": values.t().contiguous()})


def test_a_value_no_writer_produces_is_refused_not_skipped(tmp_path):
    payload = {"odd": {1, 2}, DIGEST_KEY: "0" * 64}
    with pytest.raises(CompressorError, match="holds a set") as caught:
        check_digest(payload, tmp_path / "x.pt")
    _one_line(caught, tmp_path / "x.pt")


# -- pruned model files ----------------------------------------------------------------------------------


def test_a_model_file_carries_its_digest_and_loads(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload[DIGEST_KEY] == payload_digest(payload)
    load_pruned(saved)


@pytest.mark.parametrize("edit", [
    lambda p: p["state_dict"]["conv1.weight"].view(-1)[:4].add_(1.0),
    lambda p: p["spec"].update(num_classes=11),
    lambda p: p["plan"]["groups"].popitem(),
    lambda p: p.update(format_note="added"),
], ids=["weight", "spec", "plan", "added-key"])
def test_an_edited_model_file_is_refused_in_one_line(saved, tmp_path, edit):
    path = _copy_edited(saved, tmp_path, edit, reseal=False)
    with pytest.raises(CompressorError, match="fails its integrity check") as caught:
        load_pruned(path)
    _one_line(caught, path)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.float16])
def test_weights_of_another_dtype_are_refused_not_converted(saved, tmp_path, dtype):
    """Resealed: the digest vouches for the bytes, the dtype check for what they may be."""
    def edit(payload):
        payload["state_dict"]["fc.weight"] = payload["state_dict"]["fc.weight"].to(dtype)

    path = _copy_edited(saved, tmp_path, edit, reseal=True)
    with pytest.raises(CompressorError) as caught:
        load_pruned(path)
    message = _one_line(caught, path)
    assert f"fc.weight is {str(dtype)[6:]} where the architecture holds float32" in message


def test_a_model_file_from_before_digests_loads_with_a_warning(saved, tmp_path, caplog):
    path = _copy_edited(saved, tmp_path, lambda p: p.pop(DIGEST_KEY), reseal=False)
    with caplog.at_level(logging.WARNING, logger="compressor.runfiles.modelfile"):
        model, spec, _ = load_pruned(path)
    assert spec == SPEC and isinstance(model, nn.Module)
    assert any("has no sha256 digest" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_a_digest_that_is_not_text_is_refused(saved, tmp_path):
    path = _copy_edited(saved, tmp_path, lambda p: p.update({DIGEST_KEY: 123}), reseal=False)
    with pytest.raises(CompressorError, match="fails its integrity check"):
        load_pruned(path)


# -- checkpoints -------------------------------------------------------------------------------------------


def _checkpoint(epoch: int = 1, epochs: int = 2, prune_epochs=(0,)) -> dict:
    """What the trainer writes, in the fields load_checkpoint checks."""
    return {
        "epoch": epoch, "model_name": "resnet20", "config": {"epochs": epochs}, "spec": SPEC.to_dict(),
        "model": {"state_dict": {"w": torch.ones(3)}, "state_metadata": {}}, "optimizer": {"state": {}},
        "scaler": {}, "pruner": {"state": {"applied": [], "prune_epochs": list(prune_epochs)}},
        "rng": torch.get_rng_state(), "best_top1": 10.0, "wall_time_s": 1.0,
    }


def _log(run: Path, epochs) -> None:
    lines = [{"epoch": e, "train_loss": 1.0, "train_top1": 0.0, "val_loss": 1.0, "val_top1": 0.0, "lr": 0.1,
              "stability": None, "reg_lambda": 0.0, "selected_norm": None, "macs": 1, "params": 1,
              "pruned": False, "epoch_time_s": 1.0, "search_time_s": 0.0, "images_per_s": 1.0} for e in epochs]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_checkpoint_carries_its_digest_and_loads(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", _checkpoint())
    assert load_checkpoint(path)["epoch"] == 1


def test_an_edited_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", _checkpoint())
    payload = torch.load(path, weights_only=True)
    payload["epoch"] = 0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="fails its integrity check") as caught:
        load_checkpoint(path)
    _one_line(caught, path)


def test_a_checkpoint_from_before_digests_is_refused(tmp_path):
    """Unlike a model file: resuming writes over the run, so the checkpoint must prove itself."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "compressor.training.checkpoint/1", **_checkpoint()}, path)
    with pytest.raises(CheckpointError, match="has no sha256 digest") as caught:
        load_checkpoint(path)
    _one_line(caught, path)


@pytest.mark.parametrize("epoch, epochs, prunes, hint", [
    (3, 2, (0,), "epoch 3 of a 2-epoch run"),
    (999, 2, (0,), "epoch 999 of a 2-epoch run"),
    (1, 2, (5,), "lists prunes [5]"),
    (1, 2, ("0",), "lists prunes ['0']"),
])
def test_a_checkpoint_that_cannot_belong_to_its_run_is_refused(tmp_path, epoch, epochs, prunes, hint):
    path = save_checkpoint(tmp_path / "checkpoint.pt", _checkpoint(epoch, epochs, prunes))
    with pytest.raises(CheckpointError, match="cannot belong to its run") as caught:
        load_checkpoint(path)
    assert hint in _one_line(caught, path)


def test_a_checkpoint_of_epoch_0_is_refused(tmp_path):
    """Epochs count from 1: no run writes a checkpoint numbered 0."""
    path = save_checkpoint(tmp_path / "checkpoint.pt", _checkpoint(epoch=0, prune_epochs=()))
    with pytest.raises(CheckpointError, match="'epoch' is 0 \\(epochs count from 1\\)") as caught:
        load_checkpoint(path)
    _one_line(caught, path)


def test_the_last_epoch_of_a_finished_run_still_loads(tmp_path):
    """A finished run's checkpoint (epoch E, numbered from 1) is resumed to write its artifacts again;
    its pruner counts the prune in its last epoch by loop index (E - 1)."""
    path = save_checkpoint(tmp_path / "checkpoint.pt", _checkpoint(epoch=2, epochs=2, prune_epochs=(1,)))
    assert load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize("logged, ok", [((1, 2), True), ((1, 2, 3), True), ((1,), False), ((), False), (None, False)])
def test_a_resume_continues_only_a_run_whose_log_reached_the_checkpoint(tmp_path, logged, ok):
    if logged is not None:
        _log(tmp_path, logged)
    payload = _checkpoint(epoch=2)
    if ok:
        check_continues(payload, tmp_path)
        return
    with pytest.raises(CheckpointError, match="has no record of epoch 2") as caught:
        check_continues(payload, tmp_path)
    _one_line(caught, tmp_path / "checkpoint.pt")
