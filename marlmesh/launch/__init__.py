"""Launchers: run a configured job as processes (mesh) or in one process (inprocess)."""
