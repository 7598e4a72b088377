"""Per-epoch training checkpoints that a fit resumes from.

One file, written atomically, loaded with ``torch.load(weights_only=True)``: model, guide and
optimizer state, the best state so far, the history, the epoch and the RNG state.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pyro_irm.inference.config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
# Fields that must match for a checkpoint to belong to this fit.
_IDENTITY_FIELDS = (
    "method",
    "inference",
    "guide_gradient",
    "batch_size",
    "seed",
    "validation_fraction",
)


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    directory: str | os.PathLike, config: TrainConfig, shapes: dict[str, int]
) -> dict[str, Any] | None:
    """The saved state if ``directory`` holds a checkpoint of this same fit, else None.

    Raises:
        ValueError: the checkpoint belongs to a fit with other settings or data shapes.
    """
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("identity", {})
    current = identity(config, shapes)
    mismatched = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if mismatched:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(
            f"{path}: checkpoint is from a different fit ({details}); "
            "use another checkpoint_dir or delete this file"
        )
    return state


def identity(config: TrainConfig, shapes: dict[str, int]) -> dict[str, Any]:
    fields = asdict(config)
    return {**{k: fields[k] for k in _IDENTITY_FIELDS}, **shapes}
