"""LLM reranking: prompt templates, backends, scoring strategies, calibration."""

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
