"""LLM reranking: prompt templates, backends, scoring strategies, calibration."""

from typing import TYPE_CHECKING

from promptrec.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.ranker.backends.base import LLMBackend
    from promptrec.ranker.calibration import CalibrationKey, CalibrationMismatchError, Calibrator, fit_calibration
    from promptrec.ranker.prompts import RerankTemplate, load_template, sanitize_text
    from promptrec.ranker.reranker import LLMReranker, RerankResult

__all__ = [
    "CalibrationKey",
    "CalibrationMismatchError",
    "Calibrator",
    "LLMBackend",
    "LLMReranker",
    "RerankResult",
    "RerankTemplate",
    "fit_calibration",
    "load_template",
    "sanitize_text",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "LLMBackend": "promptrec.ranker.backends.base",
    **dict.fromkeys(("CalibrationKey", "CalibrationMismatchError", "Calibrator", "fit_calibration"),
                    "promptrec.ranker.calibration"),
    **dict.fromkeys(("RerankTemplate", "load_template", "sanitize_text"), "promptrec.ranker.prompts"),
    **dict.fromkeys(("LLMReranker", "RerankResult"), "promptrec.ranker.reranker"),
})
