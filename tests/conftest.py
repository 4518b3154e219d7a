"""Shared fixtures: deterministic seeds, and GPU tests skipped without CUDA."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """PyTorch's two OpenMP threads spin against each other on a busy 2-core machine
    (a 32x32 ResNet-20 forward goes from 4 ms to 500 ms); one thread keeps a suite fast.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
