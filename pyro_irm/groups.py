"""The four latent groups of the implicit-feedback model (docs/method.md).

A row's group is the pair (preference r, propensity o). The order of ``GROUP_NAMES`` is the order of
the last dimension of every ``(N, 4)`` group tensor in the package.
"""

from __future__ import annotations

import torch

GROUP_NAMES: tuple[str, ...] = (
    "engaged_positive",  # r = 1, o = 1: liked it and acted
    "silent_positive",  # r = 1, o = 0: liked it, did not act
    "engaged_negative",  # r = 0, o = 1: would have acted, did not (the definitive negatives)
    "silent_negative",  # r = 0, o = 0: did not like it, would not have acted
)
NUM_GROUPS = len(GROUP_NAMES)

# (r, o) of each group, in GROUP_NAMES order.
GROUP_PREFERENCE = (1, 1, 0, 0)
GROUP_PROPENSITY = (1, 0, 1, 0)


def group_index(preference: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """Group index in ``GROUP_NAMES`` order from 0/1 tensors ``r`` and ``o`` of any equal shape."""
    return (2 * (1 - preference.long()) + (1 - propensity.long())).long()


def group_components(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`group_index`: ``(r, o)`` as long tensors."""
    groups = groups.long()
    return 1 - groups // 2, 1 - groups % 2
