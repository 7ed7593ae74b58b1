"""Error bounds of layer-wise pruning, and the measured errors to check them against.

For a bias-free ReLU network ``Y_0 = X``, ``Y_l = σ_l(Y_{l-1} W_l^T)`` (``σ_l`` the ReLU,
the identity for the last layer), pruned layer by layer into ``Ŷ_l = σ_l(Ŷ_{l-1} Ŵ_l^T)``,
write ``e_l = ||Ŷ_l - Y_l||_F`` for the error of layer ``l``'s output on the calibration
inputs (``e_0 = 0``: the input is not pruned).

Two facts carry every bound below.

- ``σ`` is 1-Lipschitz entrywise, hence ``||σ(A) - σ(B)||_F <= ||A - B||_F``.
- With samples as rows, ``||A W^T||_F <= ||W||_2 ||A||_F`` (``||·||_2`` the spectral norm,
  the operator norm induced by the Frobenius norm of the rows). Since
  ``||W||_2 <= ||W||_F <= ||W||_1`` (entrywise ℓ1), either larger norm also bounds it.

**Parallel mode** (each layer solved on the original signals with budget ``ε_l``):

.. math::

    e_l \\le \\|\\sigma(\\hat Y_{l-1}\\hat W_l^T) - \\sigma(Y_{l-1}\\hat W_l^T)\\|_F
          + \\|\\sigma(Y_{l-1}\\hat W_l^T) - Y_l\\|_F
        \\le \\|\\hat W_l\\|_2\\, e_{l-1} + \\varepsilon_l .

The norm is that of the PRUNED weight. The Net-Trim program minimises the entrywise ℓ1
norm and the original weight is feasible, so ``||Ŵ_l||_2 <= ||Ŵ_l||_1 <= ||W_l||_1``:
the recursion also holds with the original's entrywise ℓ1 norm, and a network whose
links ``l >= 2`` have ``||W_l||_1 = 1`` gets ``e_L <= Σ_l ε_l``. The spectral norm of
the original would not do here: pruning need not lower it (``notebooks/02_error_bounds``
measures up to 2.2 times the original after pruning).

**Cascade mode** (layer ``l >= 2`` solved on the pruned input ``X̂ = Ŷ_{l-1}`` with
``V = X̂ W_l^T`` and ``ε_l^2 = γ_l ||(X̂ W_l^T - Y_l)_Ω||_F^2``): on ``Ω`` the residual
``X̂ W_l^T - Y_l`` equals ``(X̂ - Y_{l-1}) W_l^T``, and on ``Ωᶜ`` (where
``Y_{l-1} W_l^T <= 0``) ``σ(X̂ Ŵ_l^T) <= σ(V) <= |(X̂ - Y_{l-1}) W_l^T|``, so

.. math::

    e_l^2 \\le \\gamma_l \\|(\\cdot)_\\Omega\\|^2 + \\|(\\cdot)_{\\Omega^c}\\|^2
          \\le \\gamma_l \\|W_l\\|_2^2\\, e_{l-1}^2,
    \\qquad
    e_L \\le \\varepsilon_1 \\sqrt{\\textstyle\\prod_{l=2}^L \\gamma_l}\\;
              \\prod_{l=2}^L \\|W_l\\|_2 .

Here the norm is that of the ORIGINAL weight (spectral, or any larger norm).

**Link normalisation.** ReLU is positively homogeneous, so multiplying ``W_l`` by
``c_l > 0`` with ``Π c_l = 1`` leaves a bias-free network's function unchanged.
:func:`normalise_links` gives every link fed by a hidden layer (``l = 2..L``) norm 1 and
puts the product of their norms on the first link, whose norm enters neither bound (its
input is exact). With the entrywise ℓ1 norm (the default) both ``e_L <= Σ ε_l`` and
``e_L <= ε_1 sqrt(Π γ_l)`` then hold.

**Solver tolerance.** A solver meets its budget only to a tolerance: the report's
``violation`` ``v`` is the relative excess over the program's constraints (ball and
inequality). :func:`inflation` turns it into the factor ``κ(v)`` by which the layer's
guarantee grows: ``1 + v`` for a layer without ReLU, ``1 + √2 v`` with one (the excess
of the inequality adds at most ``v ε`` more on the inactive entries:
``sqrt((1 + v)^2 + v^2) <= 1 + √2 v``). :func:`budgets` applies it: ``ε_l κ(v_l)`` in
parallel mode, ``γ_l κ(v_l)^2`` in cascade mode.
"""
from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .result import PruneResult

