"""agent_service: one process per agent: env obs -> communication rounds over the bus -> action."""
