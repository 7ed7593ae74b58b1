"""The benchmarks' own code: the GPU benchmark's LeNet run, end to end at a small size on the CPU,
the counting of the structured benchmark, the path benchmark on one program, the sampling
ratios of ``conv_rows.py`` (a layer left whole has none), and how
``prune_digits.py`` pairs its timings.

A session with a GPU has minutes of device time: the command it runs
(``benchmarks/torch_backend.py --lenet-only``) is checked here, down to the CSV it
writes, so that those minutes are not lost to a crash after the solve.
"""
import csv
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
torch_backend = pytest.importorskip("torch_backend")


def test_lenet_run_writes_its_rows(tmp_path, capsys):
    out = tmp_path / "torch_backend.csv"
    torch_backend.main(["--lenet-only", "--lenet-device", "cpu", "--lenet-size", "800x96x12",
                        "--out", str(out)])
    written = tmp_path / "torch_backend_lenet_cpu_800x96x12.csv"
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == 1 and rows[0]["status"] == "optimal"
    assert int(rows[0]["residuals_met_at"]) <= int(rows[0]["iterations"])
    assert float(rows[0]["violation_over_epsilon"]) <= 5e-4
    meta = json.loads(written.with_suffix("").with_suffix(".meta.json").read_text())
    assert meta["device"] == "cpu" and "published" in meta
    assert "residuals met at" in capsys.readouterr().out


def test_a_stopped_backend_run_keeps_the_sizes_it_finished(tmp_path, monkeypatch):
    """The CSV is rewritten after each size: a run stopped during the second keeps the first."""
    finished = []
    original = torch_backend.bench_problem

    def second_size_stops(name, *args, **kwargs):
        if finished:
            raise KeyboardInterrupt
        finished.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(torch_backend, "compile_cost", lambda: {})  # a fresh process: seconds, not asked here
    monkeypatch.setattr(torch_backend, "bench_problem", second_size_stops)
    out = tmp_path / "torch_backend.csv"
    with pytest.raises(KeyboardInterrupt):
        torch_backend.main(["--sizes", "120x8x6,150x9x6", "--repeats", "1", "--iteration-runs", "2",
                            "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert {row["problem"] for row in rows} == {"planted-120x8x6"} and len(rows) >= 3
    meta = json.loads((tmp_path / "torch_backend.meta.json").read_text())
    assert meta["sizes_done"] == 1 and meta["sizes"] == "120x8x6,150x9x6"


@pytest.mark.parametrize("where", [["--lenet-device", "cpu"], []])  # [] : cuda, skipped here without a GPU
def test_lenet_size_is_checked(where):
    with pytest.raises(SystemExit, match="--lenet-size"):
        torch_backend.main(["--lenet-only", *where, "--lenet-size", "800x96"])


import torch  # noqa: E402

structured = pytest.importorskip("structured")


def test_multiply_adds_are_counted_per_input():
    from torch import nn

    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 5))
    x = torch.randn(7, 2, 4, 4)
    # the convolution: 16 positions x 3 outputs x (2 x 9) inputs; the Linear 48 x 5
    assert structured.multiply_adds(model, x) == 16 * 3 * 18 + 48 * 5
    conv1d = nn.Conv1d(1, 4, 5, stride=2)
    assert structured.multiply_adds(conv1d, torch.randn(3, 1, 21)) == 9 * 4 * 5


def test_subnormal_weights_are_set_to_zero_in_a_copy():
    from torch import nn

    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight[0, 0] = 1e-40  # subnormal in float32
    flushed, count = structured.without_subnormals(layer)
    assert count == 1 and flushed.weight[0, 0] == 0 and layer.weight[0, 0] != 0
    assert torch.equal(flushed.weight[1], layer.weight[1])


def test_solver_convergence_variants_are_read_as_settings():
    from solvers import AdmmSettings

    convergence = pytest.importorskip("solver_convergence")
    variants = convergence.parse_variants("default;polish=False,polish_wait=100,alpha=1.5")
    assert variants == {"default": {}, "polish=False,polish_wait=100,alpha=1.5":
                        {"polish": False, "polish_wait": 100, "alpha": 1.5}}
    AdmmSettings(**variants["polish=False,polish_wait=100,alpha=1.5"])  # valid settings


