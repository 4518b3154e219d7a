"""Attention MACs are the same closed form, batch·heads·Lq·Lk·(E + Ev), whichever
scaled-dot-product-attention op or backend runs and whichever torch is installed."""
from types import MethodType

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from compressor.engine.flops import (
    COMPOSITE_SDPA_OPS,
    NON_COMPUTE_SDPA_OPS,
    SDPA_OPS,
    attention_macs,
    count_macs,
    macs_counter,
)
from compressor.models import build_model

# (q, k, v) shapes and their MACs worked out by hand: batch·heads·Lq·Lk·(E + Ev).
CASES = {
    "plain": ((2, 4, 12, 8), (2, 4, 20, 8), (2, 4, 20, 8), 2 * 4 * 12 * 20 * (8 + 8)),
    "value_width": ((2, 4, 12, 8), (2, 4, 20, 8), (2, 4, 20, 5), 2 * 4 * 12 * 20 * (8 + 5)),
    "grouped_query": ((2, 8, 12, 8), (2, 2, 20, 8), (2, 2, 20, 8), 2 * 8 * 12 * 20 * (8 + 8)),
    "broadcast_batch": ((2, 4, 12, 8), (1, 4, 20, 8), (1, 4, 20, 8), 2 * 4 * 12 * 20 * (8 + 8)),
    "no_batch": ((4, 12, 8), (4, 20, 8), (4, 20, 8), 4 * 12 * 20 * (8 + 8)),
}
BACKENDS = [b for b in SDPBackend.__members__.values() if b.name != "ERROR"]

# Positional arguments after q, k, v that an op requires (attn_bias, compute_log_sumexp).
EXTRA_ARGS = {
    "_scaled_dot_product_efficient_attention": (None, False),
    "_scaled_dot_product_cudnn_attention": (None, False),
}
CPU_OPS = {"_scaled_dot_product_flash_attention_for_cpu"}


def qkv(case, device="cpu", dtype=torch.float32):
    *shapes, _ = CASES[case]
    return [torch.randn(s, device=device, dtype=dtype) for s in shapes]


def counted(fn):
    """(MACs, {op name: FLOPs}) that ``count_macs``'s counter records while ``fn`` runs."""
    counter = macs_counter()
    with torch.no_grad(), counter:
        fn()
    by_op = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() // 2, by_op


def run_with_backend(backend, fn):
    with sdpa_kernel([backend]):
        try:
            return counted(fn)
        except RuntimeError as error:
            # The two wordings of "this backend cannot take these inputs here" (torch 2.9-2.15).
            if not any(m in str(error) for m in ("No available kernel", "No viable backend")):
                raise
            pytest.skip(f"SDPA backend {backend.name} cannot run this case on this machine")


def test_every_sdpa_forward_op_of_this_torch_is_in_the_table():
    ops = {name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
           if name.startswith("aten::") and "scaled_dot_product" in name and "backward" not in name}
    assert ops, "found no SDPA ops at all: the discovery above is broken"
    known = set(SDPA_OPS) | set(COMPOSITE_SDPA_OPS) | set(NON_COMPUTE_SDPA_OPS)
    assert ops - known == set(), f"torch {torch.__version__} has SDPA ops flops.py does not classify"


@pytest.mark.parametrize("name", SDPA_OPS)
def test_each_fused_sdpa_op_counts_the_closed_form(name):
    op = getattr(torch.ops.aten, name, None)
    if op is None:
        pytest.skip(f"aten.{name} does not exist in torch {torch.__version__}")
    device, dtype = ("cpu", torch.float32) if name in CPU_OPS else ("meta", torch.float16)
    q, k, v = qkv("plain", device, dtype)
    try:
        macs, by_op = counted(lambda: op(q, k, v, *EXTRA_ARGS.get(name, ())))
    except (NotImplementedError, RuntimeError) as error:
        pytest.skip(f"aten.{name} does not run on {device} tensors here: {str(error)[:120]}")
    assert set(by_op) == {name}
    assert macs == CASES["plain"][-1]


