"""A run's finished layers kept on disk, so that an interrupted run can resume.

With ``work_dir`` :func:`nettrim.prune` writes each layer to the directory as soon as it is
finished (weights, bias and its report, one safetensors file per layer, atomically), next
to ``run.json``, which fingerprints the run: the settings, the model's weights and the
calibration data. ``resume=True`` reads the finished layers back (in cascade mode they are
written into the pruned copy, so the next layer sees exactly the input it would have seen)
and goes on from the first unfinished one; the weights are then bit-identical to an
uninterrupted run's. A fingerprint that differs (other settings, another checkpoint, other
calibration data) is an error naming what differs: a resumed run never mixes two runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .types import LayerOutcome, LayerReport
from .write import atomic_write, writable_directory

__all__ = ["WorkDir", "fingerprint"]

logger = logging.getLogger(__name__)

_RUN_FILE = "run.json"
_FORMAT = 1


def _digest_tensors(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Settings as JSON values (anything else by its ``repr``; arrays by their digest)."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return "sha256:" + _digest_tensors([torch.as_tensor(value)])
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def fingerprint(model: nn.Module, batches: Sequence[torch.Tensor], settings: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a run: its settings, the model's weights and the calibration inputs."""
    state = model.state_dict()
    return {"settings": _jsonable(settings),
            "model": _digest_tensors([state[key] for key in sorted(state)]),
            "calibration": _digest_tensors(list(batches))}


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    found = []
    for key in ("model", "calibration"):
        if saved.get(key) != current[key]:
            found.append("the model's weights" if key == "model" else "the calibration data")
    saved_settings = saved.get("settings", {})
    for key, value in current["settings"].items():
        if saved_settings.get(key) != value:
            found.append(f"{key} ({saved_settings.get(key)!r} then, {value!r} now)")
    return found


class WorkDir:
    """The finished layers of one run, in a directory.

    Parameters
    ----------
    path : str or PathLike
        The directory (created if missing).
    run : dict
        The run's :func:`fingerprint`.
    resume : bool
        Whether finished layers found there are taken up. Without it, a directory that
        already holds finished layers is an error (nothing is overwritten).
    """

    def __init__(self, path: str | os.PathLike, run: dict[str, Any], *, resume: bool) -> None:
        self.path = writable_directory(path, "work_dir")
        run_file = self.path / _RUN_FILE
        layer_files = sorted(self.path.glob("layer-*.safetensors"))
        if run_file.exists():
            try:
                saved = json.loads(run_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"work_dir: {str(run_file)!r} cannot be read ({exc}); remove the directory "
                                 "to start over") from exc
            if not resume and layer_files:
                raise ValueError(f"work_dir: {str(self.path)!r} already holds {len(layer_files)} finished layer(s) "
                                 "of a run; pass resume=True (--resume) to continue it, or use another directory")
            differences = _differences(saved.get("run", {}), run)
            if resume and differences:
                raise ValueError(f"work_dir: {str(self.path)!r} holds a run that differs from this one in "
                                 + ", ".join(differences) + "; resume with the same inputs and settings, "
                                 "or use another directory")
        elif layer_files:
            raise ValueError(f"work_dir: {str(self.path)!r} holds layer files but no {_RUN_FILE}; "
                             "remove them or use another directory")
        if not resume or not run_file.exists():
            for stale in layer_files:  # only reached without finished layers of another run
                stale.unlink()
            text = json.dumps({"format": _FORMAT, "run": run}, indent=2) + "\n"
            atomic_write(run_file, lambda tmp: Path(tmp).write_text(text))

    @staticmethod
    def holds_run(path: str | os.PathLike) -> bool:
        """Whether ``path`` is the work directory of a run (one that can be resumed)."""
        return (Path(path) / _RUN_FILE).is_file()

    def _layer_file(self, index: int) -> Path:
        return self.path / f"layer-{index:04d}.safetensors"

    def save(self, index: int, outcome: LayerOutcome, report: LayerReport) -> None:
        """Keep one finished layer: its weights and bias, and its report (which holds the
        rest of the outcome)."""
        from safetensors.torch import save_file

        tensors = {"weight": torch.from_numpy(np.ascontiguousarray(outcome.weight))}
        if outcome.bias is not None:
            tensors["bias"] = torch.from_numpy(np.ascontiguousarray(outcome.bias))
        metadata = {"name": report.name, "report": json.dumps(report.to_dict())}
        atomic_write(self._layer_file(index), lambda tmp: save_file(tensors, tmp, metadata=metadata))

    def finished(self, names: Sequence[str]) -> dict[str, tuple[LayerOutcome, LayerReport]]:
        """The finished layers among ``names`` (in order, up to the first missing one)."""
        from safetensors import safe_open

        found: dict[str, tuple[LayerOutcome, LayerReport]] = {}
        for index, name in enumerate(names):
            path = self._layer_file(index)
            if not path.exists():
                break
            try:
                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata() or {}
                    tensors = {key: handle.get_tensor(key).numpy() for key in handle.keys()}
                report_data = json.loads(metadata["report"])
            except Exception as exc:  # a file cut short by a crash outside atomic_write's reach
                logger.warning("work_dir: %s cannot be read (%s); layer %r is solved again", path, exc, name)
                break
            if metadata.get("name") != name:
                raise ValueError(f"work_dir: {str(path)!r} holds layer {metadata.get('name')!r} where this run has "
                                 f"{name!r}; use another directory")
            report_data["info"] = {**report_data.get("info", {}), "resumed": True}
            report = LayerReport.from_dict(report_data)
            found[name] = (report.outcome(tensors["weight"], tensors.get("bias")), report)
        return found
