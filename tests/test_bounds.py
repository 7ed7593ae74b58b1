"""nettrim.bounds: link normalisation, the parallel / cascade / general error bounds on
pruned networks, and the layer guarantee of every feasible point of a layer program."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import nettrim
from nettrim import bounds, examples
from nettrim.result import LayerReport, PruneResult
from solvers import LayerProblem, solve


def bias_free_mlp(sizes, *, seed, dtype=torch.float64):
    """A random bias-free ReLU MLP ``sizes[0] - ... - sizes[-1]`` (linear last layer)."""
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers).to(dtype)


def inputs(n, n_in, *, seed, dtype=torch.float64):
    return torch.randn(n, n_in, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------- normalisation
@pytest.mark.parametrize("norm", bounds.NORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalisation_keeps_the_function_and_sets_hidden_links_to_norm_one(norm, seed):
    model = bias_free_mlp((6, 9, 7, 8, 3), seed=seed)
    model[0].weight.data *= 5.0  # unequal scales
    model[4].weight.data *= 0.1
    x = inputs(50, 6, seed=seed)
    before = [p.detach().clone() for p in model.parameters()]
    normalised = bounds.normalise_links(model, norm)
    with torch.no_grad():
        out, out_n = model(x), normalised(x)
    assert float((out_n - out).norm() / out.norm()) < 1e-6
    norms = bounds.layer_norms(normalised, norm)
    assert norms[1:] == pytest.approx([1.0] * 3, rel=1e-12)
    original = bounds.layer_norms(model, norm)
    assert norms[0] == pytest.approx(original[0] * math.prod(original[1:]), rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # model untouched


def test_normalisation_in_float32_keeps_the_function():
    model = bias_free_mlp((6, 16, 16, 3), seed=3, dtype=torch.float32)
    x = inputs(40, 6, seed=3, dtype=torch.float32)
    with torch.no_grad():
        out, out_n = model(x), bounds.normalise_links(model)(x)
    assert float((out_n - out).norm() / out.norm()) < 1e-5


def test_norms_are_ordered():
    model = bias_free_mlp((6, 9, 3), seed=0)
    spectral, fro, l1 = (bounds.layer_norms(model, n) for n in ("spectral", "fro", "l1"))
    assert all(s <= f <= a for s, f, a in zip(spectral, fro, l1))


def test_only_bias_free_linear_relu_sequentials_are_accepted():
    with pytest.raises(ValueError, match="bias"):
        bounds.normalise_links(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(TypeError, match="Tanh"):
        bounds.layer_norms(nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2, bias=False)))
    with pytest.raises(TypeError, match="Sequential"):
        bounds.links(examples.DigitsCNN())
    with pytest.raises(ValueError, match="ReLU"):
        bounds.links(nn.Sequential(nn.ReLU(), nn.Linear(3, 2, bias=False)))
    with pytest.raises(ValueError, match="norm"):
        bounds.layer_norms(bias_free_mlp((3, 4, 2), seed=0), "nuclear")
    zero = bias_free_mlp((3, 4, 2), seed=0)
    zero[2].weight.data.zero_()
    with pytest.raises(ValueError, match="zeros"):
        bounds.normalise_links(zero)


# -------------------------------------------------------- network-level bounds
SEEDS = [0, 1, 2, 3]


def _prune(model, x, mode, epsilon):
    return nettrim.prune(model, x, mode=mode, epsilon=epsilon, progress=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_parallel_bounds_hold(seed):
    model = bias_free_mlp((8, 14, 12, 4), seed=seed)
    x = inputs(40, 8, seed=100 + seed)
    epsilon = (0.05, 0.2, 0.4, 0.1)[seed]
    result = _prune(model, x, "parallel", epsilon)
    assert all(m.bias is None for m in result.model if isinstance(m, nn.Linear))  # no bias added
    errors = bounds.layer_errors(model, result.model, x)
    b = bounds.budgets(result)
    # tightest: spectral norms of the PRUNED weights, layer by layer and recursively
    pruned_spectral = bounds.layer_norms(result.model, "spectral")
    assert all(e <= g for e, g in zip(errors, bounds.general_bound(b.epsilons, pruned_spectral)))
    assert all(e <= g for e, g in zip(errors, bounds.general_bound(result, pruned_spectral, upstream=errors)))
    # the paper's: entrywise l1 norms of the ORIGINAL weights (l1 optimality)
    original_l1, pruned_l1 = bounds.layer_norms(model, "l1"), bounds.layer_norms(result.model, "l1")
    assert all(p <= o for p, o in zip(pruned_l1, original_l1))
    assert errors[-1] <= bounds.general_bound(result, original_l1)[-1]
    # link-normalised: sum of the budgets
    normalised = bounds.normalise_links(model)
    result_n = _prune(normalised, x, "parallel", epsilon)
    assert bounds.layer_errors(normalised, result_n.model, x)[-1] <= bounds.parallel_bound(result_n)
    # pruning commutes with the rescaling: the same output error
    assert bounds.layer_errors(normalised, result_n.model, x)[-1] == pytest.approx(errors[-1], rel=1e-2)


@pytest.mark.parametrize("seed", SEEDS)
def test_cascade_bounds_hold(seed):
    model = bias_free_mlp((8, 14, 12, 10, 4), seed=seed)
    x = inputs(40, 8, seed=200 + seed)
    epsilon = (0.05, 0.2, 0.4, 0.1)[seed]
    gamma = (1.1, 1.5, 1.0, 2.0)[seed]
    result = nettrim.prune(model, x, mode="cascade", epsilon=epsilon, gamma=gamma, progress=False)
    errors = bounds.layer_errors(model, result.model, x)
    b = bounds.budgets(result)
    assert b.start == 0 and b.gammas[0] == 1.0 and all(g >= gamma for g in b.gammas[1:])
    assert errors[-1] <= b.cascade(bounds.layer_norms(model, "spectral"))
    assert errors[-1] <= bounds.cascade_bound(b.epsilons[0], b.gammas[1:], bounds.layer_norms(model, "l1")[1:])
    for norm in ("spectral", "l1"):
        normalised = bounds.normalise_links(model, norm)
        result_n = nettrim.prune(normalised, x, mode="cascade", epsilon=epsilon, gamma=gamma, progress=False)
        assert bounds.layer_errors(normalised, result_n.model, x)[-1] <= bounds.budgets(result_n).cascade()


def test_budgets_are_the_reported_ones_inflated_by_the_violations():
    model = bias_free_mlp((8, 14, 4), seed=0)
    x = inputs(40, 8, seed=0)
    result = _prune(model, x, "cascade", 0.2)
    b = bounds.budgets(result)
    for eps, gamma, violation, report in zip(b.epsilons, b.gammas, b.violations, result.layers.values()):
        kappa = bounds.inflation(violation, report.relu)
        assert eps == pytest.approx(report.epsilon * kappa)
        assert violation == report.violation
    assert b.gammas[1] == pytest.approx(1.1 * bounds.inflation(b.violations[1], False) ** 2)
    assert bounds.parallel_bound([1.0, 2.0]) == 3.0
    assert bounds.cascade_bound(2.0, [1.21, 4.0]) == pytest.approx(4.4)
    assert bounds.cascade_bound(2.0, [4.0], [3.0]) == pytest.approx(12.0)
    assert bounds.general_bound([1.0, 1.0, 1.0], [9.0, 2.0, 3.0]) == [1.0, 3.0, 10.0]
    assert bounds.inflation(0.0) == 1.0 and bounds.inflation(0.1, relu=False) == pytest.approx(1.1)
    with pytest.raises(ValueError):
        bounds.inflation(float("nan"))


def _report(name, status, violation, epsilon=1.0, relu=True):
    return LayerReport(name=name, kind="linear", shape=(2, 2), relu=relu, n_samples=4, nnz_before=4, nnz_after=2,
                       epsilon=epsilon, epsilon_rel=0.1, error_pre=0.0, error_out=0.0, iterations=1,
                       status=status, violation=violation, seconds=0.0, method="nettrim")


def _result(mode, reports, sparsity=None):
    return PruneResult(model=nn.Sequential(), layers={r.name: r for r in reports}, method="nettrim", mode=mode,
                       epsilon=0.1, gamma=1.21, sparsity=sparsity, n_calibration=4, output_error=0.0, seconds=0.0)


def test_kept_original_layers_count_as_exact_and_move_the_cascade_start():
    result = _result("cascade", [_report("0", "kept original (max_iter)", float("nan"), 5.0),
                                 _report("2", "optimal", 0.0, 2.0),
                                 _report("4", "kept original (max_iter)", float("nan"), 3.0, relu=False)])
    b = bounds.budgets(result)
    assert b.start == 1 and b.violations == [0.0, 0.0, 0.0]
    assert b.gammas == [1.0, 1.0, pytest.approx(1.21)]
    assert b.cascade() == pytest.approx(2.0 * 1.1)
    with pytest.raises(ValueError, match="violation"):
        bounds.budgets(_result("parallel", [_report("0", "max_iter", float("nan"))]))
    with pytest.raises(ValueError, match="sparsity"):
        bounds.budgets(_result("parallel", [_report("0", "optimal", 0.0)], sparsity=0.5))


# --------------------------------------------------- feasible points of a layer
def _feasible_points(problem, anchor, rng, n=20):
    """Points of the (convex) feasible set: on random rays from a feasible ``anchor``,
    at a random fraction of the ray's length inside the set (found by bisection)."""
    points = []
    scale = float(np.abs(anchor).max())
    for _ in range(n):
        direction = rng.standard_normal(anchor.shape) * scale
        lo, hi = 0.0, 1.0
        while problem.violation(anchor + hi * direction) == 0.0 and hi < 1e6:
            hi *= 2.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if problem.violation(anchor + mid * direction) == 0.0 else (lo, mid)
        point = anchor + rng.uniform(0.0, 1.0) * lo * direction
        assert problem.violation(point) == 0.0
        points.append(point)
    return points


