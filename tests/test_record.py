"""The activation recorder: inputs, pre-activations, ReLU detection, im2col, BatchNorm folding."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nettrim
from nettrim.graph import analyse
from nettrim.layers import LayerHandle, patches
from nettrim.record import calibration_batches


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(5, 3))


def test_recorder_matches_a_hand_written_forward_pass():
    model = small_mlp()
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    records = nettrim.record(model, x)
    assert list(records) == ["0", "2", "5"]
    assert [rec.relu for rec in records.values()] == [True, True, False]
    layers = [model[0], model[2], model[5]]
    h = x
    for rec, layer in zip(records.values(), layers):
        z = h @ layer.weight.T + layer.bias
        torch.testing.assert_close(rec.input, h)
        torch.testing.assert_close(rec.pre_activation, z.double(), rtol=1e-6, atol=1e-6)
        assert rec.input.dtype == torch.float32 and rec.pre_activation.dtype == torch.float64
        h = torch.relu(z)
    torch.testing.assert_close(records["5"].output.float(), model.eval()(x), rtol=1e-5, atol=1e-6)


def test_batches_of_a_dataloader_and_numpy_inputs_give_the_same_records():
    model = small_mlp()
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(30, dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    whole, batched, from_numpy = (nettrim.record(model, calib) for calib in (x, loader, x.numpy()))
    for name in whole:
        torch.testing.assert_close(batched[name].input, whole[name].input)
        torch.testing.assert_close(from_numpy[name].input, whole[name].input)


def test_model_is_recorded_in_eval_mode_and_its_training_flag_restored():
    model = small_mlp().train()
    x = torch.randn(20, 6)
    records = nettrim.record(model, x)
    assert model.training
    # dropout would scale the last layer's input in training mode
    torch.testing.assert_close(records["5"].output.float(), model.eval()(x), rtol=1e-5, atol=1e-6)


class Functional(nn.Module):
    """Every way of writing a ReLU, and layers that are not followed by one."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 6)
        self.d = nn.Linear(6, 6)
        self.e = nn.Linear(6, 6)  # its output is also used by a skip connection
        self.f = nn.Linear(6, 6)  # followed by sigmoid
        self.g = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = self.c(x).relu()
        h = self.d(x)
        F.relu(h, inplace=True)
        h2 = self.e(h)
        x = torch.relu(h2) + h2
        x = torch.sigmoid(self.f(x))
        return self.g(x)


def test_fx_traced_model_detects_every_relu_form():
    followers = analyse(Functional())
    assert {name: f.relu for name, f in followers.items()} == {
        "a": True, "b": True, "c": True, "d": True, "e": False, "f": False, "g": False}
    records = nettrim.record(Functional(), torch.randn(10, 4))
    assert [name for name in records] == list("abcdefg")


class ConvNet(nn.Module):
    def __init__(self, bn=True, groups=1):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(6, 4, 2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.pool(self.conv2(x)))  # max-pool before the ReLU commutes with it
        x = F.avg_pool2d(self.conv3(x), 1)  # avg-pool before the ReLU does not
        return self.fc(torch.relu(torch.flatten(x, 1)))


def _bn_with_statistics(bn, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=generator))
        bn.bias.copy_(torch.randn(bn.num_features, generator=generator))


def test_conv_records_patches_relu_and_folded_batchnorm():
    torch.manual_seed(0)
    model = ConvNet()
    _bn_with_statistics(model.bn1, 3)
    x = torch.randn(5, 2, 8, 8)
    records = nettrim.record(model, x)
    assert {n: r.relu for n, r in records.items()} == {"conv1": True, "conv2": True, "conv3": False, "fc": False}
    rec = records["conv1"]
    assert rec.batchnorm == "bn1" and rec.kind == "conv2d"
    assert rec.input.shape == (5 * 64, 2 * 9) and rec.n_rows_total == 5 * 64
    model.eval()
    with torch.no_grad():
        expected = model.bn1(model.conv1(x))  # BatchNorm folded into the layer: exact
    torch.testing.assert_close(rec.pre_activation.float(), expected.permute(0, 2, 3, 1).reshape(-1, 4),
                               rtol=1e-5, atol=1e-5)
    conv2 = records["conv2"]
    assert conv2.input.shape == (5 * 16, 4 * 9)


@pytest.mark.parametrize("options", [dict(padding=1), dict(stride=2), dict(padding=2, dilation=2),
                                     dict(padding="same"), dict(padding=1, padding_mode="reflect"),
                                     dict(padding=1, padding_mode="circular", stride=(2, 1))])
