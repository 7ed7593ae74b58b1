"""Every pruning method on the same models, calibration data and sparsity, side by side.

Models: the benchmark suite (``suite.py``: MLPs, CNNs with Conv1d, VGG- and ResNet-style
networks on digits and MNIST-1D, trained here with seed 0; no retraining after pruning).

Methods, all in cascade mode (each layer on the pruned network's input), at the same
sparsity: the baselines at one sparsity per layer, each as published and with the
ReLU-aware refit (``+relu``: ``refit="relu"``, every layer fitted on its support towards
the original output on the pruned input): magnitude, SparseGPT, L-OBS as released
(``lobs-faithful``, published only), L-OBS; Net-Trim's l1 program with epsilon moved along a path
per layer (``nettrim-l1``, the published Net-Trim at a target sparsity); Net-Trim's
default at a target sparsity (``nettrim``: one target for the network shared out among
the layers by their error curves, OBS supports on the ReLU-aware objective and the
ReLU-aware fit), and the same at one sparsity per layer (``nettrim-per-layer``,
``allocate=None``); and CaP (whole neurons removed, the next layer refitted) at the neuron
fraction that leaves the same number of weights.

For every model, method and sparsity: the kept fraction reached, the test accuracy (and,
for the MNIST-1D models, the accuracy on 20,000 held-out sequences, ``accuracy_heldout``:
the standard test set's 1,000 give a binomial standard deviation of about 1.4 points at
70% accuracy, 20,000 about 0.3; NaN for the digits, whose 1,797 images are all in the
split), the relative error of the network output on the calibration data, each layer's certified
error (``sqrt`` of the ReLU-aware objective over ``||Y||``, a bound of its post-ReLU
error), the prune time (numba kernels warmed up first; with ``--repeats N`` the median of
N prunes, every method of a point pruned once per round, so that the machine's drift
falls on all of them alike) and where it went: the
phases of ``PruneResult.timings`` (``seconds_record``, ``seconds_share_out``,
``seconds_layers``, ``seconds_neurons``; 0 where a phase did not run) and, for Net-Trim's
OBS default, the two parts of its layers' phase (``seconds_supports``: the OBS candidates,
``seconds_fits``: their ReLU-aware fits and the choice of rows; the weight-level answer's,
also where whole neurons came out).

``nettrim-group`` and ``nettrim-group+weights`` (run when asked for) are structured
Net-Trim at the same fraction of the weights (:func:`structured_runs`).

``lobs+relu+alloc`` (run when asked for) shares the network target out the way Net-Trim's
default does (``allocate="error"``); the rows that share it report the sparsity each layer
got (``layers_kept``). ``nettrim-full-width`` (run when asked for) is Net-Trim's default
with its per-neuron OBS candidate started from the original weights (``widen=inf``)
instead of from L-OBS's at twice the target's count. ``nettrim-no-swaps`` (run when asked
for) is Net-Trim's default without the single swaps after the fit (``swaps=0``).

Run:  python benchmarks/compare_methods.py [--quick] [--models digits-mlp,...] [--methods NAME,...] [--repeats N]
(default models: the whole suite)
Writes benchmarks/results/compare_methods.csv, .meta.json and .png (needs the ``bench``
extra: mnist1d, matplotlib).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import math
import sys
import time

import numpy as np
import torch

from _common import RESULTS, ROOT, compile_cost, machine_info, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
import suite  # noqa: E402
from nettrim import examples  # noqa: E402
from nettrim.graph import PRUNABLE, links  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
PHASES = ("record", "share_out", "layers", "neurons")  # PruneResult.timings, a column each
LAYERWISE = (  # (label, method, method_options, refit, allocate); those in ON_REQUEST run only when asked for
    ("magnitude", "magnitude", {}, None, None), ("magnitude+relu", "magnitude", {}, "relu", None),
    ("sparsegpt", "sparsegpt", {}, None, None), ("sparsegpt+relu", "sparsegpt", {}, "relu", None),
    ("lobs-faithful", "lobs", {"faithful": True}, None, None),
    ("lobs", "lobs", {}, None, None), ("lobs+relu", "lobs", {}, "relu", None),
    ("nettrim-l1", "nettrim", {"support": "l1"}, None, None),
    ("nettrim-l1+relu", "nettrim", {"support": "l1"}, "relu", None),
    ("nettrim-per-layer", "nettrim", {}, None, None), ("nettrim", "nettrim", {}, None, "auto"),
    ("lobs+relu+alloc", "lobs", {}, "relu", "error"),
    ("nettrim-full-width", "nettrim", {"widen": float("inf")}, None, "auto"),
    ("nettrim-no-swaps", "nettrim", {"swaps": 0}, None, "auto"))
ON_REQUEST = ("lobs+relu+alloc", "nettrim-full-width", "nettrim-no-swaps")
VARIANTS = ("nettrim-full-width", "nettrim-no-swaps")  # the default with an option changed: not another method


def cap_kept(model: torch.nn.Module, fraction: float) -> float:
    """Fraction of the weights CaP leaves when it removes ``fraction`` of every producer's neurons."""
    link_map = links(model)
    modules = dict(model.named_modules())
    kept_out = {name: max(1, module.weight.shape[0] - int(round(fraction * module.weight.shape[0])))
                for name, module in modules.items() if name in link_map}
    feeds = {link.consumer: producer for producer, link in link_map.items()}
    total = kept = 0
    for name, module in modules.items():
        if not isinstance(module, PRUNABLE):
            continue
        n_out, n_in = module.weight.shape[0], module.weight[0].numel()
        total += n_out * n_in
        out = kept_out.get(name, n_out)
        if name in feeds:
            producer = modules[feeds[name]]
            n_in = n_in * kept_out[feeds[name]] // producer.weight.shape[0]
        kept += out * n_in
    return kept / total


