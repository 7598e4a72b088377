"""Small MLP heads over fixed embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim`` with GELU activations; ``(B, in_dim) -> (B, out_dim)``.
    ``bias=False`` leaves the last layer without a bias."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0, bias: bool = True
    ):
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_dim, bias=bias))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(inputs)


def full_precision(values: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 when a low-precision autocast computed them (float64 stays float64):
    the likelihood's log-space sums are taken in full precision."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def reward_network(embedding_dim: int, config) -> MLP:
    """The reward network f of a :class:`~pyro_irm.models.config.ModelConfig`: ``(B, D) -> (B, 1)``.

    ``reward_head='linear'`` is ``w . e`` with no bias, the stock ``score`` layer: a constant shift
    of the reward would be lost by a stock export, so none is fitted. The class prior P(r=1) then
    rides on the embeddings' common direction (decoder states share a large mean component).
    """
    if config.reward_head == "linear":
        return MLP(embedding_dim, (), 1, bias=False)
    return MLP(embedding_dim, config.reward_hidden, 1, config.dropout)
