"""The one base of every model read from a file: the profiles, and every config file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors (a typo is named, not ignored), values are immutable, and NaN
    and infinity are refused (TOML has them; no setting means them). A field with an alias
    (`register`) may also be given by its name."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