def cap_fraction_for(model: torch.nn.Module, target_kept: float) -> float:
    """The neuron fraction whose CaP model keeps ``target_kept`` of the weights (bisection)."""
    low, high = 0.0, 0.99
    for _ in range(40):
        middle = (low + high) / 2
        if cap_kept(model, middle) > target_kept:
            low = middle
        else:
            high = middle
    return high


def structured_runs(sparsity: float) -> dict[str, tuple[str, dict, float]]:
    """Structured Net-Trim at the fraction ``sparsity`` of the weights (run only when asked
    for): ``nettrim-group`` removes neurons alone (``unit="weights"``); ``nettrim-group+weights``
    removes neurons down to ``sqrt(1 - sparsity)`` of the weights, then that share of every
    remaining layer's weights that leaves ``1 - sparsity`` (the kept share split evenly in log
    space), in one run."""
    structured_kept = (1.0 - sparsity) ** 0.5
    return {"nettrim-group": ("nettrim-group", {"unit": "weights"}, sparsity),
            "nettrim-group+weights": ("nettrim-group", {"unit": "weights",
                                                        "weight_sparsity": 1.0 - (1.0 - sparsity) / structured_kept},
                                      1.0 - structured_kept)}


def show(row: dict, note: str = "") -> None:
    print(f"{row['model']:<12} {row['method']:<16} {row['target_sparsity']:6.2f} {row['kept']:7.2%} "
          f"{row['accuracy']:8.2%} {_percent(row.get('accuracy_heldout', math.nan)):>8} {row['output_error']:8.4f} "
          f"{row['seconds']:8.2f}{note}", flush=True)


def _percent(value: float) -> str:
    return f"{value:.2%}" if np.isfinite(value) else ""


def run(bench: suite.Benchmark, label: str, method: str, options: dict, sparsity: float,
        refit: str | None = None, allocate: str | None = None) -> dict:
    started = time.perf_counter()
    network_method = method in ("cap", "nettrim-group")  # whole-network methods take no mode, refit or allocation
    settings = {} if network_method else {"mode": "cascade", "refit": refit, "allocate": allocate}
    result = nettrim.prune(bench.model, bench.data.x_train, method=method, sparsity=sparsity, method_options=options,
                           progress=False, **settings, **bench.prune_kwargs)
    seconds = time.perf_counter() - started
    return {"model": bench.name, "method": label, "target_sparsity": None, "sparsity_arg": sparsity,
            "kept": result.kept, "accuracy": examples.accuracy(result.model, bench.data.x_test, bench.data.y_test),
            "accuracy_heldout": bench.heldout_accuracy(result.model),
            "output_error": result.output_error, "seconds": seconds,
            **{f"seconds_{phase}": result.timings.get(phase, 0.0) for phase in PHASES},
            **{f"seconds_{part}": result.timings.get(f"seconds_{part}", 0.0) for part in ("supports", "fits")},
            "layers_kept": " ".join(f"{r.kept:.4f}" for r in result.layers.values()),
            "layers_certified": " ".join(f"{r.certified_error:.4f}" for r in result.layers.values())}


