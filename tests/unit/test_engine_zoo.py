"""The invariant on every zoo model and on torchvision models across families:
sliced == masked original, MACs/params predicted == counted, reduction on target."""
import pytest

from compressor import ModelSpec
from compressor.models import build_model, get_entry
from tests.helpers import assert_invariants, assert_round_trip, prune_and_check

ZOO = ["resnet20", "resnet32", "resnet56", "resnet110", "vgg16_cifar", "vgg19_cifar", "mobilenetv2_cifar", "vit_tiny_cifar"]

# (name, input size): small inputs where the architecture allows them, to keep the
# CPU suite fast; ViT-B/16 and MaxViT only accept 224x224.
TORCHVISION = [
    ("resnet18", (3, 64, 64)),
    ("resnet50", (3, 64, 64)),
    ("resnext50_32x4d", (3, 64, 64)),
    ("wide_resnet50_2", (3, 64, 64)),
    ("mobilenet_v2", (3, 64, 64)),
    ("mobilenet_v3_small", (3, 64, 64)),
    ("mobilenet_v3_large", (3, 64, 64)),
    ("efficientnet_b0", (3, 64, 64)),
    ("efficientnet_v2_s", (3, 64, 64)),
    ("regnet_x_400mf", (3, 64, 64)),
    ("regnet_y_400mf", (3, 64, 64)),
    ("densenet121", (3, 64, 64)),
    ("shufflenet_v2_x0_5", (3, 64, 64)),
    ("squeezenet1_1", (3, 64, 64)),
    ("googlenet", (3, 64, 64)),
    ("inception_v3", (3, 96, 96)),
    ("convnext_tiny", (3, 64, 64)),
    ("mnasnet0_5", (3, 64, 64)),
    ("vgg11_bn", (3, 64, 64)),
    ("alexnet", (3, 64, 64)),
    ("swin_t", (3, 64, 64)),
    ("swin_v2_t", (3, 64, 64)),
    ("vit_b_16", (3, 224, 224)),
    ("maxvit_t", (3, 224, 224)),
]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_prunes_exactly(name, tmp_path):
    size = get_entry(name).input_size
    result = prune_and_check(build_model(name), size, 0.5)
    assert_invariants(result, 0.5)
    assert_round_trip(result, ModelSpec(name, 10, size), tmp_path)


@pytest.mark.parametrize("name,size", TORCHVISION, ids=[n for n, _ in TORCHVISION])
def test_torchvision_model_prunes_exactly(name, size, tmp_path):
    result = prune_and_check(build_model(name, num_classes=10), size, 0.3)
    assert_invariants(result, 0.3)
    assert_round_trip(result, ModelSpec(name, 10, size), tmp_path)


def test_resnet56_matches_the_papers_size():
    result = prune_and_check(build_model("resnet56"), (3, 32, 32), 0.5)
    assert 120e6 <= result.dense_macs <= 130e6
