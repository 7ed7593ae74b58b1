"""The outcome of :func:`nettrim.prune`: the pruned model and its per-layer report."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .graph import PRUNABLE
from .layers import layer_kind
from .prunable import NOT_SELECTED, weight_modules
from .storage import stored_nbytes
from .write import attach_masks as attach_layer_masks, save as save_weights, to_csr
from .types import LayerReport

__all__ = ["LayerReport", "PruneResult", "format_table"]

_PHASES = {"record": "recording", "share_out": "sharing out", "layers": "layers",
           "neurons": "whole-neuron alternative"}  # PruneResult.timings, as the summary names them


def _fmt_shape(shape) -> str:
    return shape if isinstance(shape, str) else "x".join(str(s) for s in shape)


def _fmt_number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _fmt_samples(row: dict[str, Any]) -> str:
    """Rows of the layer program, and of how many when they were sampled (``max_positions``)."""
    if not row["n_samples"]:
        return "-"
    total = row.get("n_rows_total") or 0
    return f"{row['n_samples']:,} of {total:,}" if total > row["n_samples"] else f"{row['n_samples']:,}"


def _fmt_shape_change(row: dict[str, Any]) -> str:
    """The weight's shape, and the shape it was cut down to when neurons were removed."""
    before = _fmt_shape(row["shape"])
    after = (row.get("info") or {}).get("shape_after")
    return before if not after or after == before else f"{before}->{after}"


def format_table(header: str, rows: list[dict[str, Any]], footer: list[str],
                 dense: list[dict[str, Any]] = ()) -> str:
    """A per-layer table from report dicts (``LayerReport.to_dict()`` or a saved report),
    with a row for each layer left dense (:func:`unpruned_layers` entries) at the end."""
    columns = [("layer", "<", lambda r: r["name"]),
               ("kind", "<", lambda r: r["kind"]),
               ("shape", ">", _fmt_shape_change),
               ("relu", ">", lambda r: "yes" if r["relu"] else "no"),
               ("samples", ">", _fmt_samples),
               ("kept", ">", lambda r: f"{r['kept']:.1%}"),
               ("eps rel", ">", lambda r: "-" if r["epsilon_rel"] is None or math.isnan(r["epsilon_rel"])
                else f"{r['epsilon_rel']:.4f}"),
               ("err pre", ">", lambda r: _fmt_number(r["error_pre"])),
               ("err out", ">", lambda r: _fmt_number(r["error_out"])),
               ("cert", ">", lambda r: _fmt_number(r.get("certified_error"))),
               ("iters", ">", lambda r: str(r["iterations"])),
               ("status", "<", lambda r: r["status"]),
               ("seconds", ">", lambda r: f"{r['seconds']:.2f}")]
    cells = [[fmt(row) for _, _, fmt in columns] for row in rows]
    for row in dense:  # layers not pruned: name, kind, shape, kept and why
        cells.append([row["name"], row["kind"], _fmt_shape(row["shape"]), "-", "-", f"{row['kept']:.1%}"]
                     + ["-"] * (len(columns) - 8) + ["left dense", "-"])
    widths = [max([len(title)] + [len(line[i]) for line in cells]) for i, (title, _, _) in enumerate(columns)]
    def line(values):
        return "  ".join(f"{v:{align}{w}}" for v, (_, align, _), w in zip(values, columns, widths)).rstrip()
    return "\n".join([header, line([c[0] for c in columns])] + [line(c) for c in cells] + footer)


def unpruned_layers(model: nn.Module, pruned: Any, reasons: dict[str, str]) -> list[dict[str, Any]]:
    """Every module of ``model`` with a weight matrix that is not among ``pruned``: name,
    kind, shape, nonzero and total weights, kept fraction, and why (``reasons`` or
    "not among the layers pruned")."""
    rows = []
    for name, weights in weight_modules(model).items():
        if name in pruned:
            continue
        module = model.get_submodule(name)
        size = sum(weight.numel() for weight in weights)
        nnz = sum(int(torch.count_nonzero(weight)) for weight in weights)
        rows.append({"name": name, "kind": layer_kind(module) if isinstance(module, PRUNABLE) else type(module).__name__,
                     "shape": "+".join(_fmt_shape(weight.shape) for weight in weights), "nnz": nnz, "size": size,
                     "kept": nnz / size, "reason": reasons.get(name, NOT_SELECTED)})
    return rows


