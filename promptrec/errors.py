"""The exceptions promptrec raises; each message says what is wrong and what to do."""

from __future__ import annotations


class PromptrecError(Exception):
    """Base class of every error promptrec raises on purpose."""


class SettingsError(PromptrecError, ValueError):
    """A setting is unknown or invalid, or the settings file cannot be read; the message names it."""


class InputError(PromptrecError, ValueError):
    """An argument or an in-memory record is invalid (e.g. k <= 0, a frame without item_id)."""


class FilterError(InputError):
    """A metadata filter is invalid, too large, or matches no item of the catalog."""


class AssetError(PromptrecError):
    """A named model or data set cannot be fetched, verified or found."""


class DataError(PromptrecError):
    """Input data is malformed: the message names the file, line and field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        where = ", ".join(
            part
            for part in (
                str(path) if path is not None else None,
                f"line {line}" if line is not None else None,
                f"field {field!r}" if field is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.line, self.field = path, line, field


class UnknownUserError(PromptrecError, KeyError):
    """The user id is not in the interaction log the recommender was built from."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownItemError(PromptrecError, KeyError):
    """The item id is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0])


class IndexMismatchError(PromptrecError):
    """A stored index (or calibration) was built for another encoder, model or catalog."""