def median_of(runs: list[dict]) -> dict:
    """One row from repeated prunes of the same point and method: the first run's answers
    (the prunes are deterministic) with every time the median of the runs'."""
    row = dict(runs[0])
    for key in row:
        if key.startswith("seconds"):
            row[key] = float(np.median([run[key] for run in runs]))
    return row


def point_jobs(wanted: set[str], model: torch.nn.Module, sparsity: float) -> list[tuple]:
    """The prunes of one point: ``(label, method, options, sparsity argument, refit, allocate,
    note)`` of every method asked for, in the order of the table."""
    jobs = [(label, method, options, sparsity, refit, allocate, "")
            for label, method, options, refit, allocate in LAYERWISE if label in wanted]
    jobs += [(label, method, options, structured_sparsity, None, None, "")
             for label, (method, options, structured_sparsity) in structured_runs(sparsity).items() if label in wanted]
    if "cap" in wanted:
        fraction = cap_fraction_for(model, 1.0 - sparsity)
        jobs.append(("cap", "cap", {}, fraction, None, None, f"  (neurons removed {fraction:.3f})"))
    return jobs


def draw(rows: list[dict], dense: dict[str, float], path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dense)
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        for label in dict.fromkeys(r["method"] for r in rows if r["model"] == name):
            points = sorted((r["kept"], r["accuracy"]) for r in rows if r["model"] == name and r["method"] == label)
            style = ("-o" if label == "nettrim" else "-." if label.startswith("nettrim") else "--s" if label == "cap"
                     else "-^" if label.endswith("+relu") else ":^")
            ax.plot([100 * k for k, _ in points], [100 * a for _, a in points], style, label=label, markersize=4)
        ax.axhline(100 * dense[name], color="grey", linewidth=0.8, label="dense")
        ax.set_xscale("log")
        ax.set_xticks([5, 10, 20, 30, 50])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("weights kept (%)")
        ax.set_ylabel("test accuracy (%), no retraining")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


ACCURACY_GAP = 0.003  # the default's accuracy may be this much below the best (0.3 point) ...
_TIE = 1e-9  # ... a gap of exactly that counted as within, whatever the rounding of the fractions


def accuracy_verdict(ours: dict, others: list[dict], key: str = "accuracy") -> tuple[bool, dict] | None:
    """Whether ``ours[key]`` is at most :data:`ACCURACY_GAP` below the best of ``others``,
    and that best row; None where ``ours`` has no such accuracy (NaN or absent: a model
    without a held-out set, a CSV from before the column)."""
    value = ours.get(key, math.nan)
    if not np.isfinite(value):
        return None
    best = max(others, key=lambda r: r.get(key, -math.inf))
    return best.get(key, -math.inf) - value <= ACCURACY_GAP + _TIE, best