def test_structured_then_unstructured_runs_split_the_kept_share_evenly():
    compare = pytest.importorskip("compare_methods")
    runs = compare.structured_runs(0.9)
    method, options, neurons_share = runs["nettrim-group+weights"]
    assert method == "nettrim-group" and options["unit"] == "weights"
    structured_kept = 1.0 - neurons_share
    assert structured_kept == pytest.approx(0.1 ** 0.5)
    assert structured_kept * (1.0 - options["weight_sparsity"]) == pytest.approx(0.1)
    assert runs["nettrim-group"] == ("nettrim-group", {"unit": "weights"}, 0.9)


def test_the_default_time_is_shared_among_its_parts_in_lobs_units(capsys):
    compare = pytest.importorskip("compare_methods")
    parts = {"seconds_share_out": 1.0, "seconds_supports": 0.5, "seconds_fits": 0.25, "seconds_neurons": 0.0}
    rows = [{"model": "m", "target_sparsity": 0.9, "method": "lobs", "seconds": 0.5},
            {"model": "m", "target_sparsity": 0.9, "method": "nettrim", "seconds": 2.0, **parts},
            {"model": "m", "target_sparsity": 0.8, "method": "nettrim", "seconds": 2.0, **parts}]  # no L-OBS: left out
    found = compare.time_breakdown(rows)
    assert set(found) == {"m@0.9", "median"}
    assert found["m@0.9"] == pytest.approx({"share_out": 2.0, "supports": 1.0, "fits": 0.5, "neurons": 0.0,
                                             "rest": 0.5})
    assert sum(found["m@0.9"].values()) == pytest.approx(2.0 / 0.5)  # the parts add up to the ratio
    assert "in multiples of L-OBS" in capsys.readouterr().out


def test_sparsity_path_benchmark_compares_both_ways_on_one_program(capsys):
    sparsity_path = pytest.importorskip("sparsity_path")
    from conftest import make_layer

    problem, original = make_layer(n_samples=200, n_in=40, n_out=10, density=0.9, seed=1)
    rows = sparsity_path.measure([("toy", "0", problem, original)], [0.5], repeats=2)
    (row,) = rows
    assert row["path_met"] and row["search_met"]
    assert row["path_epsilon"] > 0 and row["single_iterations"] > 0
    assert row["path_solve_equivalents"] == pytest.approx(row["path_seconds"] / row["single_seconds"])
    assert isinstance(row["path_polished"], bool) and row["path_violation"] >= 0.0
    assert row["path_rounded"] >= 0 and 0.0 < row["path_error"] < 1.0 and 0.0 < row["search_error"] < 1.0
    sparsity_path.summary(rows)
    out = capsys.readouterr().out
    assert "| 50% | 1 | 1 | 1 |" in out and "path answers polished (certified optima of their budget): " \
        f"{int(row['path_polished'] and not row['path_rounded'])} of 1" in out
    assert f"rounded onto the target: {int(row['path_rounded'] > 0)} of 1" in out
    assert "error of the path's answer / the search's" in out


def test_sparsity_path_times_the_median_of_its_repeats_and_refuses_runs_that_differ(monkeypatch):
    sparsity_path = pytest.importorskip("sparsity_path")
    from types import SimpleNamespace

    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # runs of 5, 1 and 3 seconds
    monkeypatch.setattr(sparsity_path.time, "perf_counter", lambda: next(clock))
    same = SimpleNamespace(nnz=7, iterations=50)
    answer, seconds = sparsity_path._timed(3, lambda: same)
    assert answer is same and seconds == 3.0
    answers = iter([same, SimpleNamespace(nnz=8, iterations=50)])
    monkeypatch.setattr(sparsity_path.time, "perf_counter", lambda: 0.0)
    with pytest.raises(RuntimeError, match="answered differently"):
        sparsity_path._timed(2, lambda: next(answers))


