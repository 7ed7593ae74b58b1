"""How much the next layer reads each neuron (nettrim.consumers), and how Net-Trim's
default uses it."""
import numpy as np
import torch
from torch import nn

import nettrim
from nettrim.consumers import consumer_importance
from nettrim.examples import DigitsCNN
from nettrim.methods import LayerTask, nettrim as nettrim_method


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics and scales away from 1, so folding matters
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.2, 3)
    return model.eval()


def test_importance_is_the_consumers_squared_weights_per_neuron():
    """Linear -> Linear: a column each; conv -> conv: the kernel taps of a channel, the
    consumer's BatchNorm folded in; conv -> maxpool -> flatten -> Linear: a channel's 16
    positions. Mean 1; the last layer, read by no layer, gets none."""
    mlp = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    records = nettrim.record(mlp, torch.randn(30, 5))
    found = consumer_importance(mlp, records)
    assert set(found) == {"0", "2"}
    columns = (mlp[2].weight.detach().double() ** 2).sum(dim=0).numpy()
    np.testing.assert_allclose(found["0"], columns / columns.mean())

    cnn = _randomised(DigitsCNN(channels=(3, 4), hidden=6))
    records = nettrim.record(cnn, torch.randn(20, 1, 8, 8))
    found = consumer_importance(cnn, records)
    assert set(found) == {"conv1", "conv2", "fc1"}
    bn = cnn.bn2
    scale = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).double()
    folded = cnn.conv2.weight.detach().double() * scale[:, None, None, None]
    taps = (folded ** 2).sum(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(found["conv1"], taps / taps.mean(), rtol=1e-6)  # folded in float32
    positions = (cnn.fc1.weight.detach().double() ** 2).sum(dim=0).reshape(4, 16).sum(dim=1).numpy()
    np.testing.assert_allclose(found["conv2"], positions / positions.mean(), rtol=1e-6)
    for values in found.values():
        assert abs(values.mean() - 1.0) < 1e-12


def test_a_residual_branch_has_no_single_consumer():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.outer, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(x + self.outer(torch.relu(self.inner(x)))))

    model = Block().eval()
    found = consumer_importance(model, nettrim.record(model, torch.randn(30, 4)))
    assert set(found) == {"inner"}  # outer's output is added to x: read by more than the head


def _task(importance=None, seed=4):
    rng = np.random.default_rng(seed)
    X = np.abs(rng.standard_normal((300, 10)))
    weight, bias = rng.standard_normal((5, 10)), rng.standard_normal(5)
    Y = np.maximum(X @ weight.T + bias, 0.0)
    return LayerTask("layer", X, Y, True, weight, bias, budget=0.1 * np.linalg.norm(Y), importance=importance)


def test_a_neuron_the_next_layer_does_not_read_gives_up_its_weights_first():
    """With ``importance`` 0 for neuron 0, its errors cost nothing: the per-neuron candidate
    removes its weights first and the rows chosen keep none of them, while the layer still
    keeps exactly the target's count; without weights it keeps some."""
    plain = nettrim_method.prune_layer(_task(), sparsity=0.6)
    weighted = nettrim_method.prune_layer(_task(np.array([0.0, 1.25, 1.25, 1.25, 1.25])), sparsity=0.6)
    assert np.count_nonzero(plain.weight[0]) > 0 and np.count_nonzero(weighted.weight[0]) == 0
    assert np.count_nonzero(weighted.weight) <= round(0.4 * 50)
    assert weighted.info["consumer_weighted"] and not plain.info["consumer_weighted"]


def test_the_pipeline_weighs_the_hidden_layers_by_their_consumers(digits, digits_model):
    result = nettrim.prune(digits_model, digits.x_train[:300], sparsity=0.8, mode="cascade", progress=False)
    assert [report.info["consumer_weighted"] for report in result.layers.values()] == [True, True, False]
