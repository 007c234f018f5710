"""learner_service: one learner per agent (decentralized PPO with a local critic)."""