def test_prune_digits_pairs_each_round_of_the_cascade_with_its_baselines(monkeypatch):
    """The ratio to L-OBS is the median of the rounds' own ratios, not a ratio of medians:
    with a clock on which each prune takes a set time, round r's cascade over L-OBS is
    known, and the rounds run cascade, magnitude, L-OBS in turn at the cascade's nonzeros."""
    import torch

    prune_digits = pytest.importorskip("prune_digits")
    durations = iter([4.0, 1.0, 2.0,   # round 1: cascade, magnitude, L-OBS -> 2.0
                      9.0, 1.0, 3.0,   # round 2 -> 3.0
                      5.0, 1.0, 1.0])  # round 3 -> 5.0
    clock = {"now": 0.0, "pending": None}

    def perf_counter():  # a start reads the clock; the next read is the start plus a duration
        if clock["pending"] is None:
            clock["pending"] = clock["now"]
            return clock["now"]
        clock["now"] = clock["pending"] + next(durations)
        clock["pending"] = None
        return clock["now"]

    monkeypatch.setattr(prune_digits, "perf_counter", perf_counter)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    calib = torch.randn(64, 8)
    results, seconds, over_lobs = prune_digits.side_by_side(model, calib, 3, 0.1, {})
    assert set(results) == {"cascade", "magnitude", "lobs"}
    assert seconds == {"cascade": 5.0, "magnitude": 1.0, "lobs": 2.0}
    assert over_lobs == 3.0  # the medians' ratio would say 2.5
    kept = [report.kept for report in results["cascade"].layers.values()]
    assert [report.kept for report in results["lobs"].layers.values()] == pytest.approx(kept, abs=1 / 64)


def test_prune_digits_refuses_no_timed_run(capsys):
    prune_digits = pytest.importorskip("prune_digits")
    with pytest.raises(SystemExit):
        prune_digits.main(["--repeats", "0"])
    assert "--repeats: got 0, needs at least 1" in capsys.readouterr().err


def test_structured_asks_for_the_weight_level_answer_above_the_shared_targets_top():
    """Its unstructured column is Net-Trim's default without whole neurons; above 98% (where
    the shared target stops) at one fraction per layer, which the configuration accepts."""
    import nettrim

    assert structured.unstructured(0.5) == {"sparsity": 0.5, "method_options": {"neurons": False}}
    high = structured.unstructured(0.989)
    assert high["allocate"] is None
    assert nettrim.PruneConfig(**high).allocation is None
    with pytest.raises(ValueError, match="up to 0.98"):
        nettrim.PruneConfig(sparsity=0.989, method_options={"neurons": False})


def test_conv_rows_leaves_a_layer_without_error_out_of_its_summary():
    """A convolution the shared target leaves whole has error 0 on its rows: no sampling ratio
    (NaN, not a division by zero), and the medians are those of the other layers."""
    conv_rows = pytest.importorskip("conv_rows")
    assert conv_rows.sampling_ratio(0.03, 0.02) == pytest.approx(1.5)
    assert conv_rows.sampling_ratio(0.0, 0.0) != conv_rows.sampling_ratio(0.0, 0.0)  # NaN
    rows = [{"rows_setting": "auto", "sampling_ratio": ratio} for ratio in (1.0, conv_rows.sampling_ratio(0.0, 0.0),
                                                                            1.2, 1.1)]
    rows.append({"rows_setting": "2500", "sampling_ratio": 2.0})
    summary = conv_rows.summarise(rows, ["auto", "2500"])
    assert summary["auto"] == {"median": pytest.approx(1.1), "max": pytest.approx(1.2)}
    assert summary["2500"] == {"median": 2.0, "max": 2.0}


def test_repeated_prunes_give_the_first_answers_and_the_median_times():
    compare = pytest.importorskip("compare_methods")
    runs = [{"method": "nettrim", "output_error": 0.1, "seconds": t, "seconds_fits": f}
            for t, f in ((3.0, 0.3), (1.0, 0.1), (2.0, 0.5))]
    row = compare.median_of(runs)
    assert row == {"method": "nettrim", "output_error": 0.1, "seconds": 2.0, "seconds_fits": 0.3}
    assert runs[0]["seconds"] == 3.0  # the runs are left as they were


