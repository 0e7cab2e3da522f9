"""What every route of the server shares: the Recommender, the loaded backend, the
conversations and the recent lists, held in ``app.state.serve`` and handed to routes by
the `ServeState` dependency."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from promptrec.errors import PromptrecError
from promptrec.explain.conversation import Conversation
from promptrec.recommender import Recommender
from promptrec.retrieval.store import release_persistent_store
from promptrec.schema import RecommendationList
from promptrec.serve.conversations import ConversationStore, MemoryConversations, SharedConversations
from promptrec.serve.guard import ServeMetrics
from promptrec.serve.retrain import RetrainSchedule

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.ranker.backends.base import LLMBackend

log = logging.getLogger("promptrec")


class RecentLists:
    """Each user's latest default recommendation list (all candidates ranked), for a while:
    the conversation that explains it starts from it instead of ranking again."""

    def __init__(self, max_users: int = 1000, ttl_s: float = 600.0):
        self.max_users, self.ttl_s = max_users, ttl_s
        self._lists: OrderedDict[str, tuple[float, RecommendationList]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: RecommendationList) -> None:
        if result.degraded:  # a degraded list is not worth explaining from
            return
        with self._lock:
            self._lists[result.user_id] = (time.monotonic(), result)
            self._lists.move_to_end(result.user_id)
            while len(self._lists) > self.max_users:
                self._lists.popitem(last=False)

    def get(self, user_id: str) -> RecommendationList | None:
        with self._lock:
            found = self._lists.get(str(user_id))
        if found is None or time.monotonic() - found[0] > self.ttl_s:
            return None
        return found[1]


@dataclass
class AppState:
    """The server's shared parts. `rec` is None until the app starts (then: from the settings)."""

    rec: Recommender | None
    conversations: ConversationStore | None = None  # None until the app starts (`serve.conversations`)
    options: dict[str, Any] = field(default_factory=dict)  # for every Conversation
    recent: RecentLists = field(default_factory=RecentLists)
    backend: LLMBackend | None = None  # set once the model is loaded
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    retraining: RetrainSchedule | None = None  # `serve.retrain_every_s`

    index_error: str | None = None  # why the version now served on disk could not be opened
    _index_seen: tuple[int, int] | None = None  # the index pointer's (inode, mtime) last looked at
    _reopening: threading.Lock = field(default_factory=threading.Lock)

    def recommender(self) -> Recommender:
        """The Recommender, on the index version served on disk: after a build switched the
        index to a new version, the first request that notices opens it (requests in flight
        finish on the old one; if it cannot be opened, the old one goes on serving and /health
        says why)."""
        assert self.rec is not None, "the app has not started (use it as a context manager)"
        self._follow_index()
        return self.rec

    def _follow_index(self) -> None:
        rec = self.rec
        pointer = rec.settings.index_layout().pointer
        try:
            stat = pointer.stat()
            seen = (stat.st_ino, stat.st_mtime_ns)
        except OSError:
            seen = None
        if seen == self._index_seen or not self._reopening.acquire(blocking=False):
            return  # unchanged, or another request is opening the new version
        try:
            self._index_seen = seen
            try:
                if rec.settings.index_layout().live() == rec.index.version:
                    self.index_error = None
                    return
                new = rec.reopened()
            except PromptrecError as exc:
                self.index_error = str(exc)
                log.warning("the index was switched to a new version, but it cannot be opened: %s; "
                            "still serving the old one", exc)
                return
            old_chroma = rec.index.version.chroma if rec.index.version is not None else None
            self.rec, self.index_error = new, None
            log.info("now serving index version %s", new.index.version.name if new.index.version else "(unversioned)")
            if old_chroma is not None and rec.settings.chroma.mode == "persistent":
                weakref.finalize(rec.index, release_persistent_store, old_chroma)
        finally:
            self._reopening.release()

    def load_model(self) -> None:
        """Load the backend, shared by every request, and the calibration if there is one."""
        rec = self.recommender()
        reranker = rec.reranker()
        self.backend = reranker.backend
        with contextlib.suppress(PromptrecError):  # reported by /health
            rec.calibrator(reranker)

    def open_conversations(self) -> None:
        """The conversation store the settings name (unless one was given)."""
        if self.conversations is not None:
            return
        serve = self.recommender().settings.serve
        if serve.conversations == "memory":
            self.conversations = MemoryConversations()
        else:
            self.recommender().live_store(create=True)  # fails at start-up, not at the first conversation
            self.conversations = SharedConversations(
                lambda: self.recommender().live_store(create=True), self.resumed_conversation,
                lease_s=serve.conversation_lease_s)

    def resumed_conversation(self, user_id: str) -> Conversation:
        """The Conversation object a stored conversation goes on in."""
        return Conversation(self.recommender(), user_id, **self.options)

    def conversation(self, user_id: str) -> Conversation:
        """A new conversation for the user, starting from the list last shown to them."""
        return Conversation(self.recommender(), user_id,
                            **{"recommendations": self.recent.get(user_id), **self.options})


def _app_state(request: Request) -> AppState:
    return request.app.state.serve


ServeState = Annotated[AppState, Depends(_app_state)]
"""A route parameter typed `ServeState` receives the app's `AppState`."""
