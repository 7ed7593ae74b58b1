"""Where recorded activations live: in memory, or in memory-mapped files on disk.

The recorder appends each layer's rows batch by batch to a *sink* of the store and gets one
tensor back at the end. In memory the chunks are concatenated. On disk (``store="disk"``)
the chunks are written to a raw file as they come and the result is a tensor backed by a
read-only ``numpy.memmap`` of it: the operating system pages the rows in when a layer's
program is built and can drop them again, so the resident memory stays near one layer's
program instead of every layer's signals. A ``memory_budget`` keeps the first bytes in
memory and sends the rest to disk.

Sizes are given in bytes or as text: ``"512MiB"``, ``"4GiB"``, ``"2GB"``.
"""
from __future__ import annotations

import logging
import mmap
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .write import writable_directory

__all__ = ["ActivationStore", "parse_size", "STORES"]

logger = logging.getLogger(__name__)

STORES = ("memory", "disk")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any, name: str = "memory_budget") -> int:
    """Bytes from an integer or a text like ``"4GiB"`` / ``"500MB"``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?i?[bB]?)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ValueError(f"{name}: got {value!r}, needs a number of bytes >= 0 or a size like '4GiB' or '500MB'")


class _Sink:
    """The rows of one array, appended chunk by chunk."""

    def __init__(self, store: "ActivationStore", key: str) -> None:
        self.store, self.key = store, key
        self.chunks: list[torch.Tensor] = []
        self.file = None
        self.path: Path | None = None
        self.rows, self.columns, self.dtype = 0, None, None

    def append(self, chunk: torch.Tensor, *, copy: bool = True) -> None:
        """Add rows; ``copy=False`` when ``chunk`` is a fresh tensor nobody else holds."""
        chunk = chunk.detach().to("cpu")
        if self.columns is None:
            self.columns, self.dtype = tuple(chunk.shape[1:]), chunk.dtype
        self.rows += int(chunk.shape[0])
        if self.file is None and self.store.reserve(chunk.numel() * chunk.element_size()):
            self.chunks.append(chunk.clone() if copy else chunk)
            return
        if self.file is None:  # spill: what was kept so far goes first
            self.path = self.store.new_path(self.key)
            self.file = open(self.path, "wb")
            for kept in self.chunks:
                self.file.write(kept.contiguous().numpy().tobytes())
            self.store.release(sum(kept.numel() * kept.element_size() for kept in self.chunks))
            self.chunks = []
        self.file.write(chunk.contiguous().numpy().tobytes())

    def finish(self) -> torch.Tensor:
        """All the rows as one tensor (memory-mapped when they went to disk)."""
        if self.file is None:
            return torch.cat(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.file.close()
        dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        mapped = np.memmap(self.path, dtype=dtype, mode="r", shape=(self.rows, *self.columns))
        self.store.mapped_bytes += mapped.nbytes
        self.store._maps.append(mapped)
        return _readonly_tensor(mapped)


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor on a read-only memmap, without copying (torch warns that it is not writable;
    nothing here writes to it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class ActivationStore:
    """Activations in memory, or memory-mapped on disk beyond a budget.

    Parameters
    ----------
    store : {'memory', 'disk'}, default 'memory'
    memory_budget : int or str, optional
        With ``'disk'``: bytes kept in memory before arrays go to disk (default 0: every
        array goes to disk).
    directory : str or PathLike, optional
        With ``'disk'``: where the files go (created if missing). Default: a temporary
        directory. :meth:`close` removes the files (and a temporary directory).
    """

    def __init__(self, store: str = "memory", memory_budget: Any = None,
                 directory: str | os.PathLike | None = None) -> None:
        if store not in STORES:
            raise ValueError(f"store: got {store!r}, needs one of {STORES}")
        if store == "memory" and (memory_budget is not None or directory is not None):
            raise ValueError("memory_budget and store_dir apply to store='disk' only")
        self.on_disk = store == "disk"
        self.budget = parse_size(memory_budget) if memory_budget is not None else (0 if self.on_disk else None)
        self.in_memory = 0
        self.mapped_bytes = 0
        self._temporary = None
        self.directory: Path | None = None
        if self.on_disk:
            if directory is None:
                self._temporary = tempfile.TemporaryDirectory(prefix="nettrim-activations-")
                self.directory = Path(self._temporary.name)
            else:
                self.directory = writable_directory(directory, "store_dir")
        self._count = 0
        self._maps: list[np.memmap] = []
        self._paths: list[Path] = []

    def sink(self, key: str) -> _Sink:
        """A new array to append rows to."""
        return _Sink(self, key)

    def drop_resident(self) -> None:
        """Let the operating system take back the pages of the mapped files read so far
        (``madvise(MADV_DONTNEED)``; they are read again from the file when needed)."""
        for mapped in self._maps:
            handle = getattr(mapped, "_mmap", None)
            if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
                handle.madvise(mmap.MADV_DONTNEED)

    def reserve(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more may stay in memory (and count them if so)."""
        if self.budget is not None and self.in_memory + nbytes > self.budget:
            return False
        self.in_memory += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self.in_memory -= nbytes

    def new_path(self, key: str) -> Path:
        self._count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        path = self.directory / f"{self._count:05d}-{safe}.bin"
        self._paths.append(path)
        return path

    def close(self) -> None:
        """Remove the files (and the temporary directory); tensors mapped from them must not
        be used after."""
        self._maps.clear()
        for path in self._paths:
            path.unlink(missing_ok=True)
        self._paths.clear()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __repr__(self) -> str:
        where = f"disk at {self.directory}" if self.on_disk else "memory"
        return f"ActivationStore({where}, {self.in_memory} bytes in memory, {self.mapped_bytes} mapped)"
