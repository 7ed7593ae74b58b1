"""Layers the program does not cover are left dense and listed; other nonlinearities are warned about."""
import logging

import pytest
import torch
from torch import nn

import nettrim
from nettrim.graph import analyse


class Mixed(nn.Module):
    """A grouped conv, a shared Linear, a GRU and a GELU, next to ordinary ReLU layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.fc = nn.Linear(4 * 16, 8)
        self.shared = nn.Linear(8, 8)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.gelu_fc = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = torch.relu(self.grouped(h))
        h = torch.relu(self.fc(torch.flatten(h, 1)))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        h = h + self.gru(h.unsqueeze(1))[0].squeeze(1)
        h = nn.functional.gelu(self.gelu_fc(h))
        return self.out(h)


def test_uncovered_layers_are_left_dense_and_listed(caplog):
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(64, 2, 4, 4)
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model, x, epsilon=0.1, progress=False)
    assert result.left_dense == {
        "grouped": "grouped convolution (groups=2)",
        "shared": "called 2 times per forward pass (shared weights)",
        "gru": "GRU is not covered by the program (Linear and Conv1d/2d/3d are)"}
    assert list(result.layers) == ["conv", "fc", "gelu_fc", "out"]
    for name in result.left_dense:  # untouched
        for key, value in model.get_submodule(name).state_dict().items():
            assert torch.equal(result.model.get_submodule(name).state_dict()[key], value), (name, key)
    assert "layer 'grouped' is left dense: grouped convolution" in caplog.text
    assert caplog.text.count("layer 'gru' is left dense: GRU is not covered") == 1
    summary = result.summary()
    assert "left dense: gru (GRU is not covered" in summary
    rows = {row["name"]: row for row in result.to_dict()["left_dense"]}
    assert {name: row["reason"] for name, row in rows.items()} == result.left_dense
    # the dense weights count in every "kept" figure, and each such layer has a table row
    gru_size = sum(p.numel() for p in model.gru.parameters() if p.dim() >= 2)
    assert rows["gru"] == {"name": "gru", "kind": "GRU", "shape": "24x8+24x8", "nnz": gru_size, "size": gru_size,
                           "kept": 1.0, "reason": result.left_dense["gru"]}
    dense_nnz = sum(row["nnz"] for row in rows.values())
    dense_size = sum(row["size"] for row in rows.values())
    assert result.kept == pytest.approx((result.nnz_after + dense_nnz) / (result.size + dense_size))
    assert result.kept > result.kept_pruned
    table_rows = [line for line in summary.splitlines() if line.startswith("gru ")]
    assert len(table_rows) == 1 and "GRU" in table_rows[0] and "100.0%" in table_rows[0] \
        and "left dense" in table_rows[0]
    assert f"({result.kept:.1%}); the pruned layers" in summary


def test_a_layer_named_but_not_covered_is_listed_not_pruned():
    model = Mixed().eval()
    result = nettrim.prune(model, torch.randn(16, 2, 4, 4), layers=["grouped", "fc"], progress=False)
    assert list(result.layers) == ["fc"] and list(result.left_dense) == ["grouped"]
    reasons = {row["name"]: row["reason"] for row in result.unpruned()}
    assert reasons["grouped"] == "grouped convolution (groups=2)"
    assert reasons["out"] == "not among the layers pruned"
    with pytest.raises(ValueError, match=r"none of its layers can be pruned \(grouped: grouped convolution"):
        nettrim.prune(model, torch.randn(16, 2, 4, 4), layers=["grouped"], progress=False)


@pytest.mark.parametrize("activation, name", [(nn.Tanh(), "Tanh"), (nn.GELU(), "GELU"), (torch.sigmoid, "sigmoid"),
                                              (nn.LeakyReLU(0.1), "LeakyReLU")])
def test_other_nonlinearities_give_the_linear_program_with_a_warning(caplog, activation, name):
    if isinstance(activation, nn.Module):
        model = nn.Sequential(nn.Linear(5, 6), nn.Dropout(0.1), activation, nn.Linear(6, 2))
    else:
        model = _Functional(activation)
    follower = analyse(model)["0"]
    assert not follower.relu and follower.activation == name
    with caplog.at_level(logging.WARNING, logger="nettrim"):
        result = nettrim.prune(model.eval(), torch.randn(40, 5), epsilon=0.1, progress=False)
    assert f"layer '0' is followed by {name}, not a ReLU" in caplog.text
    assert not result.layers["0"].relu and result.layers["0"].info["activation"] == name
    assert result.layers["0"].error_pre <= 0.1 * 1.01


def test_structured_methods_warn_of_another_nonlinearity_once(caplog):
    """nettrim-group finds the layers of the network it cuts again for its refits: the
    user is warned of the GELU once, as by every other method."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3)).eval()
    for method in ("nettrim-group", "cap", "lobs"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nettrim"):
            nettrim.prune(model, torch.randn(80, 6), method=method, sparsity=0.5, progress=False)
        assert caplog.text.count("layer '2' is followed by GELU, not a ReLU") == 1, method


class _Functional(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.add_module("0", nn.Linear(5, 6))
        self.add_module("1", nn.Linear(6, 2))

    def forward(self, x):
        return getattr(self, "1")(self.fn(getattr(self, "0")(x)))


def test_non_finite_weights_or_activations_name_the_layer():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"layer '2': its weights hold NaN or Inf"):
        nettrim.prune(model, torch.ones(8, 4), progress=False)
    with torch.no_grad():
        model[2].weight[0, 0] = 1.0
        model[0].weight.fill_(1e38)  # overflows in float32
    with pytest.raises(ValueError, match=r"layer '2': its input holds NaN or Inf"):
        nettrim.prune(model, torch.ones(8, 4), progress=False)


def test_a_report_of_the_earlier_format_still_prints():
    """Reports saved before the network-wide kept figures: no ``size``, left-dense layers as reasons."""
    from nettrim.result import summary_from_dict

    model = Mixed().eval()
    result = nettrim.prune(model, torch.randn(16, 2, 4, 4), epsilon=0.1, progress=False)
    report = result.to_dict()
    earlier = {key: value for key, value in report.items() if key not in ("size", "kept_pruned")}
    earlier["left_dense"] = dict(result.left_dense)
    text = summary_from_dict(earlier)
    assert f"weights kept: {result.nnz_after:,} of {result.nnz_before:,} nonzero" in text
    assert "left dense: gru (GRU is not covered" in text
