"""Residual networks written like torchvision's ResNets: what the program does with the
layers that feed an addition, end to end on the ResNet-style digits CNN."""
import pytest
import torch

import nettrim
from nettrim.examples import accuracy, digits_resnet, load_digits_split, mnist1d_cnn, train
from nettrim.graph import analyse, links

FEEDS_ADDITION = ("layer1.conv2", "layer2.conv2", "layer2.downsample.0")


@pytest.fixture(scope="module")
def resnet():
    data = load_digits_split(images=True)
    model = train(digits_resnet(), data.x_train, data.y_train, epochs=8, seed=0)
    return model, data


def test_layers_that_feed_an_addition_get_the_linear_program_with_their_batchnorm_folded(resnet):
    model, _ = resnet
    followers = analyse(model)
    for name in FEEDS_ADDITION:
        assert not followers[name].relu, name  # the addition sits between the layer and its ReLU
        assert followers[name].batchnorm is not None, name
    assert all(followers[name].relu for name in ("conv1", "layer1.conv1", "layer2.conv1"))
    # whole channels can be removed only where one layer alone reads them: inside the blocks
    assert {link.producer: link.consumer for link in links(model).values()} == {
        "layer1.conv1": "layer1.conv2", "layer2.conv1": "layer2.conv2"}


def test_the_resnet_prunes_end_to_end_and_keeps_its_accuracy(resnet):
    model, data = resnet
    dense = accuracy(model, data.x_test, data.y_test)
    result = nettrim.prune(model, data.x_train, sparsity=0.6, max_positions=4_000, progress=False)
    assert list(result.layers) == ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                                   "layer2.downsample.0", "fc"]
    assert [result.layers[name].relu for name in FEEDS_ADDITION] == [False] * 3
    assert abs(result.kept - 0.4) < 0.01 and result.left_dense == {}
    assert accuracy(result.model, data.x_test, data.y_test) >= dense - 0.03
    # the BatchNorms were folded for the program and unfolded on the way back: same running statistics
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            pruned = result.model.get_submodule(name)
            assert torch.equal(pruned.running_mean, module.running_mean)
            assert torch.equal(pruned.running_var, module.running_var)
    summary = result.summary()
    assert "4,000 of 80,448" in summary  # the rows sampled, and of how many


def test_cap_removes_channels_inside_the_blocks_only(resnet):
    model, data = resnet
    result = nettrim.prune(model, data.x_train, method="cap", sparsity=0.5, max_positions=4_000, progress=False)
    assert result.model.layer1.conv1.out_channels == 8 and result.model.layer2.conv1.out_channels == 16
    assert result.model.layer1.conv2.out_channels == 16 and result.model.layer2.downsample[0].out_channels == 32
    assert result.model(data.x_test[:4]).shape == (4, 10)


def test_cap_on_conv1d_layers_cuts_the_flattened_linear_by_positions():
    torch.manual_seed(0)
    model = mnist1d_cnn().eval()
    x = torch.randn(300, 40)
    result = nettrim.prune(model, x, method="cap", sparsity=0.4, progress=False)
    assert [result.model.get_submodule(name).out_channels for name in ("conv1", "conv2", "conv3")] == [15, 15, 15]
    assert result.model.linear.in_features == 15 * 5
    assert result.model(x[:3]).shape == (3, 10)
