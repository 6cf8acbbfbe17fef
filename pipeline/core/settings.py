"""The base of every configuration section: typed, strict (an unknown key is an error), checked on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """A configuration section. Each section lives with the code it configures; the app composes them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
