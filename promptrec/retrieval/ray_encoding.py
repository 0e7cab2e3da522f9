"""The index build's text encoding on a Ray cluster (``ray.encode_text``): the catalog's texts in
chunks over an actor pool (`promptrec.fanout`), each actor loading the encoder once; the vectors
come back to the build, which writes them to the Chroma store (embedded, or the server) as it
writes locally encoded ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from promptrec.config import Settings
from promptrec.fanout import map_actor_pool, ray_cluster
from promptrec.retrieval.encoder import TextEncoder


class _EncoderActor:
    """A Ray Data actor holding one `TextEncoder`."""

    def __init__(self, settings: Settings):
        self.encoder = TextEncoder(settings.encoder, settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"start": [], "count": [], "vectors": []}
        for start, texts in zip(batch["start"], batch["texts"]):
            vectors = self.encoder.encode([str(t) for t in texts])
            out["start"].append(int(start))
            out["count"].append(len(vectors))
            out["vectors"].append(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        return out


def encode_on_ray(settings: Settings, texts: Sequence[str], dimension: int, chunk: int = 512,
                  on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit-norm float32 vectors of ``texts`` (as `TextEncoder.encode` gives them), computed by
    ``ray.actors`` encoder actors on the cluster at ``ray.address``; ``on_chunk(n)`` reports progress."""
    out = np.zeros((len(texts), dimension), dtype=np.float32)
    if not texts:
        return out
    with ray_cluster(settings.ray.address):
        rows, _ = map_actor_pool(
            [{"start": start, "texts": list(texts[start:start + chunk])} for start in range(0, len(texts), chunk)],
            _EncoderActor, {"settings": settings}, actors=settings.ray.actors)
        for row in rows:
            start, count = int(row["start"]), int(row["count"])
            out[start:start + count] = np.frombuffer(row["vectors"], dtype=np.float32).reshape(count, dimension)
            if on_chunk:
                on_chunk(count)
    return out
