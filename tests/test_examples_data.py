"""The bundled data sets: MNIST-1D's standard split and held-out sequences; the accuracy."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from nettrim import examples
from nettrim.measure import classification_accuracy


def test_the_mnist1d_split_is_the_packages_standard_data_set():
    data = pytest.importorskip("mnist1d.data")
    standard = data.make_dataset(data.get_dataset_args())
    split = examples.load_mnist1d_split()
    assert torch.equal(split.x_train, torch.as_tensor(standard["x"], dtype=torch.float32))
    assert torch.equal(split.x_test, torch.as_tensor(standard["x_test"], dtype=torch.float32))
    assert torch.equal(split.y_train, torch.as_tensor(standard["y"]).long())
    assert torch.equal(split.y_test, torch.as_tensor(standard["y_test"]).long())


def test_held_out_sequences_are_new_balanced_and_scaled_as_the_split():
    pytest.importorskip("mnist1d")
    python_state, numpy_state = random.getstate(), np.random.get_state()
    x, y = examples.load_mnist1d_heldout(n_samples=400)
    assert random.getstate() == python_state  # the global generators are left as they were
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    assert x.shape == (400, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert np.bincount(y.numpy()).tolist() == [40] * 10
    split = examples.load_mnist1d_split()
    standard = torch.cat([split.x_train, split.x_test])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1  # the split's scale: mean 0, std 1
    distances = torch.cdist(x, standard).min(dim=1).values
    assert float(distances.min()) > 1e-3  # none of them is a sequence of the split
    again_x, again_y = examples.load_mnist1d_heldout(n_samples=400)
    assert torch.equal(again_x, x) and torch.equal(again_y, y)  # seeded
    other_x, _ = examples.load_mnist1d_heldout(n_samples=400, seed=2)
    assert not torch.equal(other_x, x)


@pytest.mark.parametrize("n_samples, seed, message", [(5, 1, "n_samples"), (100.0, 1, "n_samples"),
                                                      (True, 1, "n_samples"), (100, 42, "seed"), (100, "1", "seed"),
                                                      (100, -1, "seed")])
def test_held_out_sequences_refuse_bad_arguments(n_samples, seed, message):
    with pytest.raises(ValueError, match=message):
        examples.load_mnist1d_heldout(n_samples=n_samples, seed=seed)


def test_accuracy_is_the_exact_fraction_of_correct_answers_and_keeps_the_mode():
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.5))
    model.train()
    logits = torch.eye(3)[[0, 1, 2, 0, 1, 2, 0]]  # predicts 0 1 2 0 1 2 0
    labels = torch.tensor([0, 1, 2, 1, 2, 0, 1])  # 3 of 7 right
    assert classification_accuracy(model, logits, labels) == 3 / 7
    assert model.training  # its mode restored (eval while counting: no dropout)
    labels_a = torch.tensor([0] * 644 + [1] * 356)
    labels_b = torch.tensor([0] * 647 + [1] * 353)
    guesses = torch.eye(2)[[0] * 1000]
    gap = classification_accuracy(model, guesses, labels_b) - classification_accuracy(model, guesses, labels_a)
    assert gap == pytest.approx(0.003, abs=1e-15)  # 3 answers in 1,000 are 0.3 point, not a float32 rounding of it
