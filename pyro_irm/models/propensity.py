"""How the feedback propensity o depends on the row and on the preference r.

A propensity component maps features ``(B, F)`` to logits ``(B, 2)`` of ``P(o = 1 | features, r)``
for ``r = 0`` and ``r = 1``. Independent propensity (the seed paper's form) repeats one logit.
To change the assumption, write another module with the same ``forward`` signature.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_irm.models.networks import MLP


class PropensityNetwork(nn.Module):
    """g: ``(B, F)`` features -> ``(B, 2)`` propensity logits for r = 0 and r = 1.

    Args:
        in_dim: number of features F.
        hidden: hidden widths of the MLP.
        depends_on_preference: if False, ``P(o=1)`` is the same for both r (o independent of r).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], depends_on_preference: bool, dropout: float = 0.0):
        super().__init__()
        # Kept under their argument names: a saved model rebuilds g from them (models.components).
        self.in_dim, self.hidden, self.dropout = in_dim, tuple(hidden), dropout
        self.depends_on_preference = depends_on_preference
        self.net = MLP(in_dim, hidden, 2 if depends_on_preference else 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.net(features)
        return logits if self.depends_on_preference else logits.expand(-1, 2)


def select_by_preference(logits: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """Pick ``logits[..., r]`` for a 0/1 ``preference`` that broadcasts against ``logits[..., 0]``.

    Written as arithmetic rather than indexing so that an enumerated ``r`` of shape ``(2, 1)``
    broadcasts against ``(B,)`` rows to ``(2, B)``.
    """
    off, on = logits[..., 0], logits[..., 1]
    return off + preference * (on - off)
