"""comm_bus: the brokerless ZeroMQ bus between agents (transport, links, channels, metrics).

Torch-free: the same bus runs under the training runtime and on edge devices.
"""