__all__ = ["NORMS", "Budgets", "links", "layer_norms", "normalise_links", "inflation", "budgets",
           "parallel_bound", "cascade_bound", "general_bound", "layer_outputs", "layer_errors"]

logger = logging.getLogger(__name__)

Norm = Literal["l1", "fro", "spectral"]
NORMS: tuple[str, ...] = ("l1", "fro", "spectral")


# ---------------------------------------------------------------- network shape
def links(model: nn.Module) -> list[tuple[nn.Linear, bool]]:
    """The links of a bias-free ReLU MLP, in order, each with whether a ReLU follows it.

    Parameters
    ----------
    model : nn.Sequential
        Children ``Linear(bias=False)`` and ``ReLU`` only, starting with a ``Linear``,
        at most one ``ReLU`` after each ``Linear``.

    Raises
    ------
    TypeError
        For anything else (another module type, a nested container, a model that is not a
        ``Sequential``).
    ValueError
        For a ``Linear`` with a bias (the bounds' normalisation needs positive
        homogeneity), or a ``ReLU`` not directly after a ``Linear``.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model: got {type(model).__name__}, needs an nn.Sequential of bias-free Linear and ReLU "
                        "modules")
    found: list[tuple[nn.Linear, bool]] = []
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            if module.bias is not None:
                raise ValueError(f"layer {name!r} has a bias: the bounds and the link normalisation need a "
                                 "bias-free network (nn.Linear(..., bias=False)), which is positively homogeneous")
            found.append((module, False))
        elif isinstance(module, nn.ReLU):
            if not found or found[-1][1]:
                raise ValueError(f"module {name!r}: a ReLU must follow a Linear directly (one ReLU per Linear)")
            found[-1] = (found[-1][0], True)
        else:
            raise TypeError(f"module {name!r} is a {type(module).__name__}: only Linear(bias=False) and ReLU "
                            "are supported")
    if not found:
        raise ValueError("model: has no Linear layer")
    return found


def _matrix_norm(weight: torch.Tensor, norm: str) -> float:
    weight = weight.detach().double()
    if norm == "l1":
        return float(weight.abs().sum())
    if norm == "fro":
        return float(torch.linalg.matrix_norm(weight, ord="fro"))
    if norm == "spectral":
        return float(torch.linalg.matrix_norm(weight, ord=2))
    raise ValueError(f"norm: got {norm!r}, needs one of {NORMS}")


def layer_norms(model: nn.Module, norm: Norm = "l1") -> list[float]:
    """``||W_l||`` of every link of a bias-free ReLU MLP.

    Parameters
    ----------
    model : nn.Sequential
        See :func:`links`.
    norm : {'l1', 'fro', 'spectral'}, default 'l1'
        ``'l1'``: entrywise ``Σ |w_ij|`` (the Net-Trim objective); ``'fro'``: Frobenius;
        ``'spectral'``: largest singular value. ``spectral <= fro <= l1``, and each bounds
        ``||A W^T||_F / ||A||_F``.

    Returns
    -------
    list of float
        One norm per ``Linear``, in order.
    """
    if norm not in NORMS:
        raise ValueError(f"norm: got {norm!r}, needs one of {NORMS}")
    return [_matrix_norm(linear.weight, norm) for linear, _ in links(model)]


def normalise_links(model: nn.Module, norm: Norm = "l1") -> nn.Sequential:
    """A copy of a bias-free ReLU MLP with unit norm on every link fed by a hidden layer.

    With ``n_l = ||W_l||`` the copy has ``W_l / n_l`` for ``l = 2..L`` and
    ``W_1 · Π_{l>=2} n_l`` for the first link. Since ``relu(c z) = c relu(z)`` for
    ``c > 0`` and there are no biases, the copy computes the same function (up to rounding).
    The first link's norm enters no bound (its input is the exact network input), so it
    is the one that carries the scale.

    Parameters
    ----------
    model : nn.Sequential
        Bias-free ``Linear`` / ``ReLU`` layers (see :func:`links`); not modified.
    norm : {'l1', 'fro', 'spectral'}, default 'l1'
        The norm set to 1. ``'l1'`` (entrywise) is what the parallel bound ``Σ ε_l`` needs
        (see the module docstring); ``'spectral'`` is the tightest for the cascade bound.

    Returns
    -------
    nn.Sequential
        The normalised copy.

    Raises
    ------
    ValueError
        When a link ``l >= 2`` is all zeros (no positive scale normalises it), or for a
        model :func:`links` refuses.
    """
    normalised = copy.deepcopy(model)
    found = links(normalised)
    norms = [_matrix_norm(linear.weight, norm) for linear, _ in found]
    if any(n == 0 for n in norms[1:]):
        raise ValueError("normalise_links: a link after the first is all zeros; it cannot be scaled to norm 1")
    carried = math.prod(norms[1:])
    with torch.no_grad():
        found[0][0].weight.mul_(carried)
        for (linear, _), n in zip(found[1:], norms[1:]):
            linear.weight.div_(n)
    logger.debug("normalise_links: %s norms %s, first link scaled by %.4g", norm, norms, carried)
    return normalised


# ------------------------------------------------------------------- budgets
def inflation(violation: float, relu: bool = True) -> float:
    """Factor ``κ(v)`` by which a layer's guarantee grows when its program is met only to
    a relative excess ``v`` (the report's ``violation``).

    On the active entries the response is within ``ε (1 + v)`` of ``Y``; on the inactive
    ones it exceeds its bound by at most ``v ε`` in norm. The layer's output error is then
    at most ``ε sqrt((1 + v)^2 + v^2) <= ε (1 + √2 v)``, and ``ε (1 + v)`` without ReLU.

    Parameters
    ----------
    violation : float
        ``v >= 0``.
    relu : bool, default True
        Whether the layer's program has the ReLU's inequality.
    """
    if not violation >= 0:  # also refuses NaN
        raise ValueError(f"violation: got {violation!r}, needs a number >= 0")
    return 1.0 + (math.sqrt(2.0) if relu else 1.0) * violation


@dataclass
class Budgets:
    """The budgets a pruning run guarantees, inflated by the reported violations.

    Attributes
    ----------
    epsilons : list of float
        ``ε_l κ(v_l)``: each layer's error bound on the input it was solved on.
    gammas : list of float
        ``γ κ(v_l)^2`` for the layers solved on a changed input (cascade mode, ``l >= 2``),
        1 for the others: the factor by which ``e_l^2 / (||W_l||^2 e_{l-1}^2)`` may grow.
    violations : list of float
        The violations used (0 for a layer that kept its original weights).
    start : int
        Cascade mode: index of the last layer solved on the exact network input (0 unless
        the first layers kept their original weights, which leaves the next one's input
        unchanged). The cascade bound starts there:
        ``cascade_bound(epsilons[start], gammas[start + 1:])``.
    """

    epsilons: list[float]
    gammas: list[float]
    violations: list[float]
    start: int = 0

    def cascade(self, norms: Sequence[float] | None = None) -> float:
        """The cascade bound :func:`cascade_bound` from these budgets (``norms``: one per
        layer, the ORIGINAL weights'; omitted for a link-normalised network)."""
        rest = None if norms is None else list(norms)[self.start + 1:]
        return cascade_bound(self.epsilons[self.start], self.gammas[self.start + 1:], rest)


def budgets(result: PruneResult) -> Budgets:
    """Per-layer budgets of a Net-Trim :class:`~nettrim.PruneResult`, inflated by the
    violations its report gives (see :func:`inflation`).

    A layer that kept its original weights (status ``"kept original ..."``) meets its
    program exactly (the original weights are feasible by construction), so a missing
    (NaN) violation counts as 0 there.

    In cascade mode the first layer is solved on the exact input with ``ε_1``; every later
    one with ``ε_l^2 = γ ||(X̂ W_l^T - Y_l)_Ω||^2``, hence ``γ_l = γ κ(v_l)^2``.

    Raises
    ------
    ValueError
        For a result without per-layer budgets (a method other than Net-Trim, a sparsity
        target), or a NaN violation on a layer that was solved.
    """
    if result.sparsity is not None or result.mode not in ("parallel", "cascade"):
        raise ValueError("budgets: needs a Net-Trim result pruned at a budget epsilon (no sparsity target), "
                         f"got method {result.method!r}, mode {result.mode!r}, sparsity {result.sparsity!r}")
    reports = list(result.layers.values())
    start = 0
    while result.mode == "cascade" and start < len(reports) - 1 and reports[start].status.startswith("kept original"):
        start += 1
    epsilons, gammas, violations = [], [], []
    for index, (name, report) in enumerate(result.layers.items()):
        violation = report.violation
        if math.isnan(violation):
            if not report.status.startswith("kept original"):
                raise ValueError(f"layer {name!r}: no violation in the report (status {report.status!r})")
            violation = 0.0
        if math.isnan(report.epsilon):
            raise ValueError(f"layer {name!r}: no budget epsilon in the report (method {report.method!r})")
        kappa = inflation(violation, report.relu)
        epsilons.append(report.epsilon * kappa)
        cascaded = result.mode == "cascade" and index > start
        gammas.append(result.gamma * kappa**2 if cascaded else 1.0)
        violations.append(violation)
    return Budgets(epsilons, gammas, violations, start)


# -------------------------------------------------------------------- bounds
def _epsilons(epsilons: PruneResult | Sequence[float]) -> list[float]:
    if hasattr(epsilons, "layers") and hasattr(epsilons, "mode"):
        return budgets(epsilons).epsilons  # type: ignore[arg-type]
    return [float(e) for e in epsilons]  # type: ignore[union-attr]


def general_bound(epsilons: PruneResult | Sequence[float], norms: Sequence[float],
                  upstream: Sequence[float] | None = None) -> list[float]:
    """The parallel-mode recursion ``b_l = ε_l + ||Ŵ_l|| b_{l-1}``, ``b_0 = 0``.

    ``b_l`` bounds ``e_l = ||Ŷ_l - Y_l||_F`` when every layer was solved on the original
    signals (parallel mode) within ``ε_l``, and ``norms[l]`` bounds the spectral norm of
    the PRUNED weight ``Ŵ_l``: e.g. that spectral norm itself, or the entrywise ℓ1 norm of
    the original weight (``||Ŵ_l||_2 <= ||Ŵ_l||_1 <= ||W_l||_1`` by ℓ1 optimality).

    Parameters
    ----------
    epsilons : PruneResult or sequence of float
        Per-layer budgets ``ε_l`` (a result gives them inflated, :func:`budgets`).
    norms : sequence of float
        ``||Ŵ_l||`` per layer (``norms[0]`` is not used: the input is exact).
    upstream : sequence of float, optional
        Measured errors ``e_1, ..., e_L`` (:func:`layer_errors`). Given, each step uses the
        measured error of the layer before instead of its bound: ``b_l = ε_l + ||Ŵ_l|| e_{l-1}``
        (one step of the recursion, checked layer by layer).

    Returns
    -------
    list of float
        ``b_1, ..., b_L``.
    """
    eps = _epsilons(epsilons)
    if len(norms) != len(eps):
        raise ValueError(f"norms: got {len(norms)} values for {len(eps)} layers")
    if upstream is not None and len(upstream) != len(eps):
        raise ValueError(f"upstream: got {len(upstream)} values for {len(eps)} layers")
    bound, out = 0.0, []
    for index, (e, n) in enumerate(zip(eps, norms)):
        before = bound if upstream is None else (float(upstream[index - 1]) if index > 0 else 0.0)
        bound = e + float(n) * before
        out.append(bound)
    return out


def parallel_bound(epsilons: PruneResult | Sequence[float]) -> float:
    """``Σ_l ε_l``: the parallel-mode bound on ``||Ŷ_L - Y_L||_F`` for a link-normalised
    network (``||W_l||_1 = 1`` for ``l >= 2``, see :func:`normalise_links`).

    Parameters
    ----------
    epsilons : PruneResult or sequence of float
        Per-layer budgets (a result gives them inflated by its violations, :func:`budgets`).
    """
    return float(sum(_epsilons(epsilons)))


def cascade_bound(eps_1: float, gammas: Sequence[float], norms: Sequence[float] | None = None) -> float:
    """``ε_1 sqrt(Π_{l>=2} γ_l) Π_{l>=2} ||W_l||``: the cascade-mode bound on ``||Ŷ_L - Y_L||_F``.

    Parameters
    ----------
    eps_1 : float
        The first layer's budget.
    gammas : sequence of float
        ``γ_l`` of the layers ``l = 2..L`` (inflated ones from :func:`budgets`:
        ``budgets(result).gammas[1:]``).
    norms : sequence of float, optional
        ``||W_l||`` of the ORIGINAL weights of layers ``2..L`` (spectral, or any larger
        norm); omitted for a link-normalised network (all 1).
    """
    value = float(eps_1) * math.sqrt(math.prod(float(g) for g in gammas))
    if norms is not None:
        if len(norms) != len(gammas):
            raise ValueError(f"norms: got {len(norms)} values for {len(gammas)} layers after the first")
        value *= math.prod(float(n) for n in norms)
    return value


# -------------------------------------------------------------- measurements
def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``Y_1, ..., Y_L`` of a bias-free ReLU MLP on ``x``, in float64 (a plain forward
    through the ``Sequential``; each ``Y_l`` after its ReLU, if any)."""
    found = links(model)
    out = []
    y = torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64).reshape(len(x), -1)
    with torch.no_grad():
        for linear, relu in found:  # on the host in float64, wherever the model and x live
            y = y @ linear.weight.detach().to(device="cpu", dtype=torch.float64).T
            if relu:
                y = torch.clamp_min(y, 0.0)
            out.append(y)
    return out


def layer_errors(original: nn.Module, pruned: nn.Module, x: torch.Tensor) -> list[float]:
    """Measured ``e_l = ||Ŷ_l - Y_l||_F`` for ``l = 1..L`` on inputs ``x`` (use the
    calibration inputs the programs were built on), computed in float64.

    Parameters
    ----------
    original, pruned : nn.Sequential
        The same bias-free ReLU MLP architecture (see :func:`links`).
    x : Tensor, shape (n_samples, n_in)
    """
    ys, yhats = layer_outputs(original, x), layer_outputs(pruned, x)
    if len(ys) != len(yhats) or any(a.shape != b.shape for a, b in zip(ys, yhats)):
        raise ValueError("original and pruned: need the same architecture")
    return [float(torch.linalg.vector_norm(b - a)) for a, b in zip(ys, yhats)]
