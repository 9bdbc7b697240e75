"""Datasets: small real data for demos and tests."""

from . import digits

__all__ = ["digits"]
