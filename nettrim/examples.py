"""Bundled examples: scikit-learn's digits, the small networks trained on them, and training.

Nothing is downloaded: the 1,797 8x8 digits ship inside scikit-learn. The split is the one
used throughout (demo, benchmarks, tests, notebooks): 1,257 training images (also the
calibration set) and 540 test images, stratified.

The model factories take no required argument, so the CLI can build them by name:
``nettrim prune --model nettrim.examples:digits_mlp ...``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .measure import classification_accuracy as accuracy  # the examples' accuracy: top-1

__all__ = ["Split", "load_digits_split", "load_mnist1d_split", "load_mnist1d_heldout", "digits_mlp", "digits_cnn",
           "digits_vgg", "digits_resnet", "mnist1d_mlp", "mnist1d_cnn", "train", "accuracy"]

logger = logging.getLogger(__name__)


@dataclass
class Split:
    """A classification data set split into training (= calibration) and test sets.

    ``x_*`` are float32 inputs, ``y_*`` int64 labels.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(*, images: bool = False, seed: int = 0) -> Split:
    """scikit-learn's digits, 1,257 training / 540 test images (stratified, seeded).

    Pixels scaled to [0, 1]; inputs of shape ``(n, 64)``, or ``(n, 1, 8, 8)`` with ``images``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)
    pixels = pixels[:, None] if images else pixels.reshape(len(pixels), -1)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, digits.target, test_size=540, random_state=seed, stratify=digits.target)
    return Split(torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
                      torch.from_numpy(x_test), torch.from_numpy(y_test).long())


MNIST1D_SEED = 42  # the standard split's seed (the mnist1d package's default)
HELDOUT_SEED = 1  # the held-out sequences' seed (load_mnist1d_heldout): any other than MNIST1D_SEED


def _mnist1d_sequences(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D sequences as the ``mnist1d`` package draws them before it standardises them:
    ``n_samples // 10`` of every class, each its class's template transformed at random
    (the package's own ``transform``, with its default arguments and the package's seeding
    of Python's and numpy's global generators by ``seed``), in a random order. The global
    generators' states are restored afterwards."""
    try:
        from mnist1d.data import get_dataset_args, get_templates
        from mnist1d.transform import transform
        from mnist1d.utils import set_seed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("MNIST-1D needs the mnist1d package: pip install mnist1d") from exc
    import random

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed: got {seed!r}, needs an integer in [0, 2**32) "
                         f"(the mnist1d package seeds numpy with it)")
    args = get_dataset_args()
    templates = get_templates()
    saved = random.getstate(), np.random.get_state()
    try:
        set_seed(seed)
        per_class = n_samples // len(templates["y"])
        sequences, labels = [], []
        for template, label in zip(templates["x"], templates["y"]):
            for _ in range(per_class):
                sequences.append(transform(template, templates["t"], args)[0])
                labels.append(label)
        order = np.random.permutation(len(labels))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return np.stack(sequences)[order], np.asarray(labels)[order]


def load_mnist1d_split(seed: int = MNIST1D_SEED) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package (no download):
    4,000 training / 1,000 test sequences of length 40, 10 classes, standardised by the
    mean and standard deviation of all 5,000 (as the package does); with the default
    ``seed``, the package's standard data set.

    Needs ``pip install mnist1d`` (the ``bench`` extra).
    """
    sequences, labels = _mnist1d_sequences(5000, seed)
    x = ((sequences - sequences.mean()) / sequences.std()).astype(np.float32)
    y = torch.as_tensor(labels).long()
    return Split(torch.from_numpy(x[:4000]), y[:4000], torch.from_numpy(x[4000:]), y[4000:])


def load_mnist1d_heldout(n_samples: int = 20_000, seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """More MNIST-1D sequences from the same generator, for a test accuracy with less noise
    than the standard split's 1,000 sequences give (a binomial standard deviation of 1.4
    points at 70% accuracy; 0.3 point on 20,000).

    ``n_samples // 10`` sequences of every class drawn with ``seed`` (not the standard
    split's :data:`MNIST1D_SEED`: drawn independently of its sequences), scaled by the
    standard split's mean and standard deviation, so that a model trained on
    :func:`load_mnist1d_split` reads them as it reads its own test set. Returns ``(x, y)``:
    float32 ``(n, 40)`` and int64 ``(n,)``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 10:
        raise ValueError(f"n_samples: got {n_samples!r}, needs an integer >= 10 (a tenth of it per class)")
    if seed == MNIST1D_SEED:
        raise ValueError(f"seed: got {seed}, the standard split's; another seed gives sequences it does not hold")
    standard, _ = _mnist1d_sequences(5000, MNIST1D_SEED)
    sequences, labels = _mnist1d_sequences(int(n_samples), seed)
    x = ((sequences - standard.mean()) / standard.std()).astype(np.float32)
    return torch.from_numpy(x), torch.as_tensor(labels).long()


