"""The command's input files: the model factory, the checkpoint, the calibration data.

Each reader turns what a user can get wrong (a path, a pickled checkpoint, a checkpoint
that does not fit the architecture, calibration data of another form) into a
:class:`UsageError` with one line that says what to do.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "load_factory", "load_checkpoint", "load_calibration", "reason"]


class UsageError(Exception):
    """A problem with the command's inputs, reported as one line."""


def load_factory(spec: str, kwargs: dict[str, Any] | None = None):
    """Build a model from ``"package.module:factory"`` (a function or a class)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"--model: got {spec!r}, needs 'package.module:factory' "
                         "(e.g. nettrim.examples:digits_mlp)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--model: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"--model: {module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"--model: {spec!r} is not callable")
    model = factory(**(kwargs or {}))
    import torch

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model: {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PICKLED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the first sentence of its message,
    without terminal escape codes."""
    text = _ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0]
    end = first.find(". ")
    return f"{type(exc).__name__}: {first[:end + 1] if end > 0 else first}"


def _unreadable_checkpoint(path: str, exc: BaseException) -> str:
    """What to do about a checkpoint ``torch.load(..., weights_only=True)`` refused."""
    pickled = _PICKLED.search(_ANSI.sub("", str(exc)))
    if pickled:
        return (f"--checkpoint: {path!r} holds pickled Python objects ({pickled.group(1)}), not only tensors; "
                "it is a whole model or training state saved with torch.save. Save the weights alone with "
                "torch.save(model.state_dict(), path) (load the file yourself first, with weights_only=False, "
                "only if you trust where it came from)")
    return (f"--checkpoint: {path!r} cannot be read as a plain state_dict with weights_only=True "
            f"({reason(exc)}); save it with torch.save(model.state_dict(), path)")


def load_checkpoint(path: str, model) -> None:
    """Load a state_dict checkpoint (``weights_only=True``) into ``model``, strictly."""
    import torch

    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint: no file {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(_unreadable_checkpoint(path, exc)) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"--checkpoint: {path!r} holds a {type(state).__name__}, needs a state_dict "
                         "(torch.save(model.state_dict(), path))")
    model_state = model.state_dict()
    missing = [key for key in model_state if key not in state]
    unexpected = [key for key in state if key not in model_state]
    shapes = [f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(model_state[key].shape)}"
              for key, value in state.items()
              if key in model_state and hasattr(value, "shape") and value.shape != model_state[key].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append("shape mismatches " + "; ".join(shapes))
    if problems:
        raise UsageError(f"--checkpoint: {path!r} does not match the model: " + ", ".join(problems))
    model.load_state_dict(state)


def load_calibration(path: str):
    """Calibration inputs from a ``.pt`` (tensor, ``(x, y)``, or dict with ``x``) or ``.npz``/``.npy``."""
    import numpy as np
    import torch

    if not os.path.isfile(path):
        raise UsageError(f"--calib: no file {path!r}")
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            data: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                key = next((k for k in ("x", "inputs", "calib") if k in archive), names[0] if names else None)
                if key is None:
                    raise UsageError(f"--calib: {path!r} holds no array")
                data = archive[key]
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--calib: cannot read {path!r} ({reason(exc)})") from exc
    if isinstance(data, dict):
        key = next((k for k in ("x", "inputs", "calib") if k in data), None)
        if key is None:
            raise UsageError(f"--calib: {path!r} holds a dict without an 'x' entry (keys {list(data)})")
        data = data[key]
    if isinstance(data, (tuple, list)):  # (x, y): the inputs come first
        if not data:
            raise UsageError(f"--calib: {path!r} holds an empty {type(data).__name__}")
        data = data[0]
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor) and data.is_floating_point() is False and data.dtype != torch.bool:
        data = data.float()
    return data


# ---------------------------------------------------------------------------- commands
