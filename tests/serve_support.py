"""Shared parts of the server tests: a real Recommender over the ML-100K slice with the real
SmolLM2 backend, settings trimmed for speed (10 candidates, one permutation, short answers)."""

from __future__ import annotations

import json
import threading

from promptrec.recommender import Recommender
from promptrec.testing import FakeBackend

# Short answers keep the suite fast; everything else about a conversation is the default.
CONVERSATION_OPTIONS = {"max_new_tokens": 40}


def fast_settings(settings, index_dir):
    return settings.model_copy(update={
        "index_dir": index_dir,
        "n_candidates": 10,
        "ranker": settings.ranker.model_copy(update={"permutations": 1}),
    })


def slice_recommender(ml_slice, settings, tmp_path_factory) -> Recommender:
    """One index directory per test session: the second module to ask re-encodes nothing."""
    from ranker_support import backend

    index_dir = tmp_path_factory.getbasetemp() / "serve-index"
    items, frame = ml_slice
    rec = Recommender.from_interactions(items, frame, fast_settings(settings, index_dir), namespace="serve-slice")
    rec.use_backend(backend())
    return rec


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a server-sent event stream."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def faulty_backend(real, mode: str) -> FakeBackend:
    """The real backend's tokenizer, with a generator that fails (`mode="fail"`) or stalls until
    released (`mode="stall"`): a fault injected below the server, not a mock of it."""
    like = {"model_id": real.model_id, "tokenizer": real.tokenizer}
    if mode == "fail":
        return FakeBackend(**like, error=RuntimeError("generator down (injected)"))
    return FakeBackend(**like, hang_s=60, error=RuntimeError("released"))


class LoopbackServer:
    """A real uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> "LoopbackServer":
        import time

        self.thread.start()
        for _ in range(600):  # start-up loads the model
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.1)
        raise RuntimeError("uvicorn did not start in 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
