"""What pruning buys at inference: latency, FLOPs and file size, next to accuracy.

For every model of the suite (``suite.py``) and every neuron fraction: CaP and structured
Net-Trim (``nettrim-group``), both removing that fraction of every producer's neurons
(channels), so that both come out physically smaller with the same widths, weights and
FLOPs; and, at the same number of remaining weights, Net-Trim's default at a target
sparsity (unstructured: exact zeros in the dense tensors). For each: the weights kept,
the multiply-adds of one input (FLOPs of the Linear and convolution layers), test
accuracy, the network output's relative error on the calibration data, the time of the
prune, the size of the saved safetensors file (``PruneResult.save``: sparse tensors as
bitmask + values, a structured model at its own widths), and the inference latency on the
CPU at batch 1, 256 and 4096 (torch, eval mode, inference mode; the median of many runs after a
warm-up, the runs of all models interleaved so that a slow spell of the machine hits
every model alike).

Subnormal weights (nonzero, below ``torch.finfo(dtype).tiny``) make CPU arithmetic many
times slower: the MNIST-1D MLP as trained has thousands of them (1,748 made it 13x slower
at batch 256 than with them set to zero, in one run). Any prune that zeroes them would
look that much faster without being smaller, so every model is timed with its subnormal
weights set to zero (which changes no output measurably), and their count is recorded in
the meta file.

At half of the neurons, structured Net-Trim is also run with ``weight_sparsity=0.5``
(structured, then half of the remaining weights of every layer, in one run), beside
Net-Trim's unstructured default at the same number of weights (methods
``nettrim-group+weights`` and ``nettrim@group+weights``).

Run:  python benchmarks/structured.py [--quick] [--models digits-mlp,...] [--fractions 0.3,0.5,0.7,0.9]
Writes benchmarks/results/structured.csv, .meta.json and .png (needs the ``bench`` extra).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see README, Performance notes

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import RESULTS, ROOT, machine_info, new_axes, save_figure, write_results

sys.path.insert(0, str(ROOT))
import nettrim  # noqa: E402
import suite  # noqa: E402
from compare_methods import cap_kept  # noqa: E402
from nettrim import examples  # noqa: E402
from nettrim.allocation import GRID  # noqa: E402
from nettrim.graph import PRUNABLE  # noqa: E402

FRACTIONS = (0.3, 0.5, 0.7, 0.9)
LARGE_BATCH = 4096
MIXED = (0.5, 0.5)  # neuron fraction, then fraction of the remaining weights
MIXED_LABEL = "nettrim-group+weights"
MIXED_UNSTRUCTURED = "nettrim@group+weights"


def multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the Linear and convolution layers for one input of ``x``'s shape,
    counted with forward hooks (a Linear: ``in * out`` per position; a convolution:
    ``C_in / groups * prod(kernel) * C_out`` per output position)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        per_output = module.weight[0].numel()  # inputs read by one output entry
        total += per_output * output.numel() // output.shape[0]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        with torch.inference_mode():
            model.eval()(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)


def latencies(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], rounds: int, repeats: int
              ) -> dict[str, float]:
    """Median seconds of one forward pass of each model on its input, the models taken in
    turn within each round, in an order shuffled every round (after a warm-up of every model)."""
    times: dict[str, list[float]] = {key: [] for key in models}
    order = list(models)
    generator = random.Random(0)
    with torch.inference_mode():
        for key, model in models.items():
            for _ in range(5):
                model(inputs[key])
        for _ in range(rounds):
            generator.shuffle(order)
            for key in order:
                model = models[key]
                started = time.perf_counter()
                for _ in range(repeats):
                    model(inputs[key])
                times[key].append((time.perf_counter() - started) / repeats)
    return {key: statistics.median(values) for key, values in times.items()}


def without_subnormals(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with its subnormal parameters set to zero, and how many there were."""
    flushed = copy.deepcopy(model)
    count = 0
    with torch.no_grad():
        for parameter in flushed.parameters():
            if parameter.is_floating_point():
                subnormal = (parameter != 0) & (parameter.abs() < torch.finfo(parameter.dtype).tiny)
                count += int(subnormal.sum())
                parameter[subnormal] = 0.0
    return flushed, count


def saved_bytes(result_or_model, directory: Path, name: str) -> int:
    path = directory / f"{name}.safetensors"
    if isinstance(result_or_model, nn.Module):
        nettrim.write.save(result_or_model, path)
    else:
        result_or_model.save(path)
    return path.stat().st_size