def test_patches_reproduce_conv2d(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, **options)
    x = torch.randn(2, 3, 9, 7)
    rows = patches(conv, x)
    out = conv(x)
    expected = out.permute(0, 2, 3, 1).reshape(-1, 5)
    got = rows @ conv.weight.reshape(5, -1).T + conv.bias
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv1d(3, 5, 4, stride=2, padding=3, dilation=2), (2, 3, 17)),
    (nn.Conv1d(3, 5, 3, padding="same", padding_mode="reflect"), (2, 3, 11)),
    (nn.Conv1d(2, 4, 5, padding=2, padding_mode="circular"), (3, 2, 9)),
    (nn.Conv3d(2, 4, (2, 3, 2), stride=(1, 2, 1), padding=1, dilation=(1, 1, 2)), (2, 2, 5, 6, 7)),
    (nn.Conv3d(2, 3, 3, padding="same"), (1, 2, 4, 5, 3))])
def test_patches_reproduce_conv1d_and_conv3d(conv, shape):
    torch.manual_seed(0)
    conv.reset_parameters()
    x = torch.randn(*shape)
    rows = patches(conv, x)
    expected = conv(x).movedim(1, -1).reshape(-1, conv.out_channels)
    got = rows @ conv.weight.reshape(conv.out_channels, -1).T + conv.bias
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    reference = (F.conv1d if conv.weight.dim() == 3 else F.conv3d)  # the functional form agrees too
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
        torch.testing.assert_close(reference(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation),
                                   conv(x))


def test_conv1d_and_conv3d_layers_are_recorded_with_their_kind_and_batchnorm():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 6, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm1d(6)
            self.c3 = nn.Conv3d(1, 2, 2)
            self.fc = nn.Linear(6 * 8, 3)

        def forward(self, x):
            h = torch.relu(self.bn(self.c1(x)))
            v = torch.relu(self.c3(h.reshape(-1, 1, 6, 2, 4)))
            return self.fc(torch.flatten(h, 1)) + v.sum()

    torch.manual_seed(0)
    model = Net().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    records = nettrim.record(model, torch.randn(5, 2, 8))
    assert [(r.kind, r.relu, r.batchnorm) for r in records.values()] == [
        ("conv1d", True, "bn"), ("conv3d", True, None), ("linear", False, None)]
    x = torch.randn(5, 2, 8)
    expected = model.bn(model.c1(x)).movedim(1, -1).reshape(-1, 6)
    got = nettrim.record(model, x)["c1"].pre_activation.float()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer_bias", [True, False])
def test_batchnorm_folding_and_unfolding_are_exact(layer_bias):
    torch.manual_seed(0)
    linear, bn = nn.Linear(5, 4, bias=layer_bias), nn.BatchNorm1d(4)
    _bn_with_statistics(bn, 1)
    with torch.no_grad():
        bn.weight[2] = 0.0  # a channel switched off
    bn.eval()
    handle = LayerHandle("fc", linear, bn, "bn")
    x = torch.randn(7, 5, dtype=torch.float64)
    weight, bias = handle.folded()
    torch.testing.assert_close(x @ weight.T + bias, bn.double()(linear.double()(x)))
    # a pruned folded weight written back gives the same function and keeps its zeros
    new_weight = weight * (torch.rand_like(weight) > 0.5)
    new_bias = bias + 0.1
    handle.write(new_weight, new_bias)
    torch.testing.assert_close(bn(linear(x)), x @ new_weight.T + new_bias)
    assert torch.equal(linear.weight == 0, (new_weight == 0) | (torch.arange(4) == 2)[:, None])


def test_max_positions_subsamples_rows_deterministically():
    torch.manual_seed(0)
    model = ConvNet(bn=False)
    x = torch.randn(6, 2, 8, 8)
    full = nettrim.record(model, x)
    first = nettrim.record(model, [x[:4], x[4:]], max_positions=100, seed=3)
    second = nettrim.record(model, x, max_positions=100, seed=3)
    rec = first["conv1"]
    assert rec.n_samples == 100 and rec.n_rows_total == 6 * 64
    assert np.all(np.diff(rec.rows) > 0)
    torch.testing.assert_close(rec.input, full["conv1"].input[torch.from_numpy(rec.rows)])
    torch.testing.assert_close(second["conv1"].input, rec.input)
    assert first["fc"].rows is None  # 6 rows: below the cap
    other_seed = nettrim.record(model, x, max_positions=100, seed=4)
    assert not np.array_equal(other_seed["conv1"].rows, rec.rows)


def test_record_rejects_what_it_cannot_handle():
    x = torch.randn(3, 2, 8, 8)
    with pytest.raises(ValueError, match=r"layers: no module named \['nope'\]"):
        nettrim.record(ConvNet(), x, layers=["nope"])
    with pytest.raises(ValueError, match=r"not nn.Linear or nn.Conv1d/2d/3d"):
        nettrim.record(ConvNet(), x, layers=["bn1"])
    with pytest.raises(ValueError, match="calib: is empty"):
        nettrim.record(ConvNet(), [])
    with pytest.raises(ValueError, match="NaN or Inf"):
        nettrim.record(small_mlp(), torch.full((3, 6), float("nan")))
    with pytest.raises(TypeError, match="calib"):
        nettrim.record(small_mlp(), "data.pt")
    with pytest.raises(ValueError, match="max_positions"):
        nettrim.record(small_mlp(), torch.randn(3, 6), max_positions=0)


