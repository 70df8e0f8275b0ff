"""The one base of every model read from a file: the profiles, and every config file."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors (a typo is named, not ignored), values are immutable, and NaN
    and infinity are refused (TOML has them; no setting means them). A field with an alias
    (`register`) may also be given by its name."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


class EnvCredentials(Strict):
    """A user name and password read from the environment variables the file names."""

    username_env: str
    password_env: str

    @property
    def username(self) -> str:
        return os.environ.get(self.username_env, "")

    @property
    def password(self) -> str:
        return os.environ.get(self.password_env, "")
