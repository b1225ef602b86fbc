"""The base of every params section: typed, frozen, unknown keys rejected.

Each section of params.yaml is a pydantic model (one class per section, in the module of its pipeline phase):
its fields are the keys, with their type, default and a one-line description, written once. pydantic (not
OmegaConf structured configs) because it checks ranges (``Field(ge=0)``), literal choices and unions such as
``"auto" | int``, and names the dotted key and the value it got in every error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A params section: ``extra="forbid"`` (a misspelt key is an error, not ignored), ``strict`` (YAML's
    ``"32"`` is not an integer; an int is still a float), ``frozen`` (resolved once, never edited)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)
