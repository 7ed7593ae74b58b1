"""The restructured code gives the weights the code before it gave, bit for bit.

``tests/fixtures/identity.py`` prunes two small digits networks with every method in both
modes (and the Net-Trim variants: sparsity search, refit, per-neuron split) in a child
process pinned to one thread and one instruction set, and compares every tensor of the
pruned models with ``identity_weights.npz``, written before the restructuring.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

import identity  # noqa: E402


def test_weights_are_bit_identical_to_the_saved_ones():
    done = identity.run("check")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 problems" in done.stdout
