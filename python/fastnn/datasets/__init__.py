"""Datasets: small real data for demos and tests, and MNIST (read locally or downloaded once)."""

from . import digits, mnist

__all__ = ["digits", "mnist"]
