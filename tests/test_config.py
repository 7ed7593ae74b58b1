"""PruneConfig: one object that holds a prune's settings, checked once, the source of the
resume fingerprint; prune(model, calib, config, **overrides) is the same run as keywords."""
import dataclasses

import numpy as np
import pytest
import torch

import nettrim
from nettrim import PruneConfig
from nettrim.methods.lobs import LobsOptions
from nettrim.methods.nettrim import NetTrimOptions


def test_defaults_and_normalised_fields():
    config = PruneConfig()
    assert (config.method, config.mode, config.epsilon, config.gamma, config.sparsity) == (
        "nettrim", "cascade", 0.05, 1.1, None)
    assert config.method_options == NetTrimOptions()
    assert config.solver_options == {}
    assert config.layer_solver.options == {"tol": 1e-3}  # the pipeline's default on top of the solver's
    assert config.layer_solver.tol == 1e-3 and config.layer_solver.max_iter == 10_000
    given = {"0": 0.5}
    config = PruneConfig(method="magnitude", sparsity=given, layers=["0"])
    given["0"] = 0.9  # the config keeps its own copy
    assert config.sparsity == {"0": 0.5} and config.layers == ("0",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epsilon = 0.2


def test_method_options_become_the_methods_options_object():
    config = PruneConfig(method="lobs", sparsity=0.5, method_options={"damping": 1e-3})
    assert config.method_options == LobsOptions(damping=1e-3)
    assert PruneConfig(method="lobs", sparsity=0.5, method_options=LobsOptions(faithful=True)).method_options.faithful
    with pytest.raises(ValueError, match=r"\['refit'\] are not options of method 'lobs'; it takes \['faithful', "
                                         r"'damping'\]"):
        PruneConfig(method="lobs", sparsity=0.5, method_options={"refit": True})
    with pytest.raises(ValueError, match="damping: got -1"):
        PruneConfig(method="lobs", sparsity=0.5, method_options={"damping": -1})
    with pytest.raises(ValueError, match="refit: got 'yes'"):
        PruneConfig(method_options={"refit": "yes"})
    with pytest.raises(ValueError, match=r"widen: got 0.5, needs a number >= 1 \(inf: the Hessian per neuron"):
        PruneConfig(sparsity=0.5, method_options={"widen": 0.5})
    assert PruneConfig(sparsity=0.5, method_options={"widen": float("inf")}).method_options.widen == float("inf")
    with pytest.raises(ValueError, match="neurons: got 1, needs True or False"):
        PruneConfig(sparsity=0.95, method_options={"neurons": 1})
    with pytest.raises(TypeError, match="method_options: got list"):
        PruneConfig(method_options=[1])
    # another method drops the options of the first: they are not its options
    assert PruneConfig(method="lobs", sparsity=0.5, method_options={"faithful": True}).replace(
        method="sparsegpt").method_options == nettrim.registry.get_method("sparsegpt").options()


def test_overrides_are_checked_like_the_fields():
    config = PruneConfig(epsilon=0.1)
    assert config.replace(mode="parallel") == PruneConfig(epsilon=0.1, mode="parallel")
    assert config.replace() is config
    with pytest.raises(TypeError, match="unexpected keyword argument 'epsilom'"):
        config.replace(epsilom=0.2)
    with pytest.raises(ValueError, match="gamma: got 0.5"):
        config.replace(gamma=0.5)
    with pytest.raises(ValueError, match="split='neuron'.*method='nettrim' and no sparsity="):
        PruneConfig(method="lobs", sparsity=0.5, split="neuron")
    with pytest.raises(ValueError, match="memory_budget: got"):
        PruneConfig(store="disk", memory_budget="lots")


def test_run_settings_hold_what_decides_the_weights_only(tmp_path):
    config = PruneConfig(epsilon=0.1, solver_options={"max_iter": 500}, method_options={"refit": True})
    settings = config.run_settings(["0", "2"])
    assert settings["epsilon"] == 0.1 and settings["layers"] == ["0", "2"]
    assert settings["solver_options"] == {"tol": 1e-3, "max_iter": 500}
    assert settings["method_options"] == {"refit": True, "support": "obs", "damping": 1e-4, "widen": 2.0, "neurons": True,
                                          "swaps": 10}
    assert not {"executor", "progress", "store", "memory_budget", "store_dir", "work_dir", "resume"} & set(settings)
    # execution and storage do not change the weights, so they do not change the fingerprint
    elsewhere = config.replace(executor="processes", progress=False, store="disk", work_dir=tmp_path)
    assert elsewhere.run_settings(["0", "2"]) == settings
    assert config.replace(seed=1).run_settings(["0", "2"]) != settings


def test_config_object_and_keywords_give_the_same_prune(digits, digits_model):
    calib = digits.x_train[:200]
    by_keywords = nettrim.prune(digits_model, calib, method="lobs", sparsity=0.6, mode="parallel", progress=False)
    config = PruneConfig(method="lobs", sparsity=0.6, progress=False)
    by_config = nettrim.prune(digits_model, calib, config, mode="parallel")
    for (name, a), (_, b) in zip(by_keywords.model.state_dict().items(), by_config.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="config: got dict, needs a nettrim.PruneConfig"):
        nettrim.prune(digits_model, calib, {"method": "lobs"})


def test_cli_builds_the_config_of_its_command_line(tmp_path):
    from nettrim.cli import build_config, build_parser

    args = build_parser().parse_args([
        "prune", "--model", "m:f", "--checkpoint", "c.pt", "--calib", "x.pt", "--out", str(tmp_path / "o.safetensors"),
        "--method", "lobs", "--sparsity", "0.7", "--method-options", '{"damping": 0.001}', "--tol", "1e-4",
        "--mode", "parallel", "--refit", "relu", "-q"])
    config = build_config(args, tmp_path / "o.safetensors.work")
    assert config == PruneConfig(method="lobs", sparsity=0.7, method_options=LobsOptions(damping=0.001),
                                 solver_options={"tol": 1e-4}, mode="parallel", progress=False, refit="relu",
                                 work_dir=tmp_path / "o.safetensors.work")
    args.method, args.sparsity, args.method_options, args.refit = "cap", 0.5, None, None
    assert build_config(args, tmp_path / "w").work_dir is None  # a network method keeps no work directory


def test_gamma_of_the_config_scales_the_cascade_budget(digits, digits_model):
    """The second layer sees the same pruned input under any gamma (the first layer's
    budget is epsilon ||Y||), so its budget sqrt(gamma) e_2 scales as sqrt(gamma)."""
    calib = digits.x_train[:300]
    budgets = {gamma: [report.epsilon for report in nettrim.prune(
        digits_model, calib, PruneConfig(gamma=gamma, progress=False)).layers.values()] for gamma in (1.1, 1.5)}
    assert budgets[1.1][0] == budgets[1.5][0]
    assert budgets[1.5][1] / budgets[1.1][1] == pytest.approx(np.sqrt(1.5 / 1.1), rel=1e-9)