@dataclass
class PruneResult:
    """A pruned copy of the model with its report.

    Attributes
    ----------
    model : nn.Module
        The pruned copy (the model passed to :func:`nettrim.prune` is untouched).
    layers : dict
        Layer name to :class:`LayerReport`, in the order the layers were pruned.
    method, mode : str
    epsilon, gamma : float
        The settings asked for (``epsilon`` relative).
    sparsity : float, dict or None
        The target sparsity, if one was asked for.
    n_calibration : int
        Calibration inputs used.
    output_error : float or None
        ``||f̂(x) - f(x)||_F / ||f(x)||_F`` of the network outputs on the calibration data
        (None when the model's output is not a tensor).
    seconds : float
        Wall time of the whole prune.
    left_dense : dict
        Layers with weights that were not pruned because the program does not cover them
        (grouped convolutions, shared layers, recurrent layers, ...), with the reason.
        They (and any layer not selected through ``layers``) are counted in :attr:`kept`
        and listed in the table.
    timings : dict of str to float
        Wall time of the prune's phases, in seconds: ``'record'`` (copying the model and
        recording every layer's signals and the network's outputs), ``'share_out'`` (a
        network target shared out among the layers, ``allocate='error'``),
        ``'layers'`` (every layer's program or method, in cascade mode with its input
        captured from the pruned network) and ``'neurons'`` (Net-Trim's whole-neuron
        alternative at a high target, :mod:`nettrim.neuron_choice`); a phase that did
        not run is absent. They add up to at most :attr:`seconds`; the rest is the
        writing back and the output error. Parts of ``'layers'`` that a layer method
        reports per layer (``info["seconds_<part>"]``) are summed over the layers it solved
        (not those a resumed run read back from its work directory) as
        ``'seconds_<part>'``: for Net-Trim's OBS default at a target sparsity,
        ``'seconds_supports'`` (the OBS candidates) and ``'seconds_fits'`` (their
        ReLU-aware fits and the choice of rows). Empty for a network method (CaP,
        structured Net-Trim), which runs in one piece.
    """

    model: nn.Module
    layers: dict[str, LayerReport]
    method: str
    mode: str
    epsilon: float
    gamma: float
    sparsity: Any
    n_calibration: int
    output_error: float | None
    seconds: float
    left_dense: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # --------------------------------------------------------------- numbers
    @property
    def nnz_before(self) -> int:
        return sum(r.nnz_before for r in self.layers.values())

    @property
    def nnz_after(self) -> int:
        return sum(r.nnz_after for r in self.layers.values())

    @property
    def size(self) -> int:
        """Weights of the pruned layers (zero or not)."""
        return sum(r.size for r in self.layers.values())

    def unpruned(self) -> list[dict[str, Any]]:
        """The model's layers with weights that were not pruned (:func:`unpruned_layers`)."""
        return unpruned_layers(self.model, self.layers, self.left_dense)

    @property
    def kept(self) -> float:
        """Fraction of the network's weights that are nonzero: every weight matrix of the
        model counts, the ones left dense included (:attr:`kept_pruned` counts the pruned
        layers only)."""
        unpruned = self.unpruned()
        return ((self.nnz_after + sum(row["nnz"] for row in unpruned))
                / (self.size + sum(row["size"] for row in unpruned)))

    @property
    def kept_pruned(self) -> float:
        """Fraction of the pruned layers' weights that are nonzero."""
        return self.nnz_after / self.size

    def csr(self) -> dict[str, Any]:
        """Each pruned layer's weight as a ``scipy.sparse.csr_matrix`` ``(n_out, n_in)``."""
        modules = dict(self.model.named_modules())
        return {name: to_csr(modules[name].weight) for name in self.layers}

    def sizes(self) -> dict[str, int]:
        """Bytes of the pruned layers' weights: ``dense``, as :meth:`save` stores them
        (``stored``: bitmask + nonzero values where that is smaller, :mod:`nettrim.storage`),
        and of the original layers (``original``; larger than ``dense`` when neurons were
        removed)."""
        modules = dict(self.model.named_modules())
        weights = [modules[name].weight.detach() for name in self.layers]
        dense = sum(weight.numel() * weight.element_size() for weight in weights)
        original = sum(report.size * weight.element_size() for report, weight in zip(self.layers.values(), weights))
        stored = sum(stored_nbytes(weight) for weight in weights)
        return {"dense": int(dense), "stored": int(stored), "original": int(original)}

    # ---------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what :meth:`save` writes beside the weights)."""
        return {"nettrim_version": __version__, "method": self.method, "mode": self.mode,
                "epsilon": self.epsilon, "gamma": self.gamma, "sparsity": self.sparsity,
                "n_calibration": self.n_calibration, "output_error": self.output_error,
                "seconds": self.seconds, "timings": dict(self.timings), "kept": self.kept,
                "kept_pruned": self.kept_pruned,
                "nnz_before": self.nnz_before, "nnz_after": self.nnz_after, "size": self.size,
                "sizes": self.sizes(), "layers": [report.to_dict() for report in self.layers.values()],
                "left_dense": self.unpruned()}

    def summary(self) -> str:
        """The per-layer report as a text table."""
        return summary_from_dict(self.to_dict())

    def attach_masks(self) -> nn.Module:
        """Register the zero pattern as ``torch.nn.utils.prune`` masks on the pruned layers
        of :attr:`model`, so that fine-tuning keeps the zeros. Returns the model."""
        return attach_layer_masks(self.model, self.layers)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pruned weights to a safetensors file and the report beside it
        (``path`` with the suffix ``.json``); both atomically. Returns ``path``."""
        return save_weights(self.model, path, self.to_dict())

    def __repr__(self) -> str:
        return (f"PruneResult(method={self.method!r}, mode={self.mode!r}, layers={len(self.layers)}, "
                f"kept={self.kept:.3f}, output_error={self.output_error}, seconds={self.seconds:.2f})")


def summary_from_dict(report: dict[str, Any]) -> str:
    """The table of a report dict (from :meth:`PruneResult.to_dict` or a saved file)."""
    if report.get("sparsity") is not None:
        setting = f"sparsity {report['sparsity']}"
    else:
        setting = f"epsilon {report['epsilon']}"
        if report["mode"] == "cascade":
            setting += f", gamma {report['gamma']}"
    header = (f"{report['method']}, {report['mode']} mode, {setting}, "
              f"{report['n_calibration']:,} calibration inputs")
    dense = [row if isinstance(row, dict) else {"name": row, "kind": "-", "shape": "-", "kept": 1.0,
                                                "reason": report["left_dense"][row]}
             for row in report.get("left_dense") or []]  # rows; a dict of reasons in earlier reports
    if "size" in report:
        network = report["size"] + sum(row["size"] for row in dense)
        kept = report["nnz_after"] + sum(row["nnz"] for row in dense)
        footer = [f"weights kept: {kept:,} of the network's {network:,} ({report['kept']:.1%})"
                  + (f"; the pruned layers {report['nnz_after']:,} of {report['size']:,} "
                     f"({report['kept_pruned']:.1%})" if dense else "")]
    else:  # an earlier report format
        footer = [f"weights kept: {report['nnz_after']:,} of {report['nnz_before']:,} nonzero "
                  f"({report['kept']:.1%} of all)"]
    if report.get("output_error") is not None:
        footer.append(f"network output relative error on the calibration data: {report['output_error']:.4f}")
    sizes = report.get("sizes")
    if sizes:
        was = sizes.get("original", sizes["dense"])
        before = f" (was {_fmt_bytes(was)})" if was != sizes["dense"] else ""
        if "stored" in sizes:
            footer.append(f"size of the pruned layers' weights: dense {_fmt_bytes(sizes['dense'])}{before}, in "
                          f"the saved file {_fmt_bytes(sizes['stored'])} ({sizes['stored'] / sizes['dense']:.1%})")
    for row in dense:
        footer.append(f"left dense: {row['name']} ({row['reason']})")
    chosen = [row["info"] for row in report["layers"] if (row.get("info") or {}).get("weight_level_error") is not None]
    if chosen:
        then = ", then weights within the remaining layers" if chosen[0].get("answer", "").endswith("weights") else ""
        footer.append(f"whole neurons removed{then}, zeros in the original shapes (the weight-level answer's output "
                      f"error was {chosen[0]['weight_level_error']:.4f})")
    uncertified = [row["name"] for row in report["layers"]
                   if (row.get("info") or {}).get("polish_outcome", "certified") != "certified"]
    if uncertified:
        footer.append("not certified optimal (the ADMM's own answer, within its tolerance of the budget; the layer's "
                      f"info['polish_outcome'] says why): {', '.join(uncertified)}")
    rounded = [row["name"] for row in report["layers"] if (row.get("info") or {}).get("rounded")]
    if rounded:
        footer.append("rounded onto the target sparsity within the solver's tolerance of the budget (not the "
                      "optimum of the budget; the layer's info['rounded'] counts the weights set to zero): "
                      f"{', '.join(rounded)}")
    emptied = [row["name"] for row in report["layers"] if row["nnz_after"] == 0 and row["nnz_before"] > 0]
    if emptied:
        footer.append(f"pruned to nothing (every weight zero, the bias alone left): {', '.join(emptied)}")
    timings = report.get("timings") or {}
    parts = ", ".join(f"{name[len('seconds_'):]} {seconds:.2f} s" for name, seconds in timings.items()
                      if name.startswith("seconds_"))
    phases = ", ".join(f"{_PHASES.get(name, name)} {seconds:.2f} s"
                       + (f" ({parts})" if name == "layers" and parts else "")
                       for name, seconds in timings.items() if not name.startswith("seconds_"))
    footer.append(f"time: {report['seconds']:.2f} s" + (f" ({phases})" if phases else ""))
    return format_table(header, report["layers"], footer, dense)
