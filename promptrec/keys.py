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
        """'field: <made> for X, now Y; ...' of this stored key against ``current`` ('' when equal);
        a mapping field names the entries that differ, a long list its length."""
        parts = []
        for name, have, want in self.differences(current):
            if isinstance(have, dict) and isinstance(want, dict):
                parts += [f"{name}.{k}: {made} for {have.get(k)!r}, now {want.get(k)!r}"
                          for k in sorted(set(have) | set(want), key=str) if have.get(k) != want.get(k)]
            else:
                parts.append(f"{name}: {made} for {_shown(have)}, now {_shown(want)}")
        return "; ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{len(value)} values ({', '.join(map(repr, value[:3]))}, ...)"
    return repr(value)
