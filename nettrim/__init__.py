"""nettrim: prune trained ReLU networks layer by layer with convex programs (Net-Trim)."""
__version__ = "0.1.0"
