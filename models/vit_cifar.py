"""A small pre-norm Vision Transformer for 32x32 images (patch 4 -> 64 tokens + cls).

Attention keeps q, k and v as three separate linears and stores the head
count and head size explicitly: pruning whole heads is then a matter of
slicing rows of q/k/v and columns of proj and updating `num_heads`, with no
fused-qkv bookkeeping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressor.engine.analysis.attention import SeparateQKVAttentionHandler
from compressor.engine.analysis.registry import register_handler

LAYER_NORM_EPS = 1e-6
INIT_STD = 0.02


class Attention(nn.Module):
    """Multi-head self-attention with separate, prunable q/k/v projections."""

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.k = nn.Linear(dim, inner, bias=qkv_bias)
        self.v = nn.Linear(dim, inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, dim)
        # Fixed here (not derived from shapes in forward) so that pruning
        # heads does not silently change the softmax temperature.
        self.scale = self.head_dim ** -0.5

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q = self._split_heads(self.q(x), B, N)
        k = self._split_heads(self.k(x), B, N)
        v = self._split_heads(self.v(x), B, N)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj(out)

    def _split_heads(self, x: Tensor, B: int, N: int) -> Tensor:
        """(B, N, heads*head_dim) -> (B, heads, N, head_dim)."""
        return x.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)



# The engine prunes this attention by heads; it learns the class from here (it never imports the zoo).
register_handler(SeparateQKVAttentionHandler(Attention))

class Mlp(nn.Module):
    """fc1 -> GELU -> fc2; fc1's output width is what MLP pruning shrinks."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformerCifar(nn.Module):
    """Conv patch embedding, cls token, learned positions, blocks, head on cls."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, embed_dim: int = 192,
                 depth: int = 9, num_heads: int = 6, mlp_ratio: float = 2.0,
                 num_classes: int = 10) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(embed_dim, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _init(model: VisionTransformerCifar) -> None:
    """ViT/DeiT init: truncated normal (std .02) for tokens, positions and linears."""
    nn.init.trunc_normal_(model.cls_token, std=INIT_STD)
    nn.init.trunc_normal_(model.pos_embed, std=INIT_STD)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def vit_tiny_cifar(num_classes: int = 10) -> VisionTransformerCifar:
    return VisionTransformerCifar(num_classes=num_classes)