@pytest.mark.parametrize("case", CASES)
def test_closed_form_matches_the_math_paths_matmuls(case):
    """torch's own bmm formula on the math path is the independent check of ``attention_macs``."""
    q, k, v = qkv(case)
    gqa = {"enable_gqa": True} if case == "grouped_query" else {}
    macs, by_op = run_with_backend(SDPBackend.MATH, lambda: F.scaled_dot_product_attention(q, k, v, **gqa))
    assert set(by_op) == {"bmm"}
    assert macs == CASES[case][-1] == attention_macs(q.shape, k.shape, v.shape)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_every_cpu_backend_counts_the_closed_form(backend, case):
    q, k, v = qkv(case)
    gqa = {"enable_gqa": True} if case == "grouped_query" else {}
    macs, by_op = run_with_backend(backend, lambda: F.scaled_dot_product_attention(q, k, v, **gqa))
    assert macs == CASES[case][-1], f"{backend.name} ran {sorted(by_op)}"


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION], ids=["MATH", "FLASH"])
def test_inference_mode_counts_the_closed_form_once(backend):
    """Under inference_mode the composite ops reach the counter undecomposed."""
    q, k, v = qkv("plain")
    with torch.inference_mode():
        macs, _ = run_with_backend(backend, lambda: F.scaled_dot_product_attention(q, k, v))
    assert macs == CASES["plain"][-1]


def test_default_cpu_dispatch_uses_a_fused_kernel_and_counts_it():
    """The regression: torch <= 2.14 counted 0 for the CPU flash kernel chosen by default."""
    q, k, v = qkv("plain")
    macs, by_op = counted(lambda: F.scaled_dot_product_attention(q, k, v))
    assert set(by_op) == {"_scaled_dot_product_flash_attention_for_cpu"}
    assert macs == CASES["plain"][-1]


def _attention_without_sdpa(self, x):
    """compressor.models.vit_cifar.Attention.forward with the attention itself cut out (v passes through)."""
    B, N, _ = x.shape
    self.q(x), self.k(x)
    v = self._split_heads(self.v(x), B, N)
    return self.proj(v.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))


def test_zoo_vit_counts_attention_once_whatever_the_backend():
    model = build_model("vit_tiny_cifar")
    x = torch.randn(1, 3, 32, 32)
    default = count_macs(model, x)
    with sdpa_kernel([SDPBackend.MATH]):
        math = count_macs(model, x)
    for block in model.blocks:
        block.attn.forward = MethodType(_attention_without_sdpa, block.attn)
    without = count_macs(model, x)
    attn, tokens = model.blocks[0].attn, (32 // 4) ** 2 + 1
    assert default == math
    assert default - without == len(model.blocks) * attn.num_heads * tokens * tokens * 2 * attn.head_dim > 0


class _FlexAttention(nn.Module):
    def forward(self, q, k, v):
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v)


def test_flex_attention_is_never_silently_zero():
    """Eager flex_attention cannot run under a dispatch mode in torch 2.9-2.15; a loud error is
    acceptable (the user sees it), a count without the attention is not."""
    q, k, v = qkv("plain")
    try:
        macs = count_macs(_FlexAttention(), (q, k, v))
    except (RuntimeError, TypeError):
        return
    assert macs == CASES["plain"][-1]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_every_cuda_backend_counts_the_closed_form(backend):
    q, k, v = qkv("plain", "cuda", torch.float16)
    macs, by_op = run_with_backend(backend, lambda: F.scaled_dot_product_attention(q, k, v))
    assert macs == CASES["plain"][-1], f"{backend.name} ran {sorted(by_op)}"


@pytest.mark.parametrize("name", ["resnet20", "densenet_tiny"])
def test_where_counts_decide_the_macs_any_channels_kept_in_those_counts_give_the_same_macs(name):
    """The landing search merges states by kept counts only where ``counts_decide_macs`` says so."""
    import dataclasses

    import numpy as np

    from compressor.engine.analysis.graph import analyse
    from compressor.engine.cost import CostModel

    if name == "densenet_tiny":  # concatenations of whole groups
        from torchvision.models import DenseNet
        model = DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)
    else:
        model = build_model(name)
    graph = analyse(model.eval(), torch.zeros(1, 3, 32, 32))
    cost = CostModel(graph, model)
    assert cost.counts_decide_macs(graph.groups)
    rng = np.random.default_rng(0)
    counts = {g.name: int(rng.integers(1, g.size + 1)) for g in graph.groups}
    results = set()
    for _ in range(3):
        kept = np.ones(graph.labels.size, dtype=bool)
        for group in graph.groups:
            dropped = rng.permutation(group.size)[: group.size - counts[group.name]]
            kept[group.classes[dropped]] = False
        results.add(cost.macs(kept))
    assert len(results) == 1
    # A group that a MACs factor holds only part of: which channels are kept matters.
    group = graph.groups[1]
    wider = dataclasses.replace(group, classes=np.concatenate([group.classes, graph.groups[2].classes[:1]]))
    assert not cost.counts_decide_macs([graph.groups[0], wider, *graph.groups[3:]])
