"""What every config section shares: strict models and the one error a bad config raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """The configuration is invalid. The message is one line that says what to fix."""


class StrictModel(BaseModel):
    """A config section: unknown keys and bad values are errors, also when a value is assigned later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