def unstructured(sparsity: float) -> dict:
    """Net-Trim's weight-level answer at ``sparsity`` of the weights: the default, without its
    whole-neuron alternative; above the shared target's top (98%), that fraction of every
    layer (``allocate=None``)."""
    return {"sparsity": sparsity, "method_options": {"neurons": False},
            **({"allocate": None} if sparsity > GRID[-1] else {})}


def evaluate(bench, fractions, directory: Path) -> tuple[list[dict], dict[str, nn.Module]]:
    """The rows of one model (without latency) and the models to time, by row key."""
    data, model = bench.data, bench.model
    x_one = data.x_test[:1]
    dense_flops = multiply_adds(model, x_one)
    dense_weights = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    row_base = {"model": bench.name, "dense_flops": dense_flops, "dense_weights": dense_weights}
    rows = [{**row_base, "method": "dense", "neuron_fraction": 0.0, "kept": 1.0, "flops": dense_flops,
             "accuracy": bench.dense_accuracy, "output_error": 0.0, "seconds": 0.0,
             "file_bytes": saved_bytes(model, directory, f"{bench.name}-dense")}]
    timed = {f"{bench.name}|dense|0.0": without_subnormals(model)[0]}
    for fraction in fractions:
        runs = {}
        for label, settings in (("cap", {"method": "cap", "sparsity": fraction}),
                                ("nettrim-group", {"method": "nettrim-group", "sparsity": fraction}),
                                ("nettrim", unstructured(1.0 - cap_kept(model, fraction)))):
            started = time.perf_counter()
            result = nettrim.prune(model, data.x_train, progress=False, **settings, **bench.prune_kwargs)
            runs[label] = (result, time.perf_counter() - started)
        if fraction == MIXED[0]:  # structured then unstructured, and unstructured alone at its weights
            started = time.perf_counter()
            mixed = nettrim.prune(model, data.x_train, method="nettrim-group", sparsity=fraction,
                                  method_options={"weight_sparsity": MIXED[1]}, progress=False, **bench.prune_kwargs)
            runs[MIXED_LABEL] = (mixed, time.perf_counter() - started)
            started = time.perf_counter()
            alone = nettrim.prune(model, data.x_train, progress=False, **unstructured(1.0 - mixed.kept),
                                  **bench.prune_kwargs)
            runs[MIXED_UNSTRUCTURED] = (alone, time.perf_counter() - started)
        for label, (result, seconds) in runs.items():
            rows.append({**row_base, "method": label, "neuron_fraction": fraction, "kept": result.kept,
                         "flops": multiply_adds(result.model, x_one),
                         "accuracy": examples.accuracy(result.model, data.x_test, data.y_test),
                         "output_error": result.output_error, "seconds": seconds,
                         "file_bytes": saved_bytes(result, directory, f"{bench.name}-{label}-{fraction}")})
            timed[f"{bench.name}|{label}|{fraction}"] = without_subnormals(result.model)[0]
    return rows, timed


