"""The benchmark suite: the models users bring, each trained here from bundled or generated data.

Every benchmark that compares methods on models builds them through :func:`build`, so
all of them see the same networks, the same calibration data and the same prune settings.

=============  ===============================================================  ==========
name           network                                                          data
=============  ===============================================================  ==========
digits-mlp     MLP 64-256-256-10                                                digits
mnist1d-mlp    MLP 40-256-256-10                                                MNIST-1D
digits-cnn     2 conv 3x3 (BatchNorm), max pool, 2 linear                       digits
mnist1d-cnn    3 Conv1d (25 channels, stride 2), 1 linear (the MNIST-1D paper)  MNIST-1D
digits-vgg     VGG-style: 2 x (2 conv 3x3 + BatchNorm, max pool), 2 linear,     digits
               dropout
digits-resnet  ResNet-style: stem, 2 basic blocks (BatchNorm, residual          digits
               additions, a 1x1 downsample), global average pool, linear
=============  ===============================================================  ==========

digits: scikit-learn's 8x8 digits, 1,257 calibration (= training) / 540 test images.
MNIST-1D: generated locally by the ``mnist1d`` package, 4,000 / 1,000 sequences of 40, and
20,000 more held out (:func:`heldout`: another seed, the same scaling) for a test accuracy
with less noise (``Benchmark.heldout_accuracy``).
Convolutions are recorded at the default rows (``max_positions='auto'``: 10,000 rows, sampled
with a fixed seed, for every convolution of the suite); the report says how many rows each
layer had.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import nettrim  # noqa: F401  (the benchmarks put the repository on sys.path first)
from nettrim import examples

__all__ = ["MODELS", "Benchmark", "build", "heldout"]

@dataclass(frozen=True)
class _Spec:
    factory: Callable[[], nn.Module]
    data: str  # "digits", "digits-images" or "mnist1d"
    description: str
    train: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, _Spec] = {
    "digits-mlp": _Spec(examples.digits_mlp, "digits", "64-256-256-10"),
    "mnist1d-mlp": _Spec(examples.mnist1d_mlp, "mnist1d", "40-256-256-10",
                         train={"epochs": 100, "weight_decay": 1e-3}),
    "digits-cnn": _Spec(examples.digits_cnn, "digits-images",
                        "conv 1-16-32 3x3 + BatchNorm, max pool, fc 512-64-10"),
    "mnist1d-cnn": _Spec(examples.mnist1d_cnn, "mnist1d", "Conv1d 1-25-25-25 (k 5,3,3, stride 2), fc 125-10",
                         train={"epochs": 60, "weight_decay": 1e-3}),
    "digits-vgg": _Spec(examples.digits_vgg, "digits-images",
                        "conv 1-32-32 | pool | 32-64-64 | pool (3x3, BatchNorm), fc 256-128-10, dropout 0.3"),
    "digits-resnet": _Spec(examples.digits_resnet, "digits-images",
                           "stem 1-16, blocks 16-16 and 16-32 (stride 2, 1x1 downsample), BatchNorm, avg pool, fc 32-10"),
}


@dataclass
class Benchmark:
    """A trained model of the suite with its data and the prune settings every method gets."""

    name: str
    model: nn.Module
    data: examples.Split
    prune_kwargs: dict[str, Any]
    description: str
    data_set: str  # "digits", "digits-images" or "mnist1d"

    @property
    def dense_accuracy(self) -> float:
        return examples.accuracy(self.model, self.data.x_test, self.data.y_test)

    def heldout_accuracy(self, model: nn.Module) -> float:
        """``model``'s top-1 accuracy on the held-out set of its data set (:func:`heldout`;
        NaN where there is none)."""
        found = heldout(self.data_set)
        return math.nan if found is None else examples.accuracy(model, *found)


@functools.lru_cache(maxsize=None)
def heldout(data_set: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Test data beyond the split, made on first use: MNIST-1D's 20,000 held-out sequences
    (:func:`nettrim.examples.load_mnist1d_heldout`); None for the digits, all 1,797 of which
    are in the split."""
    return examples.load_mnist1d_heldout() if data_set == "mnist1d" else None


def _load(kind: str, cache: dict[str, examples.Split]) -> examples.Split:
    if kind not in cache:
        cache[kind] = (examples.load_mnist1d_split() if kind == "mnist1d"
                       else examples.load_digits_split(images=kind == "digits-images"))
    return cache[kind]


def build(names: list[str] | tuple[str, ...] = tuple(MODELS)) -> dict[str, Benchmark]:
    """Train the named models of the suite (seed 0), in the order given."""
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; the suite has {list(MODELS)}")
    cache: dict[str, examples.Split] = {}
    built = {}
    for name in names:
        spec = MODELS[name]
        data = _load(spec.data, cache)
        model = examples.train(spec.factory(), data.x_train, data.y_train, **spec.train)
        built[name] = Benchmark(name, model, data, dict(spec.prune), spec.description, spec.data)
    return built
