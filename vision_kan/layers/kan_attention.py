"""Attention blocks whose projections are conv-KAN layers: self-attention and focal modulation, in 1, 2 or 3-d.

Self-Attention GAN (Zhang et al., 2018) - https://arxiv.org/abs/1805.08318
Focal Modulation Networks (Yang et al., 2022) - https://arxiv.org/abs/2203.11926
torch-conv-kan (SelfKANtention, KANFocalModulation) - https://github.com/IvanDrokin/torch-conv-kan

Both map (B, C, *S) -> (B, C, *S) and are residual with a learned scale gamma (0 at the start, so a block inserted
into a trained or residual network starts as the identity):

    KANSelfAttention:     y = norm(x + gamma * attention(q, k, v)),  q, k, v = one conv-KAN layer of x (3C channels)
    KANFocalModulation:   y = x + gamma * proj(q * h(sum_l g_l ctx_l + g_L mean(ctx_{L-1}))),  q, ctx, g = f(x)

where ctx_l = depthwise conv-KAN_l(ctx_{l-1}) with growing kernels (focal_window + focal_factor * l). f, h, proj and
the depthwise convs are conv-KAN layers of the family `conv_type` (`kan_conv_families.CONV_KAN_FAMILIES`).

Differences from torch-conv-kan, on purpose: q, k and v come from one conv-KAN layer with 3C outputs (the same
function as three layers on the same basis, with the basis evaluated once; families with learnable basis parameters
share them across q, k, v); the residual scales the attention (SAGAN), not the input; attention scores are scaled
by 1 / sqrt(head dim).
"""
import math
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kan_conv_families import CONV_KAN_FAMILIES

__all__ = ['KANSelfAttention', 'KANFocalModulation', 'KAN_ATTENTION_BLOCKS']

_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
NormFactory = Optional[Callable[[int], nn.Module]]


def _family(conv_type: str, owner: str) -> type:
    if conv_type not in CONV_KAN_FAMILIES:
        raise ValueError(f'{owner}: conv_type must be one of {sorted(CONV_KAN_FAMILIES)}, got {conv_type!r}')
    return CONV_KAN_FAMILIES[conv_type]


def _check_ndim(ndim: int, owner: str) -> int:
    if ndim not in _CONV:
        raise ValueError(f'{owner}: ndim must be 1, 2 or 3, got {ndim!r}')
    return ndim