def test_a_layer_called_twice_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    with pytest.raises(ValueError, match="called 2 times"):
        nettrim.record(Shared(), torch.randn(3, 4))


def test_untraceable_model_is_recorded_as_linear_layers_with_a_warning(caplog):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.fc2(torch.relu(self.fc1(x)))

    with caplog.at_level(logging.WARNING, logger="nettrim"):
        records = nettrim.record(Branchy(), torch.randn(6, 4))
    assert [rec.relu for rec in records.values()] == [False, False]
    assert "could not trace" in caplog.text


def test_calibration_batches_take_the_inputs_of_x_y_pairs():
    x = torch.randn(4, 3)
    batches = calibration_batches([(x, torch.zeros(4)), [x, torch.ones(4)]])
    assert len(batches) == 2 and all(b is x for b in batches)


def test_capture_can_stop_the_forward_pass_once_the_layer_has_run():
    from nettrim.record import capture_inputs, layer_handles

    model = small_mlp()
    seen = []
    model[5].register_forward_hook(lambda module, inputs, output: seen.append(1))
    x = torch.randn(9, 6)
    handles = {name: handle for name, (handle, _) in layer_handles(model, ["2"]).items()}
    early = capture_inputs(model, [x[:4], x[4:]], handles, stop_early=True)
    assert not seen  # the last layer never ran
    full = capture_inputs(model, [x], handles)
    torch.testing.assert_close(early["2"][0], full["2"][0])
    assert seen


def test_calibration_of_the_wrong_shape_names_the_batch_and_its_shape():
    with pytest.raises(ValueError, match=r"calib: the model fails on batch 1 of shape \(3, 5\)"):
        nettrim.record(small_mlp(), [torch.randn(4, 6), torch.randn(3, 5)])


def test_auto_rows_sample_convolutions_by_their_width():
    from nettrim.calibration import row_cap

    assert row_cap("auto", 9, "conv2d") == 10_000
    assert row_cap("auto", 64 * 9 * 2, "conv2d") == 16 * 64 * 9 * 2  # wider layers get more rows
    assert row_cap("auto", 4096, "linear") is None  # one row per input: every row
    assert row_cap(500, 4096, "linear") == 500 and row_cap(None, 9, "conv1d") is None
    with pytest.raises(ValueError, match="needs 'auto', a positive integer or None"):
        nettrim.PruneConfig(max_positions="some")
    assert nettrim.PruneConfig().max_positions == "auto"


def test_cli_reads_auto_all_and_a_number_of_rows():
    from nettrim.cli import build_parser

    base = ["prune", "--model", "m:f", "--checkpoint", "c", "--calib", "x", "--out", "o"]
    parser = build_parser()
    assert parser.parse_args(base).max_positions == "auto"
    assert parser.parse_args(base + ["--max-positions", "all"]).max_positions is None
    assert parser.parse_args(base + ["--max-positions", "2000"]).max_positions == 2000
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--max-positions", "many"])


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(3, 5, 3, padding=1, stride=2), (4, 3, 9, 7)),
    (nn.Conv2d(3, 5, (3, 2), padding=2, dilation=2, padding_mode="reflect"), (2, 3, 8, 9)),
    (nn.Conv2d(2, 4, 3, padding="same", padding_mode="circular"), (3, 2, 6, 5)),
    (nn.Conv1d(3, 5, 4, stride=2, padding=3, dilation=2), (2, 3, 17)),
    (nn.Conv1d(2, 4, 3, padding="same"), (2, 11)),  # no batch dimension
    (nn.Conv3d(2, 4, (2, 3, 2), stride=(1, 2, 1), padding=1, dilation=(1, 1, 2)), (2, 2, 5, 6, 7))])
def test_chosen_patches_are_gathered_as_the_full_im2col_has_them(conv, shape):
    """The rows a recorder samples are gathered from the padded input directly: the same
    numbers as those rows of the full im2col, in the order asked for, and the count of
    rows is known without forming them."""
    from nettrim.layers import n_patches

    torch.manual_seed(0)
    x = torch.randn(*shape)
    full = patches(conv, x)
    assert n_patches(conv, x) == full.shape[0]
    index = torch.from_numpy(np.random.default_rng(0).choice(full.shape[0], size=min(23, full.shape[0]),
                                                             replace=False))
    torch.testing.assert_close(patches(conv, x, index), full[index], rtol=0, atol=0)
    torch.testing.assert_close(patches(conv, x, torch.arange(full.shape[0])), full, rtol=0, atol=0)