def test_a_points_prunes_are_those_asked_for_in_the_tables_order():
    compare = pytest.importorskip("compare_methods")
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    jobs = compare.point_jobs({"cap", "nettrim", "lobs", "nettrim-group"}, model, 0.9)
    assert [job[0] for job in jobs] == ["lobs", "nettrim", "nettrim-group", "cap"]
    assert jobs[1][3:6] == (0.9, None, "auto") and jobs[2][3] == 0.9
    assert 0.0 < jobs[3][3] < 1.0 and jobs[3][6].startswith("  (neurons removed")


def test_the_tally_counts_the_points_and_the_time_without_structured_trials():
    compare = pytest.importorskip("compare_methods")
    verdicts = {"a@0.7": {"output_error": True, "accuracy": True}, "a@0.9": {"output_error": True, "accuracy": False},
                "b@0.9": {"output_error": False, "accuracy": True}}
    ratios = {"a@0.7": 2.0, "a@0.9": 5.0, "b@0.9": 3.5}
    errors, times = compare.tally(verdicts, ratios, {"a@0.9"})
    assert errors == "lowest output error at 2 of 3 points; accuracy within 0.3 point of the best at 2"
    assert times == ("time 2.0-5.0x L-OBS, median 3.50, within 3x at 1 of 3; where no structured answer was tried "
                     "(2 points): within 3x at 1, median 2.75")
    assert compare.tally({}, {}, set()) == []


def test_the_accuracy_verdict_allows_three_tenths_of_a_point_and_skips_missing_accuracies():
    compare = pytest.importorskip("compare_methods")
    others = [{"method": "a", "accuracy": 647 / 1000, "accuracy_heldout": 0.71},
              {"method": "b", "accuracy": 0.5, "accuracy_heldout": 0.70}]
    ok, best = compare.accuracy_verdict({"accuracy": 644 / 1000}, others)
    assert ok and best["method"] == "a"  # exactly 0.3 point below: within
    assert not compare.accuracy_verdict({"accuracy": 643 / 1000}, others)[0]
    assert compare.accuracy_verdict({"accuracy": 0.6, "accuracy_heldout": 0.707}, others, "accuracy_heldout")[0]
    assert not compare.accuracy_verdict({"accuracy": 0.6, "accuracy_heldout": 0.7}, others, "accuracy_heldout")[0]
    assert compare.accuracy_verdict({"accuracy": 0.6, "accuracy_heldout": float("nan")}, others,
                                    "accuracy_heldout") is None  # a model without a held-out set
    assert compare.accuracy_verdict({"accuracy": 0.6}, others, "accuracy_heldout") is None  # a CSV before the column


def test_the_tally_reads_the_held_out_accuracy_where_a_model_has_one():
    compare = pytest.importorskip("compare_methods")
    verdicts = {"digits@0.9": {"output_error": True, "accuracy": False, "accuracy_heldout": None},
                "mnist1d@0.7": {"output_error": True, "accuracy": False, "accuracy_heldout": True},
                "mnist1d@0.9": {"output_error": True, "accuracy": True, "accuracy_heldout": False}}
    (line,) = compare.tally(verdicts, {}, set())
    assert line == ("lowest output error at 3 of 3 points; accuracy within 0.3 point of the best at 1 (at 1 with the "
                    "held-out accuracy at the 2 points whose model has a held-out set)")


def test_a_benchmarks_held_out_accuracy_reads_its_data_sets_held_out_set():
    pytest.importorskip("mnist1d")
    suite = pytest.importorskip("suite")
    from nettrim import examples

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 10))
    split = examples.Split(*[torch.zeros(1)] * 4)
    mnist1d = suite.Benchmark("m", model, split, {}, "", "mnist1d")
    assert suite.heldout("mnist1d") is suite.heldout("mnist1d")  # made once
    assert mnist1d.heldout_accuracy(model) == examples.accuracy(model, *examples.load_mnist1d_heldout())
    digits = suite.Benchmark("d", model, split, {}, "", "digits")
    assert suite.heldout("digits") is None and math.isnan(digits.heldout_accuracy(model))
