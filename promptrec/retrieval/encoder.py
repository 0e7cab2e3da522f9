"""Item text encoder (sentence-transformers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from promptrec.config import Settings
from promptrec.hardware import resolve_device


class TextEncoder:
    """Embeds item texts into unit vectors; loads the model on first use."""

    def __init__(self, name: str, settings: Settings | None = None):
        self.name = name
        self._settings = settings or Settings()
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                from promptrec.assets import resolve_encoder

                path = resolve_encoder(self.name, self._settings)
                self._model = SentenceTransformer(
                    str(path), device=resolve_device(self._settings.device)
                )
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Unit-norm float32 vectors, one row per text; `on_batch(n)` reports progress."""
        model = self._load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            out[start : start + len(batch)] = model.encode(
                batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            if on_batch:
                on_batch(len(batch))
        return out
