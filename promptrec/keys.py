"""One key type for every saved artifact (calibration, tuned adapter, index): the fields it was
made for, compared field by field with what the current settings would make."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ArtifactKey(BaseModel):
    """What a saved artifact is valid for; any difference means refit, retrain or rebuild."""

    model_config = ConfigDict(frozen=True)

    def differences(self, other: ArtifactKey) -> list[tuple[str, Any, Any]]:
        """(field, this value, the other's value) for each field that differs."""
        if type(other) is not type(self):
            raise TypeError(f"cannot compare a {type(self).__name__} with a {type(other).__name__}")
        return [(name, getattr(self, name), getattr(other, name)) for name in type(self).model_fields
                if getattr(self, name) != getattr(other, name)]

    def describe_differences(self, current: ArtifactKey, made: str = "made") -> str:
        """'field: <made> for X, now Y; ...' of this stored key against ``current`` ('' when equal)."""
        return "; ".join(f"{name}: {made} for {have!r}, now {want!r}" for name, have, want in self.differences(current))
