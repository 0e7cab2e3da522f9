"""LLM backends behind one small protocol (`LLMBackend`): transformers now, vLLM later."""

from promptrec.ranker.backends.base import LLMBackend

__all__ = ["LLMBackend"]
