"""Outputs that appear complete or not at all: write under a temporary name beside the target,
then rename over it (a rename within one directory is atomic on POSIX and Windows)."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_beside(path: Path) -> Path:
    # The suffix is kept so that writers that choose a format by suffix (savefig, np.save) still do.
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.
    A directory, a link or a special file at ``path`` is refused (:func:`check_output_path`)."""
    path = Path(path)
    check_output_path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path for this output")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def strict_json(value: Any, **dumps: Any) -> str:
    """``json.dumps`` that strict JSON readers accept: NaN and infinities (a metric of one class, a
    missing label) are written as ``null``, never as the bare tokens ``NaN`` and ``Infinity``."""
    return json.dumps(_finite(value), allow_nan=False, **dumps)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any, **dumps: Any) -> Path:
    """Write ``value`` as indented strict JSON (:func:`strict_json`) to ``path`` whole or not at all."""
    return write_text_atomic(path, strict_json(value, indent=2, **dumps) + "\n")


def check_output_path(path: str | os.PathLike) -> None:
    """Raise where an output at ``path`` could never be written in place: a symbolic link (it is
    never replaced, nor what it points to), a special file, or a path below a file."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(
            f"{path} is a symbolic link (to {os.readlink(path)}); an output never replaces a link or what it "
            "points to: give the target itself, or a new path"
        )
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise ValueError(f"{path} is a special file (a pipe, socket or device); choose another output path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{path}: {parent} is a file, not a directory; choose another output path")
            break


def check_replaceable(path: str | os.PathLike, marker: str) -> None:
    """Raise unless ``path`` is absent, an empty directory, or a directory holding ``marker`` (one
    written by the toolkit): a directory of the user's own is never replaced. See also
    :func:`check_output_path`."""
    path = Path(path)
    check_output_path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory; choose another output path")
    if any(path.iterdir()) and not (path / marker).is_file():
        raise ValueError(
            f"{path} is a directory with other files in it (no {marker}); it would be replaced whole, "
            "so choose a new or empty output directory"
        )


@contextmanager
def atomic_directory(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it takes the place of ``path``, on failure it
    is removed and ``path`` is left as it was.

    ``path`` may already hold an earlier output (a directory with the file ``marker``), which is
    replaced; any other non-empty directory is refused (see :func:`check_replaceable`).
    """
    path = Path(path)
    check_replaceable(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(path)
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if path.is_dir() and not path.is_symlink():
        retired = _temporary_beside(path)
        os.replace(path, retired)
        os.replace(temporary, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(temporary, path)


def save_figure(figure: Any, path: str | os.PathLike) -> Path:
    """``figure.savefig(path)``, whole or not at all (the format follows ``path``'s suffix)."""
    with atomic_file(path) as temporary:
        figure.savefig(temporary)
    return Path(path)
