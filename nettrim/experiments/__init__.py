"""Experiments on the layer program that a researcher runs from a notebook or a benchmark.

- :mod:`nettrim.experiments.recovery`: exact recovery of planted sparse ReLU neurons by
  the Net-Trim program (and two baselines), with certified verdicts;
- :mod:`nettrim.experiments.transition`: the phase transition of that recovery over a
  grid of sparsities and sample sizes, and where it crosses 50%.

They use the numerical core (:mod:`solvers`) only; no torch.
"""
