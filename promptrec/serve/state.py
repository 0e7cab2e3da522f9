"""What every route of the server shares: the Recommender, the loaded backend, the
conversations and the recent lists, held in ``app.state.serve`` and handed to routes by
the `ServeState` dependency."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from promptrec.errors import PromptrecError
from promptrec.explain.conversation import Conversation
from promptrec.recommender import Recommender
from promptrec.schema import RecommendationList
from promptrec.serve.conversations import ConversationStore

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.ranker.backends.base import LLMBackend


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
    conversations: ConversationStore = field(default_factory=ConversationStore)
    options: dict[str, Any] = field(default_factory=dict)  # for every Conversation
    recent: RecentLists = field(default_factory=RecentLists)
    backend: LLMBackend | None = None  # set once the model is loaded

    def recommender(self) -> Recommender:
        assert self.rec is not None, "the app has not started (use it as a context manager)"
        return self.rec

    def load_model(self) -> None:
        """Load the backend, shared by every request, and the calibration if there is one."""
        rec = self.recommender()
        reranker = rec.reranker()
        self.backend = reranker.backend
        with contextlib.suppress(PromptrecError):  # reported by /health
            rec.calibrator(reranker)

    def conversation(self, user_id: str) -> Conversation:
        """A new conversation for the user, starting from the list last shown to them."""
        return Conversation(self.recommender(), user_id,
                            **{"recommendations": self.recent.get(user_id), **self.options})


def _app_state(request: Request) -> AppState:
    return request.app.state.serve


ServeState = Annotated[AppState, Depends(_app_state)]
"""A route parameter typed `ServeState` receives the app's `AppState`."""
