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

from pyro_irm.atomic import atomic_file
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
    "learning_rate",
    "weight_decay",
    "fit_labels",
    "restarts",
)


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    path = checkpoint_path(directory)
    with atomic_file(path) as temporary:
        torch.save(state, temporary)
    return path


def load_checkpoint(
    directory: str | os.PathLike, config: TrainConfig, shapes: dict[str, Any]
) -> dict[str, Any] | None:
    """The saved state if ``directory`` holds a checkpoint of this same fit, else None.

    Raises:
        ValueError: the checkpoint belongs to a fit with other settings or data shapes.
    """
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        why = (str(error).split(". ") or [""])[0].splitlines()[0][:160]
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {why}); "
            "it is truncated or not written by pyro_irm. Delete it to start the fit over"
        ) from None
    saved = state.get("identity", {}) if isinstance(state, dict) else {}
    if not saved:
        raise ValueError(f"{path}: holds no fit identity, so it is not a pyro_irm checkpoint; delete it")
    current = identity(config, shapes)
    mismatched = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if mismatched:
        details = ", ".join(_difference(k, a, b) for k, (a, b) in mismatched.items())
        raise ValueError(
            f"{path}: checkpoint is from a different fit ({details}); "
            "use another checkpoint_dir or delete this file"
        )
    return state


def _difference(name: str, saved: Any, now: Any) -> str:
    if name == "data":
        return "data: another log (or other rows, actions or embeddings)"
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = [k for k in dict.fromkeys([*saved, *now]) if saved.get(k) != now.get(k)]
        shown = ", ".join(f"{k} saved {saved.get(k)!r}, now {now.get(k)!r}" for k in keys[:3])
        return f"{name}: {shown}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"{name}: saved {saved!r}, now {now!r}"


def identity(config: TrainConfig, shapes: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must share with the fit that resumes it: the training settings that change
    its path (not ``max_epochs``, which a resumed fit may raise), plus ``shapes``: the data's
    fingerprint, the model's configuration and every parameter's shape."""
    fields = asdict(config)
    return {**{k: fields[k] for k in _IDENTITY_FIELDS}, **shapes}
