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


def die_with_parent() -> None:
    """On Linux, have this process receive SIGTERM when the process that started it dies: a worker
    of a multi-process run (``--devices N``) never outlives a launcher that was killed outright.
    Elsewhere nothing is done."""
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before this process asked
        os.kill(os.getpid(), signal.SIGTERM)
