"""marlmesh: truly decentralized multi-agent reinforcement learning.

Every agent is its own process; agents talk peer to peer over an emulated communication bus; one learner
per agent, local critics, no central critic. See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"
