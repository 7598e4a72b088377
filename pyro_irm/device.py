"""Device selection shared by encoders and fitting."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return resolved
