"""``compress prune --weights``: a run starts from trained weights, given as a file or as a
torchvision/timm weights name read from that library's cache (no network: the tests write the
cache themselves, from randomly initialised 1000-class models), and a head trained for another
class count is re-initialised for the data's (or --num-classes), said in one line."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from click.testing import CliRunner, Result

from compressor.cli import main
from compressor.models import build_model
from compressor.runfiles.modelfile import load_pruned, read_pruned
from tests.cli_runs import compress, make_image_folder, one_error_line
from tests.hostile import one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = 3  # the test folder's
# One epoch of a few images; lr 1e-30 and no decay: the parameters end where the run started them.
STILL = ["--epochs", "1", "--schedule", "dense", "--lr", "1e-30", "--weight-decay", "0", "--no-augment",
         "--batch-size", "8", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), train=4, val=2, size=32, classes=CLASSES)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME: torch.hub.get_dir() reads it at each call."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def cache_file(torch_home: Path, model: str = "resnet18") -> Path:
    """Where torchvision's download of ``model``'s IMAGENET1K_V1 would be: hub/checkpoints/<URL's file name>."""
    url = torchvision.models.get_model_weights(model).IMAGENET1K_V1.url
    return torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_resnet18(path: Path) -> dict:
    """A randomly initialised 1000-class resnet18 saved at ``path`` as torchvision saves its weights."""
    torch.manual_seed(5)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def prune(images: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["prune", "--dataset", "imagefolder", "--data-dir", str(images),
                                     "--input-size", "32", *STILL, "--out", str(out), *args])


def assert_started_from(run: Path, state: dict, head: str, classes: int) -> None:
    """Every parameter but the head's is the file's; the head is new, for ``classes`` classes."""
    model, _, _ = load_pruned(run / "model.pt")
    for name, tensor in model.named_parameters():
        if name.startswith(head + "."):
            assert tensor.shape[0] == classes and tensor.shape[1:] == state[name].shape[1:], name
            assert not torch.allclose(tensor.detach(), state[name][:classes]), name  # re-initialised, not sliced
        else:
            torch.testing.assert_close(tensor.detach(), state[name], rtol=0, atol=1e-20, msg=name)
    assert read_pruned(run / "model.pt")[0].num_classes == classes


def test_a_torchvision_name_loads_from_the_cache_with_a_new_head(images, torch_home, tmp_path):
    state = imagenet_resnet18(cache_file(torch_home))
    result = prune(images, tmp_path / "run", "--model", "resnet18", "--weights", "IMAGENET1K_V1")
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if "re-initialised" in line]
    assert len(heads) == 1 and "ResNet18_Weights.IMAGENET1K_V1" in heads[0] and "classifier fc" in heads[0]
    assert f"1000 -> {CLASSES} classes" in heads[0], heads[0]
    assert_started_from(tmp_path / "run", state, "fc", CLASSES)


def test_num_classes_sets_the_head_and_a_resume_needs_no_weights(images, torch_home, tmp_path):
    state = imagenet_resnet18(cache_file(torch_home))
    run = tmp_path / "run"
    result = prune(images, run, "--model", "resnet18", "--weights", "ResNet18_Weights.DEFAULT", "--num-classes", "5")
    assert result.exit_code == 0, result.output
    assert "1000 -> 5 classes" in result.output
    assert_started_from(run, state, "fc", 5)
    cache_file(torch_home).unlink()  # the checkpoint holds the weights now
    resumed = CliRunner().invoke(main, ["prune", "--resume", str(run), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert read_pruned(run / "model.pt")[0].num_classes == 5
    fewer = prune(images, tmp_path / "fewer", "--model", "resnet18", "--num-classes", "2")
    one_line_error(fewer, "--num-classes 2", f"{CLASSES} classes")


def test_a_name_missing_from_the_cache_is_one_line_naming_the_path(images, torch_home, tmp_path):
    expected = cache_file(torch_home)
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        result = prune(images, tmp_path / "run", "--model", "resnet18", "--weights", name)
        one_line_error(result, str(expected), "not in torch's cache")
    assert not expected.exists() and not (tmp_path / "run" / "model.pt").exists()  # nothing downloaded, nothing run
    other = prune(images, tmp_path / "run", "--model", "resnet18", "--weights", "ResNet34_Weights.IMAGENET1K_V1")
    one_line_error(other, "not a weights name of resnet18", "IMAGENET1K_V1")
    zoo = prune(images, tmp_path / "run", "--model", "resnet20", "--weights", "IMAGENET1K_V1")
    one_line_error(zoo, "weights file not found: IMAGENET1K_V1")


def test_a_mismatch_outside_the_head_is_still_refused(images, tmp_path):
    state = imagenet_resnet18(tmp_path / "grey.pt")
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # trained on one-channel images
    torch.save(state, tmp_path / "grey.pt")
    result = prune(images, tmp_path / "run", "--model", "resnet18", "--weights", str(tmp_path / "grey.pt"))
    line = one_line_error(result, "do not fit the model", "conv1.weight file (64, 1, 7, 7)")
    assert "shape mismatches: 1 " in line  # the head is not counted: it alone would be re-initialised


def test_a_local_checkpoint_of_1000_classes_on_digits(tmp_path):
    torch.manual_seed(6)
    state = build_model("resnet20", num_classes=1000).state_dict()
    torch.save({"state_dict": state, "epoch": 90}, tmp_path / "imagenet.pth")  # a trainer's full checkpoint
    result = CliRunner().invoke(main, ["prune", "--model", "resnet20", "--dataset", "digits", *STILL, "--batch-size", "256",
                                       "--weights", str(tmp_path / "imagenet.pth"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "classifier fc re-initialised" in result.output and "1000 -> 10 classes" in result.output
    assert_started_from(tmp_path / "run", state, "fc", 10)


def test_a_timm_tag_loads_from_the_hugging_face_cache(images, tmp_path):
    """timm reads HF_HUB_CACHE when it is imported, so this run is a subprocess with it set."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(7)
    state = timm.create_model("resnet18", num_classes=1000).state_dict()
    save_file(state, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    args = ["prune", "--model", "timm:resnet18", "--dataset", "imagefolder", "--data-dir", str(images),
            "--input-size", "32", *STILL]
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = compress(*args, "--weights", "a1_in1k", "--out", str(tmp_path / "run"), env=env)
    assert "timm resnet18.a1_in1k" in done.stdout and f"classifier fc re-initialised for the new class count, " \
        f"1000 -> {CLASSES} classes" in done.stdout, done.stdout
    assert_started_from(tmp_path / "run", state, "fc", CLASSES)
    missing = compress(*args, "--weights", "a2_in1k", "--out", str(tmp_path / "run2"), env=env, check=False)
    one_error_line(missing, 1, "not in the Hugging Face cache", str(tmp_path / "hf" / "models--timm--resnet18.a2_in1k"))

