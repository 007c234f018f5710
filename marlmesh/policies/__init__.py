"""Torch policies (training runtime only; the edge runtime never imports this package)."""
