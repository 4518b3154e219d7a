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


def test_new_head_reinitialises_only_the_classifier(tmp_path, caplog) -> None:
    """With new_head, a 100-class file starts a 10-class model: all but fc is the file's, fc is the fresh
    init (one log line says so); without it the same file is refused, as a shape mismatch."""
    torch.manual_seed(1)
    state = build_model("resnet20", num_classes=100).state_dict()
    torch.save(state, tmp_path / "w.pt")
    torch.manual_seed(2)
    fresh = build_model("resnet20").fc.weight.detach().clone()
    torch.manual_seed(2)
    with caplog.at_level("INFO", logger="compressor"):
        model = build_model("resnet20", weights=tmp_path / "w.pt", new_head=True)
    assert [r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage()] == [
        f"weights from {tmp_path / 'w.pt'}: classifier fc re-initialised for the new class count, 100 -> 10 classes"]
    assert torch.equal(model.fc.weight, fresh)
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, state[name]), name
    with pytest.raises(ValueError, match="shape mismatches: 2"):
        build_model("resnet20", weights=tmp_path / "w.pt")


def test_new_head_refuses_any_other_mismatch(tmp_path) -> None:
    state = build_model("resnet20", num_classes=100).state_dict()
    state["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"shape mismatches: 1 \(e\.g\. conv1\.weight"):
        build_model("resnet20", weights=tmp_path / "w.pt", new_head=True)


def test_safetensors_file_and_densenet_legacy_keys(tmp_path) -> None:
    """A .safetensors file (timm's format) loads; torchvision's DenseNet files name their keys
    'norm.1' and lack BatchNorm's step counter (torchvision's loader copes, and so does the zoo's);
    an MNASNet's module versions survive the re-initialised head."""
    from safetensors.torch import save_file

    source = build_model("resnet20")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    assert torch.equal(build_model("resnet20", weights=tmp_path / "w.safetensors").conv1.weight, source.conv1.weight)
    dense = build_model("densenet121")
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v  # and, older than BatchNorm's
              for k, v in dense.state_dict().items() if not k.endswith("num_batches_tracked")}  # step counter
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "densenet121-a639ec97.pth")
    loaded = build_model("densenet121", weights=tmp_path / "densenet121-a639ec97.pth")
    assert torch.equal(loaded.features.denseblock1.denselayer1.norm1.weight, dense.features.denseblock1.denselayer1.norm1.weight)
    torch.save(build_model("mnasnet0_5").state_dict(), tmp_path / "mnasnet.pt")
    assert build_model("mnasnet0_5", num_classes=3, weights=tmp_path / "mnasnet.pt", new_head=True).classifier[1].out_features == 3


@pytest.mark.parametrize("text, is_name", [
    ("IMAGENET1K_V1", True), ("DEFAULT", True), ("ResNet18_Weights.IMAGENET1K_V1", True), ("a1_in1k", True),
    ("w.pt", False), ("model.safetensors", False), ("run/checkpoint", False), ("imagenet.pth.tar", False),
])
def test_weights_name_or_file(text: str, is_name: bool) -> None:
    from compressor.models.pretrained import is_weights_name

    assert is_weights_name(text) is is_name