class KANSelfAttention(nn.Module):
    """Self-attention over all positions of an N-d map, q/k/v from a conv-KAN layer; residual, then a norm.

    Args:
        channels: C, input and output channels.
        conv_type: conv-KAN family of the q/k/v projection.
        ndim: 1, 2 or 3 spatial dims.
        inner_channels: if set, a 1x1 conv maps C -> inner_channels before the projection and back after the
            attention (torch-conv-kan's inner_projection); the attention then works in inner_channels.
        kernel_size: kernel of the q/k/v conv-KAN layer ('same' padding, so it must be odd).
        num_heads: attention heads; the working width must divide by it.
        norm_layer: norm after the residual sum, called with C (default BatchNorm{ndim}d; nn.Identity for none).
        gamma_init: start value of the residual scale.
        conv_kwargs: the family's keywords (degree, grid_size, dropout, ...).
    """

    def __init__(self, channels: int, conv_type: str = 'kagn', *, ndim: int = 2, inner_channels: Optional[int] = None,
                 kernel_size: int = 3, num_heads: int = 1, norm_layer: NormFactory = None, gamma_init: float = 0.0,
                 conv_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        owner = 'KANSelfAttention'
        family, ndim = _family(conv_type, owner), _check_ndim(ndim, owner)
        dims = inner_channels or channels
        if dims % num_heads:
            raise ValueError(f'{owner}: the attention width {dims} must be divisible by num_heads={num_heads}')
        self.channels, self.dims, self.num_heads, self.ndim = channels, dims, num_heads, ndim
        self.fused_attn = True  # False: explicit softmax(q k^T) v (counted by FLOP counters; model_table uses it)
        conv = _CONV[ndim]
        self.inner_proj = conv(channels, dims, 1) if inner_channels else nn.Identity()
        self.qkv = family(dims, 3 * dims, kernel_size, padding='same', ndim=ndim, **(conv_kwargs or {}))
        self.outer_proj = conv(dims, channels, 1) if inner_channels else nn.Identity()
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))
        norm = norm_layer if norm_layer is not None else _BATCHNORM[ndim]
        self.norm = norm(channels)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) each -> (B, h, N, d)."""
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v)
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, h, N, N)
        return scores.softmax(dim=-1) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, spatial = x.shape[0], x.shape[2:]
        qkv = self.qkv(self.inner_proj(x))  # (B, 3D, *S)
        # (B, 3D, *S) -> (3, B, h, N, D/h)
        qkv = qkv.reshape(b, 3, self.num_heads, self.dims // self.num_heads, -1).permute(1, 0, 2, 4, 3)
        att = self.attention(qkv[0], qkv[1], qkv[2])  # (B, h, N, D/h)
        att = att.transpose(-2, -1).reshape(b, self.dims, *spatial)  # (B, D, *S)
        return self.norm(x + self.gamma * self.outer_proj(att))

    def extra_repr(self) -> str:
        return f'channels={self.channels}, dims={self.dims}, num_heads={self.num_heads}, ndim={self.ndim}'


class KANFocalModulation(nn.Module):
    """Focal modulation (FocalNet) with conv-KAN projections and depthwise conv-KAN context layers; residual.

    Args:
        channels: C, input and output channels.
        conv_type: conv-KAN family of every projection and context layer.
        ndim: 1, 2 or 3 spatial dims.
        focal_level: L, number of context layers.
        focal_window: kernel of the first context layer; layer l has focal_window + focal_factor * l (odd).
        focal_factor: kernel growth per level.
        normalize_modulator: divide the aggregated context by L + 1.
        post_norm: a norm (norm_layer) on q * modulator before the output projection.
        norm_layer: the post norm, called with C (default BatchNorm{ndim}d).
        gamma_init: start value of the residual scale.
        conv_kwargs: the family's keywords (degree, grid_size, dropout, ...).
    """

    def __init__(self, channels: int, conv_type: str = 'kagn', *, ndim: int = 2, focal_level: int = 2,
                 focal_window: int = 3, focal_factor: int = 2, normalize_modulator: bool = True,
                 post_norm: bool = True, norm_layer: NormFactory = None, gamma_init: float = 0.0,
                 conv_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        owner = 'KANFocalModulation'
        family, ndim = _family(conv_type, owner), _check_ndim(ndim, owner)
        if not (isinstance(focal_level, int) and focal_level >= 1):
            raise ValueError(f'{owner}: focal_level must be an integer >= 1, got {focal_level!r}')
        kernels = [focal_window + focal_factor * level for level in range(focal_level)]
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f'{owner}: focal kernels {kernels} must be odd and >= 1 (focal_window odd, '
                             f'focal_factor even)')
        kw = dict(ndim=ndim, **(conv_kwargs or {}))
        self.channels, self.focal_level, self.ndim = channels, focal_level, ndim
        self.normalize_modulator = normalize_modulator
        self.f = family(channels, 2 * channels + focal_level + 1, 1, **kw)  # -> q, ctx, L + 1 gates
        self.focal_layers = nn.ModuleList(
            family(channels, channels, k, padding='same', groups=channels, **kw) for k in kernels)
        self.h = family(channels, channels, 1, **kw)
        norm = norm_layer if norm_layer is not None else _BATCHNORM[ndim]
        self.norm = norm(channels) if post_norm else nn.Identity()
        self.proj = family(channels, channels, 1, **kw)
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def modulation(self, x: torch.Tensor) -> torch.Tensor:
        """The focal modulation itself, (B, C, *S) -> (B, C, *S), without the residual."""
        c, levels = self.channels, self.focal_level
        q, ctx, gates = torch.split(self.f(x), (c, c, levels + 1), dim=1)  # (B, C, *S), (B, C, *S), (B, L+1, *S)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        spatial = tuple(range(2, x.dim()))
        ctx_all = ctx_all + ctx_all.mean(dim=spatial, keepdim=True) * gates[:, levels:]  # global context
        if self.normalize_modulator:
            ctx_all = ctx_all / (levels + 1)
        return self.proj(self.norm(q * self.h(ctx_all)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.modulation(x)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, focal_level={self.focal_level}, ndim={self.ndim}'


KAN_ATTENTION_BLOCKS = {'self_attention': KANSelfAttention, 'focal': KANFocalModulation}  # a model's attn_type