def _output_error(problem, weight):
    return float(np.linalg.norm(np.maximum(problem.response(weight), 0.0) - problem.Y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_feasible_point_of_a_layer_program_meets_the_layer_guarantee(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, 9))
    weight = rng.standard_normal((5, 9))
    Y = np.maximum(X @ weight.T, 0.0)
    epsilon = 0.15 * float(np.linalg.norm(Y))
    problem = LayerProblem(X, Y, epsilon, fit_bias=False)
    assert problem.violation(weight) == 0.0 and _output_error(problem, weight) == 0.0
    answer = solve(problem, warm_start=(weight, None), tol=1e-3)
    assert answer.bias is None and answer.objective < problem.objective(weight)
    kappa = bounds.inflation(answer.violation)
    assert _output_error(problem, answer.weight) <= epsilon * kappa
    for anchor in (weight, 0.5 * (weight + answer.weight)):
        for point in _feasible_points(problem, anchor, rng):
            assert _output_error(problem, point) <= epsilon


def test_every_layer_of_a_parallel_prune_meets_its_guarantee_on_the_original_signals():
    model = bias_free_mlp((8, 14, 12, 4), seed=5)
    x = inputs(40, 8, seed=5)
    records = nettrim.record(model, x)
    result = _prune(model, x, "parallel", 0.2)
    for name, report in result.layers.items():
        rec = records[name]
        pruned = result.model.get_submodule(name).weight.detach().double()
        response = rec.input.double() @ pruned.T
        out = torch.clamp_min(response, 0.0) if rec.relu else response
        error = float(torch.linalg.vector_norm(out - rec.output))
        assert error <= report.epsilon * bounds.inflation(report.violation, report.relu)
