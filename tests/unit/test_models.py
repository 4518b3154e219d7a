"""Model zoo: every CIFAR model runs, torchvision names resolve, weights round-trip."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from compressor.models import ModelEntry, UnknownModelError, build_model, get_entry, list_models

ZOO = ["resnet20", "resnet32", "resnet56", "resnet110",
       "vgg16_cifar", "vgg19_cifar", "mobilenetv2_cifar", "vit_tiny_cifar"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: nn.Module, entry: ModelEntry, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(batch, *entry.input_size))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_forward_shape(name: str) -> None:
    entry = get_entry(name)
    assert entry.family == "cifar" and entry.input_size == (3, 32, 32)
    assert logits(build_model(name), entry).shape == (2, entry.num_classes) == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "vit_tiny_cifar"])
def test_num_classes_override(name: str) -> None:
    assert logits(build_model(name, num_classes=100), get_entry(name)).shape == (2, 100)


def test_resnet56_size_and_depth_ordering() -> None:
    assert 0.84e6 <= n_params(build_model("resnet56")) <= 0.87e6
    sizes = [n_params(build_model(n)) for n in ("resnet20", "resnet32", "resnet56", "resnet110")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownModelError, match="did you mean: .*resnet50"):
        build_model("resnt50")
    with pytest.raises(ValueError, match="compress models"):
        get_entry("zzzzzz")


def test_list_models_covers_zoo_and_torchvision() -> None:
    names = list_models()
    assert {"resnet50", "vit_b_16", "swin_t", *ZOO} <= set(names)
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(names)
    assert names[: len(ZOO)] == sorted(ZOO)
    assert len(names) == len(set(names))


def test_torchvision_entries_know_input_size() -> None:
    assert get_entry("inception_v3").input_size == (3, 299, 299)
    assert get_entry("resnet50").input_size == (3, 224, 224)
    assert get_entry("vit_h_14").input_size == (3, 224, 224)
    assert get_entry("resnet50").num_classes == 1000
    assert get_entry("resnet50").family == "torchvision"


def test_torchvision_model_builds_with_random_init() -> None:
    entry = get_entry("resnet18")
    a, b = build_model("resnet18", num_classes=10), build_model("resnet18", num_classes=10)
    assert isinstance(a, torchvision.models.ResNet) and a.fc.out_features == 10
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    assert logits(a, entry, batch=1).shape == (1, 10)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_logit_models_return_plain_tensor_in_train_mode(name: str) -> None:
    model = build_model(name, num_classes=10).train()
    out = model(torch.randn(2, 3, 80, 80))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_weights_round_trip(tmp_path, wrapper: str | None) -> None:
    source = build_model("resnet20")
    state = source.state_dict()
    path = tmp_path / "w.pt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    loaded = build_model("resnet20", weights=path)
    entry = get_entry("resnet20")
    assert torch.equal(logits(source, entry), logits(loaded, entry))


def test_weights_shape_mismatch_is_clear_value_error(tmp_path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("resnet20", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches: 2 \(e\.g\. fc\.weight") as info:
        build_model("resnet20", weights=path)
    assert "\n" not in str(info.value)


def test_weights_key_mismatch_and_missing_file(tmp_path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("resnet32").state_dict(), path)
    with pytest.raises(ValueError, match="unexpected keys"):
        build_model("resnet20", weights=path)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_model("resnet20", weights=tmp_path / "missing.pt")


def test_unreadable_weights_file_is_value_error(tmp_path) -> None:
    path = tmp_path / "w.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        build_model("resnet20", weights=path)