def summarise(rows: list[dict], models: dict, sparsities) -> tuple[dict, dict]:
    """Net-Trim's default against the best other method at every point >= 70%: output error
    (ahead or equal) and test accuracy (at most 0.3 point below the best, on the test set
    and, where the model has one, on its held-out set); its time over L-OBS's. Ends with
    the tally (:func:`tally`)."""
    print("\nNet-Trim (default, at a target sparsity) against the best other method, sparsity >= 0.7:")
    verdicts, ratios, trials = {}, {}, set()
    for name in models:
        for sparsity in (s for s in sparsities if s >= 0.7):
            point = [r for r in rows if r["model"] == name and r["target_sparsity"] == sparsity]
            ours = next((r for r in point if r["method"] == "nettrim"), None)
            others = [r for r in point if r["method"] not in ("nettrim", *VARIANTS)]  # not itself
            if ours is None or not others:
                continue
            best_error = min(others, key=lambda r: r["output_error"])
            ok_error = ours["output_error"] <= best_error["output_error"]
            ok_accuracy, best_accuracy = accuracy_verdict(ours, others)
            heldout = accuracy_verdict(ours, others, "accuracy_heldout")
            verdicts[f"{name}@{sparsity}"] = {"output_error": ok_error, "accuracy": ok_accuracy,
                                              "accuracy_heldout": None if heldout is None else heldout[0]}
            lobs = next((r for r in point if r["method"] == "lobs"), None)
            if lobs is not None:
                ratios[f"{name}@{sparsity}"] = ours["seconds"] / lobs["seconds"]
            if ours.get("seconds_neurons", 0.0) > 0:
                trials.add(f"{name}@{sparsity}")
            print(f"  {name:<12} {sparsity:.2f}: out err {ours['output_error']:.4f} vs {best_error['method']} "
                  f"{best_error['output_error']:.4f} ({'ahead or equal' if ok_error else 'BEHIND'}); accuracy "
                  f"{ours['accuracy']:.2%} vs {best_accuracy['method']} {best_accuracy['accuracy']:.2%} "
                  f"({'within 0.3 point or ahead' if ok_accuracy else 'BEHIND'}); "
                  + ("" if heldout is None else
                     f"held out {ours['accuracy_heldout']:.2%} vs {heldout[1]['method']} "
                     f"{heldout[1]['accuracy_heldout']:.2%} "
                     f"({'within 0.3 point or ahead' if heldout[0] else 'BEHIND'}); ")
                  + f"time {ratios.get(f'{name}@{sparsity}', float('nan')):.1f}x L-OBS")
    for line in tally(verdicts, ratios, trials):
        print("  " + line)
    return verdicts, ratios


def _points(count: int) -> str:
    return f"{count} point" + ("" if count == 1 else "s")


def tally(verdicts: dict[str, dict[str, bool | None]], ratios: dict[str, float], trials: set[str]) -> list[str]:
    """The points where the default errs least, where its accuracy is within 0.3 point of
    the best (on the test sets, and again with the held-out set's verdict wherever a model
    has one: ``accuracy_heldout`` not None), and where it takes at most 3x L-OBS's time:
    at all of them, and at those where it tried no structured answer (``trials``: the
    points where it did)."""
    lines = []
    if verdicts:
        errors = sum(v["output_error"] for v in verdicts.values())
        accuracies = sum(v["accuracy"] for v in verdicts.values())
        heldout = [v.get("accuracy_heldout") for v in verdicts.values()]
        read = sum(v["accuracy"] if h is None else h for v, h in zip(verdicts.values(), heldout))
        lines.append(f"lowest output error at {errors} of {len(verdicts)} points; accuracy within 0.3 point "
                     f"of the best at {accuracies}"
                     + ("" if all(h is None for h in heldout) else
                        f" (at {read} with the held-out accuracy at the {_points(sum(h is not None for h in heldout))} "
                        f"whose model has a held-out set)"))
    if ratios:
        values = np.array(list(ratios.values()))
        plain = np.array([value for point, value in ratios.items() if point not in trials])
        lines.append(f"time {values.min():.1f}-{values.max():.1f}x L-OBS, median {np.median(values):.2f}, within 3x "
                     f"at {int(np.sum(values <= 3.0))} of {values.size}; where no structured answer was tried "
                     f"({plain.size} points): within 3x at {int(np.sum(plain <= 3.0))}"
                     + (f", median {np.median(plain):.2f}" if plain.size else ""))
    return lines


