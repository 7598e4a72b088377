"""A bounded resident set for memory-mapped embeddings.

A fit over a memory-mapped ``.npy`` (a user's cached embeddings) reads rows in random order. Every
page a read touches through the mapping stays mapped into the process, and on kernels that keep
files in large folios one touched row maps up to 2 MiB around it: a few minibatches map the whole
file. So a memory-mapped embeddings tensor is registered here with its file, and
:func:`~pyro_irm.models.base.gather_rows` reads a minibatch's rows with ``pread`` into a fresh
array instead (:class:`RowFile`): the file's pages stay in the kernel's page cache, shared and
reclaimable, and never count in the process's resident memory. Scans in order (validating,
fingerprinting) go through the mapping in chunks and give the pages back after each
(:class:`MappedPages`, ``madvise(MADV_DONTNEED)``). Nothing is copied whole and nothing is
written: the data stay the file's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
import weakref

import numpy as np
import torch

_MADV_DONTNEED = 4


class RowFile:
    """Rows ``(N, D)`` of a C-ordered array stored at ``offset`` bytes into ``path``."""

    def __init__(self, path: str, offset: int, shape: tuple[int, int], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """``(len(index), D)``: the rows ``index``, read one ``pread`` each into a fresh array."""
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        view = memoryview(out).cast("B")
        size, start = self.row_bytes, self.offset
        for k, row in enumerate(index.tolist()):
            if os.preadv(self._fd, [view[k * size : (k + 1) * size]], start + row * size) != size:
                raise OSError(f"{self.path}: row {row} is cut short; the file changed under the fit")
        return out


class MappedPages:
    """The page-aligned address range of a memory-mapped array."""

    def __init__(self, array: np.memmap):
        page = mmap.PAGESIZE
        address = array.ctypes.data
        self.start = address - address % page
        self.length = address + array.nbytes - self.start
        self._madvise = _libc_madvise()

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set (they stay in the page cache)."""
        if self._madvise is not None:
            self._madvise(ctypes.c_void_p(self.start), ctypes.c_size_t(self.length), _MADV_DONTNEED)


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


# data_ptr of a registered tensor -> (its shape, its file); a tensor lives as long as its FeedbackData
_ROW_FILES: dict[int, tuple[tuple[int, ...], RowFile]] = {}


def mapped_pages(values) -> MappedPages | None:
    """:class:`MappedPages` of ``values`` when it is a memory-mapped 2-d numpy array, else None."""
    if isinstance(values, np.memmap) and values.size and values.ndim == 2:
        return MappedPages(values)
    return None


def register_row_file(tensor: torch.Tensor, array: np.memmap) -> None:
    """Let :func:`row_file` find ``array``'s file from ``tensor``, a view of the same memory."""
    mapping = getattr(array, "_mmap", None)
    if mapping is None or array.filename is None or array.dtype != np.float32 or not array.flags.c_contiguous:
        return
    # numpy maps from the allocation boundary below ``offset``; where the array's first row sits in
    # that mapping says where it sits in the file (a slice of the map starts further in)
    mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    first_row = mapped_from + array.ctypes.data - np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    _ROW_FILES[tensor.data_ptr()] = (
        tuple(tensor.shape),
        RowFile(array.filename, first_row, array.shape, array.dtype),
    )


def row_file(tensor: torch.Tensor) -> RowFile | None:
    """The :class:`RowFile` of a registered memory-mapped tensor, else None."""
    found = _ROW_FILES.get(tensor.data_ptr())
    if found is None or found[0] != tuple(tensor.shape):
        return None
    return found[1]
