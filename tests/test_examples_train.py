"""examples.train: BatchNorm's running statistics re-estimated with the final weights."""
import torch
from torch import nn

from nettrim.examples import _recalibrate_batchnorm, train


def test_running_statistics_are_the_average_of_the_final_networks_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, momentum=0.3), nn.Dropout(0.5), nn.ReLU(),
                          nn.Linear(4, 3))
    x = torch.randn(100, 5) * 3 + 1
    _recalibrate_batchnorm(model, x, batch_size=25)
    with torch.no_grad():
        z = model[0](x).reshape(4, 25, 4)  # the four batches' pre-normalisation activations
    torch.testing.assert_close(model[1].running_mean, z.mean(dim=1).mean(dim=0))
    torch.testing.assert_close(model[1].running_var, z.var(dim=1, unbiased=True).mean(dim=0))
    assert model[1].momentum == 0.3 and not model.training and not model[2].training


def test_dropout_is_off_while_the_statistics_are_re_estimated():
    """A dropout before the BatchNorm would scale and zero its inputs if it were on: the
    running statistics are those of the network as it runs in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    x = torch.randn(60, 5)
    _recalibrate_batchnorm(model, x, batch_size=60)
    with torch.no_grad():
        z = model[0](x)
    torch.testing.assert_close(model[2].running_mean, z.mean(dim=0))
    torch.testing.assert_close(model[2].running_var, z.var(dim=0, unbiased=True))


def test_train_returns_a_model_whose_eval_mode_matches_its_batch_statistics():
    """After training, eval mode (running statistics) computes what train mode (the batch's
    statistics) computes on the training data, up to the batches' spread."""
    torch.manual_seed(1)
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0).long()
    model = train(nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)), x, y,
                  epochs=5, batch_size=256)
    assert not model.training
    with torch.no_grad():
        evaluated = model(x)
        model[1].train()
        batch = model(x)
    torch.testing.assert_close(evaluated, batch, rtol=1e-2, atol=1e-2)