def draw(rows: list[dict], path: str) -> None:
    fig, ax = new_axes((6.4, 4.8))
    for colour, (method, marker) in enumerate((("cap", "o"), ("nettrim-group", "s"), ("nettrim", "^"))):
        for batch_size, filled in ((256, True), (LARGE_BATCH, False)):
            points = [(r["dense_flops"] / r["flops"], r[f"speedup_{batch_size}"]) for r in rows
                      if r["method"] == method]
            ax.scatter(*zip(*points), marker=marker, edgecolors=f"C{colour}",
                       facecolors=f"C{colour}" if filled else "none", label=f"{method} (batch {batch_size})")
    top = max(r["dense_flops"] / r["flops"] for r in rows)
    ax.plot([1, top], [1, top], color="grey", linewidth=0.8, label="speed-up = FLOP reduction")
    ax.plot([1, top], [0.7, 0.7 * top], color="grey", linewidth=0.8, linestyle=":", label="0.7 x FLOP reduction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOP reduction (dense / pruned)")
    ax.set_ylabel("measured latency speed-up (CPU)")
    save_figure(fig, ax, path, fontsize=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(suite.MODELS), help="comma-separated names of the suite")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="neuron fractions removed")
    parser.add_argument("--quick", action="store_true", help="one fraction (0.5), few timing rounds")
    parser.add_argument("--out", default=str(RESULTS / "structured.csv"))
    args = parser.parse_args(argv)
    fractions = (0.5,) if args.quick else tuple(float(f) for f in args.fractions.split(","))
    rounds = 5 if args.quick else 21

    info = machine_info()
    benches = suite.build(args.models.split(","))
    warm = next(iter(benches.values()))
    nettrim.prune(warm.model, warm.data.x_train[:300], sparsity=0.5, progress=False)  # load the kernels
    rows, timed = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for bench in benches.values():
            found_rows, found_models = evaluate(bench, fractions, Path(directory))
            rows += found_rows
            timed.update(found_models)
            print(f"{bench.name}: pruned at {len(fractions)} fractions", flush=True)
    inputs_one = {key: benches[key.split("|")[0]].data.x_test[:1] for key in timed}
    inputs_batch = {key: benches[key.split("|")[0]].data.x_test[:256] for key in timed}
    one = latencies(timed, inputs_one, rounds, repeats=50)
    batch = latencies(timed, inputs_batch, rounds, repeats=5)
    large = {}
    for key in timed:  # the test inputs repeated to LARGE_BATCH rows
        x_test = benches[key.split("|")[0]].data.x_test
        large[key] = x_test.repeat(LARGE_BATCH // len(x_test) + 1, *([1] * (x_test.dim() - 1)))[:LARGE_BATCH]
    big = latencies(timed, large, rounds, repeats=1)
    for row in rows:
        key = f"{row['model']}|{row['method']}|{row['neuron_fraction']}"
        dense_key = f"{row['model']}|dense|0.0"
        row.update(latency_1_ms=1e3 * one[key], latency_256_ms=1e3 * batch[key],
                   latency_4096_ms=1e3 * big[key], speedup_1=one[dense_key] / one[key],
                   speedup_256=batch[dense_key] / batch[key], speedup_4096=big[dense_key] / big[key])

    print(f"{'model':<14} {'method':<22} {'neurons':>7} {'kept':>7} {'FLOPs':>7} {'test acc':>8} {'out err':>7} "
          f"{'file':>9} {'ms @1':>7} {'ms @256':>8} {'speed-up @256':>13} {'speed-up @4096':>14} {'time':>7}")
    for r in rows:
        print(f"{r['model']:<14} {r['method']:<22} {r['neuron_fraction']:7.0%} {r['kept']:7.1%} "
              f"{r['flops'] / r['dense_flops']:7.1%} {r['accuracy']:8.2%} {r['output_error']:7.3f} "
              f"{r['file_bytes'] / 1024:7.1f}Ki {r['latency_1_ms']:7.3f} {r['latency_256_ms']:8.3f} "
              f"{r['speedup_256']:12.2f}x {r['speedup_4096']:13.2f}x {r['seconds']:6.1f}s")
    structured = [r for r in rows if r["method"] in ("cap", "nettrim-group")]
    ratios = {}
    for batch_size in (256, LARGE_BATCH):
        ratios[batch_size] = [r[f"speedup_{batch_size}"] / (r["dense_flops"] / r["flops"]) for r in structured]
        print(f"structured models: measured speed-up over FLOP reduction at batch {batch_size}, median "
              f"{statistics.median(ratios[batch_size]):.2f} (range {min(ratios[batch_size]):.2f}-"
              f"{max(ratios[batch_size]):.2f})")
    by_point = {(r["model"], r["neuron_fraction"], r["method"]): r for r in rows}
    for r in rows:
        if r["method"] == MIXED_LABEL:
            alone = by_point[(r["model"], r["neuron_fraction"], MIXED_UNSTRUCTURED)]
            print(f"{r['model']}: {MIXED[0]:.0%} of the neurons, then {MIXED[1]:.0%} of the weights left: "
                  f"{r['kept']:.1%} kept, accuracy {r['accuracy']:.2%}, output error {r['output_error']:.3f}; "
                  f"unstructured alone at those weights {alone['accuracy']:.2%}, {alone['output_error']:.3f}")
    gaps = [by_point[(m, f, "nettrim-group")]["accuracy"] - by_point[(m, f, "cap")]["accuracy"]
            for (m, f, method) in by_point if method == "cap"]
    print(f"nettrim-group minus CaP, test accuracy: median {100 * statistics.median(gaps):+.2f} points "
          f"(range {100 * min(gaps):+.2f} to {100 * max(gaps):+.2f}) over {len(gaps)} points")
    subnormal = {name: without_subnormals(bench.model)[1] for name, bench in benches.items()}
    print(f"subnormal weights of the dense models (set to zero for the timings): {subnormal}")
    meta = {**info, "torch_threads": torch.get_num_threads(), "rounds": rounds, "fractions": list(fractions),
            "subnormal_weights_of_the_dense_models": subnormal,
            "sizes": {name: bench.description for name, bench in benches.items()},
            "structured_speedup_over_flop_reduction_median": {str(b): statistics.median(v) for b, v in ratios.items()}}
    out = write_results(args.out, rows, meta)
    draw(rows, out.replace(".csv", ".png"))
    print(f"wrote {out} (+ .meta.json, .png)")


if __name__ == "__main__":
    main()
