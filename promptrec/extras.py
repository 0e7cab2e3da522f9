"""Optional features and the extras that install them: a feature used without its extra raises
`MissingExtraError` naming the ``pip install "promptrec[...]"`` line, not a bare ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from promptrec.errors import PromptrecError


class MissingExtraError(PromptrecError, ImportError):
    """A feature's optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise MissingExtraError naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the package {module.split('.')[0]!r}, which is not installed: "
            f'pip install "promptrec[{extra}]"'
        ) from exc
