"""Small building blocks of the policies: tanh MLPs and linear layers with orthogonal initialisation."""

from __future__ import annotations

import math

from torch import nn


def mlp(in_dim: int, hidden: list[int], out_dim: int, out_gain: float) -> nn.Sequential:
    """Tanh MLP with orthogonal init (gain sqrt(2) hidden, ``out_gain`` on the output layer)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [ortho_init(nn.Linear(last, width), math.sqrt(2)), nn.Tanh()]
        last = width
    layers.append(ortho_init(nn.Linear(last, out_dim), out_gain))
    return nn.Sequential(*layers)


def ortho_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias, in place; returns the layer."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer
