"""The transformer decoder of MaskFormer (paper Sec. 3.3, Fig. 2): DETR's decoder on learned queries.

Q learned query positions cross-attend to the backbone's res5 features (memory, with a 2-D sine position
encoding); the target starts at zero. Each layer's output goes through the shared final LayerNorm, which
gives the per-layer predictions used for deep supervision.

Shapes: B batch, Q queries, C channels (d), H×W memory size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .attention import AttentionImplementation, sequence_with_position, transformer_layers


class TransformerDecoder(nn.Module):
    """Queries + input projection + L decoder layers (self-, cross-attention, FFN) + the shared final LayerNorm."""

    def __init__(self, *, in_channels: int, hidden_size: int, num_queries: int, num_layers: int, **layer: Any):
        """`layer`: the keyword arguments of each `TransformerLayer` (num_heads, ffn_dim, dropout, ...)."""
        super().__init__()
        self.hidden_size = hidden_size
        self.query_embed = nn.Embedding(num_queries, hidden_size)
        # NOTE: the original projects the memory only when its width differs from d (1x1 conv).
        self.input_proj = nn.Conv2d(in_channels, hidden_size, kernel_size=1) if in_channels != hidden_size else None
        self.layers = transformer_layers(num_layers, hidden_size=hidden_size, cross_attention=True, **layer)
        self.layernorm = nn.LayerNorm(hidden_size)

    def forward(
        self,
        memory: Tensor,
        *,
        attn_implementation: AttentionImplementation = "sdpa",
        return_intermediate: bool = False,
        return_hidden_states: bool = False,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """memory (B, C_in, H, W) -> final queries (B, Q, C); if asked, the normalised outputs of the first L-1
        layers (each (B, Q, C)) for deep supervision; if asked, the hidden states in transformers' layout: each
        layer's input (the first is the zero target) and the final queries, L+1 tensors (B, Q, C)."""
        if self.input_proj is not None:
            memory = self.input_proj(memory)
        memory, memory_position = sequence_with_position(memory)  # (B, HW, C) each
        query_position = self.query_embed.weight.unsqueeze(0).expand(memory.shape[0], -1, -1)  # (B, Q, C)
        hidden_states = torch.zeros_like(query_position)
        intermediate, layer_inputs = [], []
        for index, layer in enumerate(self.layers):
            if return_hidden_states:
                layer_inputs.append(hidden_states)
            hidden_states = layer(hidden_states, query_position, memory, memory_position, attn_implementation)
            if return_intermediate and index < len(self.layers) - 1:
                intermediate.append(self.layernorm(hidden_states))
        queries = self.layernorm(hidden_states)
        return queries, intermediate, [*layer_inputs, queries] if return_hidden_states else []
