"""The ADMM's array work on torch tensors (``backend="torch"`` of :func:`solvers.admm.solve_admm`).

This private module imports torch at its top; :mod:`solvers.admm` imports it only when
``backend="torch"`` is asked for, so ``import solvers`` never loads torch.

It holds the torch twins of :mod:`solvers._kernels`, the array operations the one
factorisation of :mod:`solvers._factor` needs on tensors (``TORCH_OPS``), and
:class:`TorchEngine`, which gives the shared iteration of :func:`~solvers.admm.solve_admm`
the same methods as :class:`solvers._engine.NumpyEngine`. Every tensor lives
on one device (``cpu`` or ``cuda``); the only transfers to the host are at check
iterations (the residual norms, a handful of float64 scalars), for a polishing attempt
and for the returned weights.

State, as in :mod:`solvers._kernels`: with over-relaxation ``alpha`` the iteration keeps
the constrained copies only through

.. math::

    \\text{carry} = (1 - \\alpha) A + U, \\qquad B = A - U

so that the point to project is ``T = alpha R + carry``, ``A+ = Pi_C(T)``, ``U+ = T - A+``
(and the same for the weight block with the soft threshold in place of ``Pi_C``).

Each step is a short sequence of whole-tensor operations written into preallocated
buffers (``out=`` and in-place forms): between checks an iteration allocates nothing of
a block's size, only ``n_out``-long vectors (the ball's column norms). Norms are
accumulated in float64 whatever the iteration's dtype. Unlike the numba kernels, each
operation is one pass over its block (about a dozen passes per iteration instead of
three): on a GPU these passes are memory-bound and small next to the two products.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._factor import Factor

__all__ = ["resolve_device", "ball_factors", "project_response", "response_step", "weight_step",
           "relative_excess", "TORCH_OPS", "TorchEngine"]

def resolve_device(device: Any) -> torch.device:
    """The device the iteration runs on.

    Parameters
    ----------
    device : None, str or torch.device
        None: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``. Otherwise any
        spelling ``torch.device`` accepts, of type ``cpu`` or ``cuda`` (``'cuda:1'``).

    Raises
    ------
    ValueError
        Naming ``device``, when it cannot be read, is of another type, or names a CUDA
        device this machine does not have.
    """
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device: got {device!r}, needs None, 'cpu', 'cuda', 'cuda:N' or a torch.device") from exc
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ValueError(f"device: got {device!r}, needs a 'cpu' or 'cuda' device (None picks cuda when present)")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device: got {device!r}, but torch.cuda.is_available() is False (no CUDA GPU here, or a "
            "CPU-only torch build); pass device='cpu', or device=None to use the GPU only when there is one"
        )
    index = torch.cuda.current_device() if resolved.index is None else resolved.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device: got {device!r}, but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def ball_factors(norms: torch.Tensor, epsilon: torch.Tensor, per_neuron: bool) -> torch.Tensor:
    """Scale factors that project the active residual onto the ball(s), without a sync.

    ``norms`` holds the per-column norms ``||(T - Y)_{Omega, m}||`` (float64). One ball
    over the layer: ``f = min(1, epsilon / ||T - Y||_Omega)`` (a 0-d tensor); per neuron:
    ``f_m = min(1, epsilon_m / ||(T - Y)_{Omega, m}||)``. A norm at or below its budget
    gives ``f = 1`` (a zero norm included), ``epsilon = 0`` with a positive norm ``f = 0``.
    """
    if not per_neuron:
        norms = torch.linalg.vector_norm(norms)
    return torch.where(norms > epsilon, epsilon / norms, torch.ones_like(norms))


def project_response(T: torch.Tensor, Y: torch.Tensor, V: torch.Tensor | None,
                     masks: tuple[torch.Tensor, torch.Tensor] | None, epsilon: torch.Tensor, per_neuron: bool,
                     out: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """Euclidean projection ``Pi_C(T)`` onto the constraint set, written into ``out``.

    On ``Omega``: ``Y + f (T - Y)`` with the factors of :func:`ball_factors`; on the
    inactive entries: ``min(T, V)``, ``V = 0`` when not given. ``masks`` holds the
    indicators of ``Omega`` and of its complement as 0/1 in ``T``'s dtype (None for a
    linear layer): multiplying by them is exact and, on the CPU, several times faster
    than boolean masking. With ``D = active * (T - Y)`` and ``Y = 0`` off ``Omega``,
    ``A = Y + f D + inactive * min(T, V)`` puts each part in its place. ``out`` and
    ``work`` are buffers of ``T``'s shape that alias neither ``T`` nor each other.
    """
    D = torch.sub(T, Y, out=out)
    if masks is not None:
        D.mul_(masks[0])  # T - Y on Omega, 0 off it
    column_sq = torch.mul(D, D, out=work).sum(dim=0, dtype=torch.float64)
    factors = ball_factors(column_sq.sqrt_(), epsilon, per_neuron).to(T.dtype)
    A = torch.addcmul(Y, D, factors, out=D)
    if masks is not None:
        bound = torch.clamp(T, max=0.0, out=work) if V is None else torch.minimum(T, V, out=work)
        A.addcmul_(masks[1], bound)
    return A


def _sumsq(x: torch.Tensor) -> torch.Tensor:
    """``||x||^2`` accumulated in float64, as a 0-d tensor on the device (no sync)."""
    return torch.linalg.vector_norm(x, dtype=torch.float64).square()


def response_step(R, carry, B, Y, V, masks, epsilon, per_neuron, alpha, DA, check, T, A, work):
    """One response-block update, in place: project, then refresh ``carry`` and ``B``.

    Torch twin of the numba response step of :mod:`solvers._kernels`:

    .. math::

        T = \\alpha R + \\text{carry}, \\quad A^+ = \\Pi_C(T), \\quad U^+ = T - A^+, \\quad
        B = A^+ - U^+, \\quad \\text{carry} = (1 - \\alpha) A^+ + U^+

    Parameters
    ----------
    R : Tensor (n_samples, n_out)
        The response ``Xa Theta`` of the weight step just made.
    carry, B : Tensor (n_samples, n_out)
        The state (see the module docstring); overwritten.
    Y, V, masks, epsilon, per_neuron
        The scaled constraint set, as in :func:`project_response`.
    alpha : float
        Over-relaxation.
    DA : Tensor (n_samples, n_out)
        On a check iteration, receives ``A+ - A`` with the old copy
        ``A = (B + carry) / (2 - alpha)`` (for the dual residual ``Xa^T DA + DQ``).
    check : bool
        Whether this is a check iteration.
    T, A, work : Tensor (n_samples, n_out)
        Scratch buffers.

    Returns
    -------
    Tensor or None
        On a check iteration, the float64 tensor
        ``[||R - A+||^2, ||A+ - A||^2, ||R||^2, ||A+||^2]``, still on the device; None
        otherwise (nothing is read back).
    """
    torch.add(carry, R, alpha=alpha, out=T)
    A = project_response(T, Y, V, masks, epsilon, per_neuron, out=A, work=work)
    U = T.sub_(A)
    stats = None
    if check:
        torch.add(B, carry, out=DA).div_(2.0 - alpha)  # the old copy
        torch.sub(A, DA, out=DA)
        stats = torch.stack([_sumsq(torch.sub(R, A, out=work)), _sumsq(DA), _sumsq(R), _sumsq(A)])
    torch.sub(A, U, out=B)
    torch.add(U, A, alpha=1.0 - alpha, out=carry)
    return stats


def weight_step(Theta, Q, carry, C, kappa, alpha, DQ, check, T, U, groups=None):
    """One weight-block update, in place: soft-threshold, then refresh ``Q``, ``carry`` and ``C``.

    Torch twin of the numba weight step of :mod:`solvers._kernels`. Row ``i`` is
    thresholded at ``kappa_i``, and the clamped part is the new scaled dual itself:

    .. math::

        T = \\alpha \\Theta + \\text{carry}, \\quad
        U^+ = \\operatorname{clamp}(T, -\\kappa, \\kappa), \\quad Q^+ = T - U^+
        = S_\\kappa(T), \\quad C = Q^+ - U^+, \\quad \\text{carry} = (1 - \\alpha) Q^+ + U^+

    Entries inside the threshold give exact zeros (``T - T``).

    Parameters
    ----------
    Theta : Tensor (n_cols, n_out)
        The weights of the weight step just made.
    Q, carry, C : Tensor (n_cols, n_out)
        The sparse copy and the state; overwritten.
    kappa : Tensor (n_cols, 1)
        Per-row threshold ``w_i / rho`` (0 for an unpenalised bias row).
    alpha : float
        Over-relaxation.
    DQ : Tensor (n_cols, n_out)
        On a check iteration, receives ``Q+ - Q``.
    check : bool
        Whether this is a check iteration.
    T, U : Tensor (n_cols, n_out)
        Scratch buffers.
    groups : (int, int), optional
        ``(group_size, n_grouped)`` for the group program: each block of ``group_size``
        rows among the first ``n_grouped`` is scaled by ``max(0, 1 - kappa / ||T_g||_F)``
        instead (``U+ = T - Q+`` all the same).

    Returns
    -------
    Tensor or None
        On a check iteration, the float64 tensor
        ``[||Theta - Q+||^2, ||Q+ - Q||^2, ||Theta||^2, ||Q+||^2, ||U+||^2]`` on the
        device; None otherwise.
    """
    torch.add(carry, Theta, alpha=alpha, out=T)
    torch.clamp(T, min=-kappa, max=kappa, out=U)
    if groups is not None:
        size, n_grouped = groups
        head = T[:n_grouped].view(-1, size, T.shape[1])
        norms = torch.linalg.vector_norm(head, dim=(1, 2))
        kappa_g = kappa[:n_grouped:size, 0]
        kept = torch.clamp(1.0 - kappa_g / torch.clamp(norms, min=torch.finfo(T.dtype).tiny), min=0.0)
        U[:n_grouped] = (head * (1.0 - kept)[:, None, None]).view(n_grouped, -1)
    Q_new = T.sub_(U)
    stats = None
    if check:
        torch.sub(Q_new, Q, out=DQ)
        stats = torch.stack([_sumsq(Theta - Q_new), _sumsq(DQ), _sumsq(Theta), _sumsq(Q_new), _sumsq(U)])
    Q.copy_(Q_new)
    torch.sub(Q, U, out=C)
    torch.add(U, Q, alpha=1.0 - alpha, out=carry)
    return stats


def relative_excess(response: torch.Tensor, Y: torch.Tensor, epsilon: torch.Tensor, *,
                    inactive: torch.Tensor | None, upper: torch.Tensor | None) -> float:
    """Torch twin of :func:`solvers.problem.relative_excess`, in float64 on the device.

    ``inactive`` is None for a linear layer. Returns a Python float (one sync).
    """
    residual = response.to(torch.float64) - Y.to(torch.float64)
    in_ball = residual if inactive is None else residual.masked_fill(inactive, 0.0)
    column = torch.linalg.vector_norm(in_ball, dim=0)
    if epsilon.ndim == 1:
        ball_excess = torch.linalg.vector_norm(torch.clamp(column - epsilon, min=0.0))
    else:
        ball_excess = torch.clamp(torch.linalg.vector_norm(column) - epsilon, min=0.0)
    ineq_excess = torch.zeros((), dtype=torch.float64, device=response.device)
    if inactive is not None:
        over = residual if upper is None else residual - upper.to(torch.float64)
        over = torch.clamp(over, min=0.0).masked_fill_(~inactive, 0.0)
        ineq_excess = torch.linalg.vector_norm(over)
    values = torch.stack([ball_excess, ineq_excess, torch.linalg.vector_norm(epsilon),
                          torch.linalg.vector_norm(Y.to(torch.float64))]).cpu().numpy()
    scale = float(values[2]) if values[2] > 0 else (float(values[3]) or 1.0)
    return float(max(values[0], values[1])) / scale


class _TorchOps:
    """The array operations of :class:`solvers._factor.Factor` for torch tensors (on their device)."""

    def float64(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(torch.float64)

    def zeros(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros((n, n), dtype=torch.float64, device=like.device)

    def add_identity(self, matrix: torch.Tensor) -> None:
        matrix.diagonal().add_(1.0)

    def cholesky_inverse(self, matrix: torch.Tensor) -> torch.Tensor:
        identity = torch.eye(matrix.shape[0], dtype=torch.float64, device=matrix.device)
        return torch.cholesky_solve(identity, torch.linalg.cholesky(matrix))

    def cast(self, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return tensor.to(like.dtype).contiguous()

    def matmul(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.mm(a, b, out=out)

    def subtract(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.sub(a, b, out=out)


TORCH_OPS = _TorchOps()


class TorchEngine:
    """The :class:`~solvers._engine.Engine` of one ADMM solve on torch tensors (twin of ``NumpyEngine``).

    Parameters
    ----------
    Xa, Y, V : ndarray
        The scaled data (host arrays of the iteration's dtype; ``V`` may be None).
    epsilon : ndarray
        The scaled budget(s), float64 (0-d or ``(n_out,)``).
    relu, per_neuron : bool
    device : torch.device
        From :func:`resolve_device`.

    On ``cpu`` the tensors share memory with the host arrays where they can (no copy).
    """

    def __init__(self, Xa: np.ndarray, Y: np.ndarray, V: np.ndarray | None, epsilon: np.ndarray,
                 relu: bool, per_neuron: bool, device: torch.device,
                 groups: tuple[int, int] | None = None) -> None:
        self.device = device
        self.groups = groups
        self.device_name = str(device)
        self.per_neuron = per_neuron
        self.Xa = self.asarray(Xa)
        self.Y = self.asarray(Y)
        self.V = None if V is None else self.asarray(V)
        self.epsilon = torch.as_tensor(np.asarray(epsilon, dtype=np.float64), device=device)
        self.inactive = ~(self.Y > 0) if relu else None  # boolean, for the violation check
        self.masks = None
        if relu:  # 0/1 indicators of Omega and its complement, for the iteration
            active = (self.Y > 0).to(self.Y.dtype)
            self.masks = (active, 1.0 - active)
        self.factor = Factor(self.Xa, TORCH_OPS)
        self.tall = self.factor.tall
        self._response_buffers = [torch.empty_like(self.Y) for _ in range(3)]  # T, A, work
        self._weight_buffers = None

    # ------------------------------------------------------------ transfers
    def asarray(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device (shares memory on ``cpu`` when the array is contiguous)."""
        return torch.as_tensor(np.ascontiguousarray(array), device=self.device)

    def host(self, tensor: torch.Tensor) -> np.ndarray:
        """A numpy copy of a device tensor (a sync on ``cuda``)."""
        return tensor.detach().cpu().numpy().copy()

    def vector(self, values: np.ndarray) -> torch.Tensor:
        """The per-row soft thresholds as an ``(n_cols, 1)`` tensor of the iteration's dtype."""
        return torch.as_tensor(np.asarray(values).reshape(-1, 1), dtype=self.Xa.dtype, device=self.device)

    def stats(self, stats: torch.Tensor) -> np.ndarray:
        """Residual norms of a check iteration on the host (the loop's one sync per check)."""
        return stats.cpu().numpy()

    def sync(self) -> None:
        """Wait for the device (for timings only)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------ algebra
    def empty_like(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(tensor)

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    def ridge(self) -> torch.Tensor:
        return self.factor.ridge(self.Y).contiguous()

    def response(self, Theta: torch.Tensor) -> torch.Tensor:
        """``Xa Theta``."""
        return self.Xa @ Theta

    def project(self, R: torch.Tensor) -> torch.Tensor:
        """``Pi_C(R)`` as a new tensor."""
        return project_response(R, self.Y, self.V, self.masks, self.epsilon, self.per_neuron,
                                out=torch.empty_like(R), work=torch.empty_like(R))

    def weight_products(self, B, C, Theta, R, work) -> None:
        self.factor.weight_step(B, C, Theta, R, work)

    def response_step(self, R, carry, B, DA, alpha: float, check: bool):
        T, A, work = self._response_buffers
        return response_step(R, carry, B, self.Y, self.V, self.masks, self.epsilon, self.per_neuron,
                             alpha, DA, check, T, A, work)

    def weight_step(self, Theta, Q, carry, C, kappa, alpha: float, DQ, check: bool):
        if self._weight_buffers is None:
            self._weight_buffers = (torch.empty_like(Theta), torch.empty_like(Theta))
        return weight_step(Theta, Q, carry, C, kappa, alpha, DQ, check, *self._weight_buffers, groups=self.groups)

    def dual_norm(self, DA: torch.Tensor, DQ: torch.Tensor) -> float:
        """``||Xa^T DA + DQ||`` (float64 accumulation; one sync)."""
        vector = self.Xa.T @ DA
        vector += DQ
        return float(torch.linalg.vector_norm(vector, dtype=torch.float64))

    def violation(self, Q: torch.Tensor) -> float:
        """Relative excess of ``Xa Q`` over the scaled constraints (float64; one sync)."""
        return relative_excess(self.Xa @ Q, self.Y, self.epsilon, inactive=self.inactive, upper=self.V)

    def set_bounds(self, epsilon: np.ndarray, V: np.ndarray | None) -> None:
        """New scaled budget(s) and inactive bound (a path's next program)."""
        self.epsilon = torch.as_tensor(np.asarray(epsilon, dtype=np.float64), device=self.device)
        self.V = None if V is None else self.asarray(V)
