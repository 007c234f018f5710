"""Benchmarks run by ``marlmesh bench <name>``; committed results live in ``benchmarks/results/``."""
