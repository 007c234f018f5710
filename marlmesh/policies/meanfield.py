"""Mean-field communication: every agent sends one fixed-size summary; receivers average their neighbours'.

One round per env step. The message has ``message_dim`` floats whatever the team size, so the cost of a
message stays constant as N grows. Summaries (``channel.meanfield.summary``):

- ``embedding``: a learned ``tanh(W o_i)``.
- ``action``: the agent's action distribution given its own observation alone -- its actor evaluated with an
  empty mean field -- as Categorical probabilities (or ``tanh`` of a Box action mean), zero-padded to
  ``message_dim``. This is a stateless stand-in for "the last action distribution": a staged policy has no
  state across env steps, and every input the learner replays must be in the recorded fragment.

Actor and local critic see ``[o_i, masked mean of the heard neighbours' messages, heard share]``, where the heard
share is the number of neighbours heard over ``N - 1`` (0 with nobody heard; the mean is then 0, not NaN).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from marlmesh.policies.layers import ortho_init
from marlmesh.policies.staged import Inbox, StagedPolicy
from marlmesh.policy_spec import PolicySpec


def masked_mean(inbox: Inbox) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean over heard senders [B, M], number heard [B, 1])``; the mean is 0 where nobody was heard."""
    msgs, mask = inbox
    heard = mask.sum(-1, keepdim=True)
    return (msgs * mask.unsqueeze(-1)).sum(1) / heard.clamp(min=1.0), heard


class MeanFieldPolicy(StagedPolicy):
    """One round; act on ``[o_i, mean field, heard share]``.

    Args:
        spec: The agent's spec.
        summary: ``embedding`` or ``action`` (see the module docstring).

    Raises:
        ValueError: If ``summary="action"`` and the action needs more than ``message_dim`` floats.
    """

    rounds = 1

    def __init__(self, spec: PolicySpec, summary: Literal["embedding", "action"]) -> None:
        super().__init__(spec, spec.obs_dim + spec.message_dim + 1)
        self.summary = summary
        if summary == "embedding":
            self.encoder = nn.Sequential(ortho_init(nn.Linear(spec.obs_dim, spec.message_dim), 1.0), nn.Tanh())
        else:
            space = spec.action_space
            width = space.n if space.kind == "discrete" else int(np.prod(space.shape))
            if width > spec.message_dim:
                raise ValueError(
                    f"meanfield summary 'action' needs channel.message_dim >= {width} (the action size), "
                    f"got {spec.message_dim}"
                )

    def _own_summary(self, flat: torch.Tensor) -> torch.Tensor:
        if self.summary == "embedding":
            return self.encoder(flat)
        m = self.spec.message_dim
        alone = torch.cat([flat, torch.zeros(flat.shape[0], m + 1)], dim=-1)
        dist = self.actor(alone)
        vec = dist.probs if self.actor.discrete else torch.tanh(dist.mean)
        return nn.functional.pad(vec, (0, m - vec.shape[-1]))

    def encode(self, obs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The summary is this step's only message."""
        flat = obs.reshape(obs.shape[0], -1)
        return {"obs": flat}, self._own_summary(flat)

    def features(self, state: dict[str, torch.Tensor], inboxes: list[Inbox]) -> torch.Tensor:
        """Own observation, the neighbours' mean summary and the share of neighbours heard."""
        mean, heard = masked_mean(inboxes[0])
        share = heard / max(1, self.spec.num_agents - 1)
        return torch.cat([state["obs"], mean, share], dim=-1)
