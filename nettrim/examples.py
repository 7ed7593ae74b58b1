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
from torch import nn

from .measure import classification_accuracy as accuracy  # the examples' accuracy: top-1

__all__ = ["Split", "load_digits_split", "load_mnist1d_split", "digits_mlp", "digits_cnn", "mnist1d_mlp", "train",
           "accuracy"]

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


def load_mnist1d_split(seed: int = 42) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package (no download):
    4,000 training / 1,000 test sequences of length 40, 10 classes.

    Needs ``pip install mnist1d`` (the ``bench`` extra).
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_mnist1d_split needs the mnist1d package: pip install mnist1d") from exc
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    return Split(torch.as_tensor(data["x"], dtype=torch.float32), torch.as_tensor(data["y"]).long(),
                 torch.as_tensor(data["x_test"], dtype=torch.float32), torch.as_tensor(data["y_test"]).long())


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


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 60, batch_size: int = 64,
          lr: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0) -> nn.Module:
    """Train a classifier with Adam and cross-entropy (in place; returns the model in eval mode).

    The default weight decay (1e-2) costs the digits MLP nothing in accuracy and leaves it
    more prunable than 1e-4 does (fewer large weights carrying redundant signal).

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
    return model.eval()
