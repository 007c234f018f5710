"""Experiments: sweeps over configs, their results and report, baselines and diagnostics of trained runs."""
