"""Net-Trim's OBS candidates: where the Hessian per neuron should take over from L-OBS's.

Net-Trim's default at a target sparsity tries two supports per layer, each given the
ReLU-aware fit, and takes each neuron's row from the better one (``nettrim.methods.nettrim``):
greedy L-OBS (the layer's shared Hessian) and greedy OBS with a Hessian per neuron (its
active rows). The second starts from L-OBS's weights once the layer keeps ``widen`` times
the target's weights (``nettrim.methods._relu_obs``; ``widen = inf``: from the original
weights, the candidate before ``widen`` existed). For every ReLU layer of the suite, on
its original signals (the default rows), and every target, this benchmark measures for
each ``widen``: the certified error (``sqrt(sum f)``, relative to ``||Y||_F``) of the
per-neuron candidate after the fit, that of the layer's answer (each neuron's row from
either candidate, within the layer's count of weights), and the time of the candidates
(the L-OBS pass and the per-neuron stage; the fits, the same work for every ``widen``,
are not timed).

Run:  python benchmarks/obs_widen.py [--models digits-mlp,...] [--widen 1.5,2,3,inf]
Writes benchmarks/results/obs_widen.csv and .meta.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import statistics
import sys
import time

import numpy as np
from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
import suite  # noqa: E402
from nettrim.methods._relu_obs import WIDEN, obs_candidates  # noqa: E402
from nettrim.methods.nettrim import choose_rows  # noqa: E402
from nettrim.modes import layer_task  # noqa: E402
from nettrim.record import record  # noqa: E402
from solvers.refit import relu_refit  # noqa: E402

TARGETS = (0.7, 0.8, 0.9, 0.95)
DAMPING = 1e-4


def _fit(task, weight: np.ndarray, bias: np.ndarray | None):
    return relu_refit(task.X, task.Y, weight != 0, relu=task.relu, fit_bias=task.bias is not None,
                      weight=weight, bias=bias)


def _layer_answer(fits: list) -> float:
    """The certified error of the rows chosen from ``fits`` within the smallest count (the default's rule)."""
    counts = np.array([np.count_nonzero(fit.weight, axis=1) for fit in fits])
    objectives = np.array([fit.objective for fit in fits])
    chosen = choose_rows(objectives, counts, int(counts.sum(axis=1).min()))
    return float(np.sqrt(objectives[chosen, np.arange(chosen.size)].sum()))


def compare(name: str, bench: suite.Benchmark, targets: tuple[float, ...], widens: list[float]) -> list[dict]:
    records = record(bench.model, bench.data.x_train, max_positions="auto")
    rows = []
    for layer, rec in records.items():
        task = layer_task(rec, rec.input, "parallel", 0.0, 1.0, False)
        if not task.relu:
            continue
        scale = max(float(np.linalg.norm(task.Y)), 1e-300)
        for target in targets:
            shared = None
            for widen in widens:
                started = time.perf_counter()
                candidates = obs_candidates(task, target, DAMPING, widen)
                seconds = time.perf_counter() - started
                shared = _fit(task, *candidates["layer"]) if shared is None else shared  # the same for every widen
                neuron = _fit(task, *candidates["neuron"])
                rows.append({
                    "model": name, "layer": layer, "n_samples": task.X.shape[0], "n_in": task.X.shape[1],
                    "n_out": task.Y.shape[1], "target_sparsity": target, "widen": widen,
                    "certified_neuron": float(np.sqrt(neuron.objective.sum())) / scale,
                    "certified_layer_hessian": float(np.sqrt(shared.objective.sum())) / scale,
                    "certified_answer": _layer_answer([neuron, shared]) / scale,
                    "seconds_candidates": seconds})
            line = " ".join(f"{row['widen']:g}: {row['certified_answer']:.4f} ({row['seconds_candidates']:.2f} s)"
                            for row in rows[-len(widens):])
            print(f"{name:<14} {layer:<16} {target:4.2f}  L-OBS {rows[-1]['certified_layer_hessian']:.4f} | {line}",
                  flush=True)
    return rows


def summary(rows: list[dict], widens: list[float]) -> dict:
    """Per ``widen``: the median and range of the answer's certified error and of the
    candidates' time, each over that of ``widen = inf`` at the same layer and target."""
    baseline = {(row["model"], row["layer"], row["target_sparsity"]): row for row in rows if row["widen"] == np.inf}
    out = {}
    for widen in widens:
        if widen == np.inf or not baseline:
            continue
        pairs = [(row, baseline[(row["model"], row["layer"], row["target_sparsity"])])
                 for row in rows if row["widen"] == widen]
        error = [row["certified_answer"] / max(base["certified_answer"], 1e-300) for row, base in pairs]
        seconds = [row["seconds_candidates"] / base["seconds_candidates"] for row, base in pairs]
        out[f"{widen:g}"] = {"error_median": statistics.median(error), "error_min": min(error),
                             "error_max": max(error), "lower_or_equal": sum(e <= 1 + 1e-9 for e in error),
                             "points": len(error), "seconds_median": statistics.median(seconds)}
        print(f"widen {widen:g} against inf: answer's certified error x{out[f'{widen:g}']['error_median']:.3f} "
              f"median ({min(error):.3f}-{max(error):.3f}), not higher at {out[f'{widen:g}']['lower_or_equal']} of "
              f"{len(error)}; candidates' time x{out[f'{widen:g}']['seconds_median']:.2f} median")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--widen", default=f"1.5,{WIDEN:g},3,inf", help="comma-separated values (inf allowed)")
    parser.add_argument("--out", default=str(RESULTS / "obs_widen.csv"))
    args = parser.parse_args(argv)
    widens = [float(value) for value in args.widen.split(",")]
    info = machine_info()
    info["compile_seconds"] = compile_cost()
    benches = suite.build(args.models.split(","))
    warm = next(iter(benches.values()))
    warm_records = record(warm.model, warm.data.x_train[:200])
    for rec in warm_records.values():  # the numba kernels, before any timing
        task = layer_task(rec, rec.input, "parallel", 0.0, 1.0, False)
        obs_candidates(task, 0.8, DAMPING)
    rows = []
    for name, bench in benches.items():
        rows.extend(compare(name, bench, TARGETS, widens))
    meta = {**info, "targets": list(TARGETS), "widen": [f"{w:g}" for w in widens], "damping": DAMPING,
            "summary": summary(rows, widens),
            "sizes": {name: f"{suite.MODELS[name].description}; {len(bench.data.x_train)} calibration"
                      for name, bench in benches.items()}}
    print(f"wrote {write_results(args.out, rows, meta)} (+ .meta.json)")


if __name__ == "__main__":
    main()
