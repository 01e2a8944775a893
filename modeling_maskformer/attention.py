"""Transformer building blocks (DETR, Carion et al. 2020) of the "+6 Enc" pixel decoder and the transformer decoder.

Shapes: B batch, S/T sequence lengths (queries Q or flattened pixels H*W), C channels (d_model).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer

AttentionImplementation = Literal["sdpa", "eager"]


def sequence_with_position(
    features: Tensor, *, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> tuple[Tensor, Tensor]:
    """features (B, C, H, W) -> the sequence (B, HW, C) and DETR's normalised 2-D sine position encoding
    (B, HW, C): the first C/2 channels encode y, the last C/2 x, interleaving sin and cos."""
    batch_size, num_channels, height, width = features.shape
    if num_channels % 2:
        raise ValueError(f"sine position encoding needs an even number of channels, got {num_channels}")
    num_pos_feats, eps = num_channels // 2, 1e-6
    # NOTE: without a padding mask the cumulative sum over ones is an arange; computed in fp32 then cast,
    # so that bf16/fp16 models get the same positions as fp32 ones.
    y_embed = torch.arange(1, height + 1, device=features.device, dtype=torch.float32) / (height + eps) * scale
    x_embed = torch.arange(1, width + 1, device=features.device, dtype=torch.float32) / (width + eps) * scale
    dim_t = torch.arange(num_pos_feats, device=features.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_y = y_embed[:, None] / dim_t  # (H, C/2)
    pos_x = x_embed[:, None] / dim_t  # (W, C/2)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    y_part = pos_y[:, None, :].expand(height, width, num_pos_feats)
    pos = torch.cat((y_part, pos_x[None, :, :].expand(height, width, num_pos_feats)), dim=2)  # (H, W, C)
    pos = pos.reshape(1, height * width, num_channels).expand(batch_size, -1, -1).to(features.dtype)
    return features.flatten(2).transpose(1, 2), pos  # (B, HW, C) each


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections; positions are added by the caller."""

    def __init__(self, *, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, *, attn_implementation: AttentionImplementation
    ) -> Tensor:
        batch_size, target_len, hidden_size = query.shape
        # (B, S, C) -> (B, heads, S, C/heads)
        q = self.q_proj(query).view(batch_size, target_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if attn_implementation == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            weights = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5  # (B, heads, T, S)
            weights = F.dropout(weights.softmax(dim=-1), p=dropout, training=self.training)
            out = torch.matmul(weights, v)
        out = out.transpose(1, 2).reshape(batch_size, target_len, hidden_size)
        return self.out_proj(out)


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear, as in DETR's transformer layers."""

    def __init__(self, *, hidden_size: int, ffn_dim: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, hidden_size)
        self.activation = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(hidden_states))))


class TransformerLayer(GradientCheckpointingLayer):
    """DETR's transformer layer: self-attention, cross-attention to a memory (decoder layers only) and FFN, each a
    residual sub-layer: `norm(x + dropout(block(x)))` post-norm (DETR), `x + dropout(block(norm(x)))` pre-norm."""

    def __init__(
        self,
        *,
        hidden_size: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation: str = "relu",
        pre_norm: bool = False,
        cross_attention: bool = False,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        attention = {"hidden_size": hidden_size, "num_heads": num_heads, "dropout": attention_dropout}
        self.self_attn = MultiHeadAttention(**attention)
        self.self_attn_norm = nn.LayerNorm(hidden_size)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(**attention)
            self.cross_attn_norm = nn.LayerNorm(hidden_size)
        self.ffn = FeedForward(hidden_size=hidden_size, ffn_dim=ffn_dim, dropout=dropout, activation=activation)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        hidden_states: Tensor,
        position: Tensor,
        memory: Tensor | None = None,
        memory_position: Tensor | None = None,
        attn_implementation: AttentionImplementation = "sdpa",
    ) -> Tensor:
        """hidden_states and position (B, S, C); memory and memory_position (B, HW, C) for cross-attention."""

        def self_attention(x: Tensor) -> Tensor:
            query = x + position
            return self.self_attn(query, query, x, attn_implementation=attn_implementation)

        def cross_attention(x: Tensor) -> Tensor:
            key = memory + memory_position
            return self.cross_attn(x + position, key, memory, attn_implementation=attn_implementation)

        blocks = [(self.self_attn_norm, self_attention)]
        if memory is not None:
            blocks.append((self.cross_attn_norm, cross_attention))
        for norm, block in (*blocks, (self.ffn_norm, self.ffn)):
            if self.pre_norm:
                hidden_states = hidden_states + self.dropout(block(norm(hidden_states)))
            else:
                hidden_states = norm(hidden_states + self.dropout(block(hidden_states)))
        return hidden_states


def transformer_layers(num_layers: int, **layer: Any) -> nn.ModuleList:
    return nn.ModuleList(TransformerLayer(**layer) for _ in range(num_layers))
