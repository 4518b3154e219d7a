"""prune_once: analyse -> plan -> apply in one call, as the README's engine example uses it."""
import re
from pathlib import Path

import pytest
import torch

from compressor import PrunedOnce, SelectionConfig, count_macs, plan_once, prune_once
from compressor.engine.apply import ApplyRefused
from compressor.engine.masking import masked_copy
from compressor.errors import CompressorError
from compressor.models import build_model

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_sliced_model_costs_what_the_plan_predicts_and_computes_what_the_masked_one_does():
    torch.manual_seed(0)
    model, example = build_model("resnet20").eval(), torch.randn(2, 3, 32, 32)
    planned = plan_once(model, example[:1], SelectionConfig(0.5))  # MACs are counted per the example batch
    masked = masked_copy(model, planned.graph, planned.plan)
    assert count_macs(model, example[:1]) == planned.dense_macs  # planning alone slices nothing
    result = prune_once(model, example[:1], SelectionConfig(0.5), graph=planned.graph)
    assert isinstance(result, PrunedOnce) and result.model is model
    assert count_macs(model, example[:1]) == result.predicted_macs <= 0.5 * result.dense_macs
    with torch.no_grad():
        torch.testing.assert_close(model(example), masked(example), rtol=1e-4, atol=1e-4)


def test_bad_arguments_name_themselves():
    with pytest.raises(CompressorError, match="model"):
        prune_once("resnet20", torch.zeros(1, 3, 32, 32), SelectionConfig(0.5))
    with pytest.raises(CompressorError, match="config"):
        prune_once(build_model("resnet20"), torch.zeros(1, 3, 32, 32), 0.5)
    assert issubclass(ApplyRefused, CompressorError)


def test_the_readme_engine_example_runs():
    section = README.read_text().split("<!-- engine-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_engine_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["pruned"].predicted_macs <= 0.5 * namespace["pruned"].dense_macs
    assert count_macs(namespace["other"], torch.zeros(1, 3, 32, 32)) < count_macs(build_model("resnet20"),
                                                                                  torch.zeros(1, 3, 32, 32))
