"""Pruned weights out of the model: masks, safetensors files with their report, CSR export.

A saved file holds the weights in the layout of :mod:`nettrim.storage` (sparse weight
tensors as bitmask + values, so the file is smaller than the dense model; the width of
every layer, so a model with neurons removed is rebuilt on loading) and the report in its
metadata. Files are written atomically: into a temporary file in the destination directory, flushed,
then renamed over the destination, so an interrupted write never leaves a partial file and
never destroys an earlier one.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .storage import PACKED_KEY, WIDTHS_KEY, layer_widths, pack, rebuild, unpack

__all__ = ["attach_masks", "plain_state_dict", "save", "load", "read_report", "to_csr",
           "atomic_write", "report_path", "writable_directory"]

_REPORT_KEY = "nettrim_report"


def attach_masks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Register ``weight != 0`` as a ``torch.nn.utils.prune`` mask on each named layer.

    Fine-tuning then keeps the zeros (the mask multiplies ``weight_orig`` in every forward).
    ``torch.nn.utils.prune.remove(module, "weight")`` makes it permanent. Returns ``model``.
    """
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            raise ValueError(f"layer {name!r} already has a pruning mask")
        torch_prune.custom_from_mask(module, "weight", mask=(module.weight.detach() != 0))
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with masks applied (``weight`` instead of ``weight_orig`` and
    ``weight_mask``), detached, contiguous and unshared: loadable into the bare architecture."""
    state = model.state_dict()
    plain = {}
    for key, tensor in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            tensor = tensor * state[key[:-5] + "_mask"]
            key = key[:-5]
        plain[key] = tensor.detach().to("cpu").clone().contiguous()
    return plain


def report_path(path: str | os.PathLike) -> Path:
    """Where the JSON report of a weights file goes: the same name with ``.json``."""
    return Path(path).with_suffix(".json")


def writable_directory(path: str | os.PathLike, argument: str) -> Path:
    """``path`` as a directory this process can write to (created if missing), or a
    ValueError naming ``argument`` and what is wrong, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument}: {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{argument}: cannot create {str(path)!r} ({exc.strerror})") from exc
    if not os.access(path, os.W_OK):
        raise ValueError(f"{argument}: {str(path)!r} is not writable; choose a directory you can write to")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a saved model is not
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(model: nn.Module, path: str | os.PathLike, report: dict[str, Any] | None = None) -> Path:
    """Save the model's weights to a safetensors file, with ``report`` beside it as JSON.

    Weight tensors with zeros are stored as bitmask + values where that is smaller, and
    the widths of the layers go into the metadata (:mod:`nettrim.storage`); :func:`load`
    gives back the same dense model. The report is also stored in the metadata, so
    ``nettrim report`` needs only the weights file. Returns the path of the weights file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    stored, packed = pack(plain_state_dict(model))
    metadata = {"format": "pt", PACKED_KEY: json.dumps(packed), WIDTHS_KEY: json.dumps(layer_widths(model))}
    if report is not None:
        metadata[_REPORT_KEY] = json.dumps(report)
    atomic_write(path, lambda tmp: save_file(stored, tmp, metadata=metadata))
    if report is not None:
        text = json.dumps(report, indent=2) + "\n"
        atomic_write(report_path(path), lambda tmp: Path(tmp).write_text(text))
    return path


def _metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def load(path: str | os.PathLike, model: nn.Module | None = None, *, strict: bool = True):
    """Read a saved weights file; with ``model``, load it in (``strict``) and return the model.

    ``model`` is the architecture as built before pruning: layers whose neurons or
    channels were removed (CaP) are first replaced by modules of the saved widths. Without
    ``model`` the dense tensors are returned as a dict.
    """
    from safetensors.torch import load_file

    metadata = _metadata(path)
    state = unpack(load_file(str(path)), json.loads(metadata.get(PACKED_KEY, "{}")))
    if model is None:
        return state
    widths = json.loads(metadata.get(WIDTHS_KEY, "{}"))
    if widths:
        rebuild(model, widths)
    model.load_state_dict(state, strict=strict)
    return model


def read_report(path: str | os.PathLike) -> dict[str, Any] | None:
    """The report stored in a weights file's metadata (None if it has none)."""
    text = _metadata(path).get(_REPORT_KEY)
    return json.loads(text) if text else None


def to_csr(weight: torch.Tensor | np.ndarray):
    """A layer's weight as a ``scipy.sparse.csr_matrix`` of shape ``(n_out, n_in)``
    (a convolution's weight is flattened to ``(C_out, C_in * kh * kw)``)."""
    from scipy import sparse

    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    return sparse.csr_matrix(weight.reshape(weight.shape[0], -1))