def mnist1d_mlp(hidden: tuple[int, ...] = (256, 256)) -> nn.Sequential:
    """MLP ``40 - hidden... - 10`` with ReLUs for MNIST-1D."""
    return _mlp(40, hidden, 10)


def _mlp(n_in: int, hidden: tuple[int, ...], n_classes: int) -> nn.Sequential:
    sizes = (n_in, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], n_classes))
    return nn.Sequential(*layers)


def digits_mlp(hidden: tuple[int, ...] = (256, 256)) -> nn.Sequential:
    """MLP ``64 - hidden... - 10`` with ReLUs (default ``64-256-256-10``)."""
    return _mlp(64, hidden, 10)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (with BatchNorm and ReLU) and two Linear layers, for 8x8 digits.

    ``conv1 (1->16) - bn1 - relu - conv2 (16->32) - bn2 - relu - maxpool 2 - flatten -
    fc1 (512->64) - relu - fc2 (64->10)``.
    """

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 16, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def digits_cnn() -> DigitsCNN:
    """The small digits CNN (:class:`DigitsCNN`), for ``(n, 1, 8, 8)`` inputs."""
    return DigitsCNN()


class MNIST1DCNN(nn.Module):
    """Three ``Conv1d`` (25 channels, stride 2) with ReLUs and a ``Linear``, for MNIST-1D.

    The convolutional baseline of the MNIST-1D paper: ``conv1 (1->25, k5, p1) - relu -
    conv2 (25->25, k3, p1) - relu - conv3 (25->25, k3, p1) - relu - flatten (25x5) -
    linear (125->10)``, on ``(n, 40)`` or ``(n, 1, 40)`` inputs.
    """

    def __init__(self, channels: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, -1)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.linear(torch.flatten(x, 1))


def mnist1d_cnn() -> MNIST1DCNN:
    """The MNIST-1D CNN (:class:`MNIST1DCNN`): ``Conv1d`` layers, for ``(n, 40)`` inputs."""
    return MNIST1DCNN()


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def digits_vgg(widths: tuple[int, int] = (32, 64), hidden: int = 128) -> nn.Sequential:
    """A VGG-style CNN for ``(n, 1, 8, 8)`` digits: two stages of two 3x3 convolutions
    (BatchNorm, ReLU) each closed by 2x2 max pooling, then ``Linear - ReLU - Dropout(0.3)
    - Linear``."""
    a, b = widths
    return nn.Sequential(*_conv_bn_relu(1, a), *_conv_bn_relu(a, a), nn.MaxPool2d(2),
                         *_conv_bn_relu(a, b), *_conv_bn_relu(b, b), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(b * 4, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 10))


class BasicBlock(nn.Module):
    """The residual block of ResNet-18: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``,
    the shortcut a 1x1 convolution with BatchNorm when the width or the stride changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class DigitsResNet(nn.Module):
    """A ResNet-style CNN for ``(n, 1, 8, 8)`` digits, written like torchvision's resnet18:
    ``conv1 - bn1 - relu - layer1 (block 16->16) - layer2 (block 16->32, stride 2, 1x1
    downsample) - global average pool - fc (32->10)``."""

    def __init__(self, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        a, b = widths
        self.conv1 = nn.Conv2d(1, a, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(a)
        self.layer1 = BasicBlock(a, a)
        self.layer2 = BasicBlock(a, b, stride=2)
        self.fc = nn.Linear(b, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits_resnet() -> DigitsResNet:
    """The ResNet-style digits CNN (:class:`DigitsResNet`), for ``(n, 1, 8, 8)`` inputs."""
    return DigitsResNet()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 60, batch_size: int = 64,
          lr: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0) -> nn.Module:
    """Train a classifier with Adam and cross-entropy (in place; returns the model in eval mode).

    The default weight decay (1e-2) costs the digits MLP nothing in accuracy and leaves it
    more prunable than 1e-4 does (fewer large weights carrying redundant signal).

    BatchNorm's running statistics are re-estimated at the end, over the training data
    with the final weights (:func:`_recalibrate_batchnorm`): the moving averages kept
    while training lag the weights, and at this learning rate a last few large steps can
    leave them far from what the final network computes (the ResNet-style digits CNN, on
    one processor: 83.5% test accuracy in eval mode, 99.4% in train mode; 99.4% after the
    re-estimate).

    Deterministic for a given seed: the initial weights and the batch order are drawn from
    ``torch.manual_seed(seed)``.
    """
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return _recalibrate_batchnorm(model, x, batch_size)


def _recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> nn.Module:
    """Set every BatchNorm's running mean and variance to the average of its batch statistics
    over ``x`` in batches of ``batch_size`` (cumulative averages, ``momentum=None``), with the
    weights as they are and every other module in eval mode (no dropout); the model is
    returned in eval mode, its momenta as they were."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [module.momentum for module in norms]
    model.eval()  # dropout off: only the BatchNorms use their batch statistics
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
        module.train()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    return model.eval()
