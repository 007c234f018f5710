"""env_service: hosts B copies of a PettingZoo ParallelEnv behind a step barrier (``python -m env_service``)."""
