"""Benchmarks behind ``marlmesh bench ...``; results are committed under ``benchmarks/results/``."""