def time_breakdown(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Where Net-Trim's default spends its time, at every point it ran beside L-OBS: each
    part in multiples of L-OBS's whole prune at that point (``rest``: recording, writing
    back, the output error and, per layer, capturing its input), and the medians."""
    parts = ("share_out", "supports", "fits", "neurons")
    found = {}
    for ours in (r for r in rows if r["method"] == "nettrim"):
        lobs = next((r for r in rows if r["method"] == "lobs" and r["model"] == ours["model"]
                     and r["target_sparsity"] == ours["target_sparsity"]), None)
        if lobs is None:
            continue
        shares = {part: ours[f"seconds_{part}"] / lobs["seconds"] for part in parts}
        shares["rest"] = ours["seconds"] / lobs["seconds"] - sum(shares.values())
        found[f"{ours['model']}@{ours['target_sparsity']}"] = shares
    if found:
        print("\nNet-Trim's default, its time in multiples of L-OBS's at the same point:")
        print(f"  {'point':<20} " + " ".join(f"{part:>9}" for part in (*parts, "rest")))
        for point, shares in found.items():
            print(f"  {point:<20} " + " ".join(f"{value:9.2f}" for value in shares.values()))
        medians = {part: float(np.median([shares[part] for shares in found.values()])) for part in (*parts, "rest")}
        print(f"  {'median':<20} " + " ".join(f"{value:9.2f}" for value in medians.values()))
        found["median"] = medians
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--quick", action="store_true", help="one sparsity (0.9), for a smoke test")
    parser.add_argument("--methods", default=",".join([label for label, *_ in LAYERWISE if label not in ON_REQUEST]
                                                      + ["cap"]),
                        help=f"comma-separated labels to run (default all but {', '.join(ON_REQUEST)})")
    parser.add_argument("--out", default=str(RESULTS / "compare_methods.csv"))
    parser.add_argument("--repeats", type=int, default=1,
                        help="prunes per point and method, timed in rounds; the table gives their median time")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: got {args.repeats}, needs at least 1")
    sparsities = (0.9,) if args.quick else SPARSITIES

    info = machine_info()
    info["compile_seconds"] = compile_cost()
    models = suite.build(args.models.split(","))
    warm = next(iter(models.values()))
    warm_model, warm_data = warm.model, warm.data
    nettrim.prune(warm_model, warm_data.x_train[:300], progress=False)  # load the numba kernels before timing
    nettrim.prune(warm_model, warm_data.x_train[:300], method="lobs", sparsity=0.5, progress=False)
    nettrim.prune(warm_model, warm_data.x_train[:300], sparsity=0.5, progress=False)  # the OBS kernels too
    # and what the default calls from 90% up: forward selection, whole neurons and the mix
    nettrim.prune(warm_model, warm_data.x_train[:300], sparsity=0.9, mode="cascade", allocate="auto", progress=False)
    dense = {name: bench.dense_accuracy for name, bench in models.items()}
    dense_heldout = {name: bench.heldout_accuracy(bench.model) for name, bench in models.items()
                     if suite.heldout(bench.data_set) is not None}
    print("dense test accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in dense.items()), flush=True)
    if dense_heldout:
        print("dense held-out accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in dense_heldout.items()), flush=True)
    print(f"{'model':<12} {'method':<14} {'target':>6} {'kept':>7} {'test acc':>8} {'held out':>8} {'out err':>8} "
          f"{'seconds':>8}")

    wanted = set(args.methods.split(","))
    rows = []
    for name, bench in models.items():
        for sparsity in sparsities:
            jobs = point_jobs(wanted, bench.model, sparsity)
            runs: dict[str, list[dict]] = {job[0]: [] for job in jobs}
            for _ in range(args.repeats):  # a round: every method of the point once
                for label, method, options, argument, refit, allocate, _note in jobs:
                    runs[label].append(run(bench, label, method, options, argument, refit, allocate))
            for label, *_, note in jobs:
                row = median_of(runs[label])
                row["target_sparsity"] = sparsity
                rows.append(row)
                show(row, note)

    verdicts, time_ratios = summarise(rows, models, sparsities)
    breakdown = time_breakdown(rows)
    print(f"numba first-call cost (not in the timings): {info['compile_seconds']}")

    meta = {**info, "dense_accuracy": dense, "dense_accuracy_heldout": dense_heldout,
            "sparsities": list(sparsities), "nettrim_ahead": verdicts,
            "nettrim_seconds_over_lobs": time_ratios, "nettrim_time_in_lobs": breakdown, "mode": "cascade",
            "runs_per_point": args.repeats,
            "sizes": {name: f"{suite.MODELS[name].description}; {len(bench.data.x_train)} calibration / "
                      f"{len(bench.data.x_test)} test"
                      + ("" if suite.heldout(bench.data_set) is None else
                         f" / {len(suite.heldout(bench.data_set)[1])} held out")
                      + f"; {bench.prune_kwargs}" for name, bench in models.items()}}
    out = write_results(args.out, rows, meta)
    draw(rows, dense, out.replace(".csv", ".png"))
    print(f"wrote {out} (+ .meta.json, .png)")


if __name__ == "__main__":
    main()
