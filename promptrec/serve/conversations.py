"""The server's conversations: each bound to one user, found only with that user's id.

`SharedConversations` (the default) keeps them in the live store, so that any worker of the
service, on any host sharing the store, goes on with any conversation, and an erasure closes
them everywhere; `MemoryConversations` keeps them in the worker that started them."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from promptrec.errors import PromptrecError
from promptrec.explain.conversation import Conversation, ConversationState
from promptrec.store.events import LiveStore


class ConversationNotFound(PromptrecError, KeyError):
    """No such conversation for this user (another user's id reads the same as a wrong one)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConversationBusy(PromptrecError):
    """The conversation is answering another request."""


def _busy(conversation_id: str) -> ConversationBusy:
    return ConversationBusy(f"conversation {conversation_id} is still answering; wait for that answer to finish")


def _not_found(conversation_id: str, user_id: str, closed_why: str | None, ttl_s: float) -> ConversationNotFound:
    return ConversationNotFound(
        f"no conversation {conversation_id!r} for user {user_id!r} "
        + (f"(it was closed: {closed_why}; " if closed_why else f"(conversations close after {ttl_s:g} s idle; ")
        + "start one with POST /why)"
    )


@dataclass
class Entry:
    """One conversation, held by a request: `claim` before an answer, `release` after it."""

    conversation_id: str
    conversation: Conversation
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)

    def claim(self) -> None:
        """Hold the conversation for one answer; a second concurrent request is refused."""
        if not self.lock.acquire(blocking=False):
            raise _busy(self.conversation_id)

    def release(self) -> None:
        self.last_used = time.monotonic()
        self.lock.release()


class ConversationStore(ABC):
    """Where the server's conversations live: at most `max_per_user` per user (a user's own
    least recently used one closes first) and `max_conversations` in all (the least recently
    used closes); idle ones close after `ttl_s`. Ids are unguessable tokens; a lookup needs the
    id and its user. A closed conversation's id says why it closed."""

    def __init__(self, max_conversations: int = 1000, ttl_s: float = 3600.0, max_per_user: int = 8):
        self.max_conversations = max_conversations
        self.max_per_user = max_per_user
        self.ttl_s = ttl_s

    @abstractmethod
    def __len__(self) -> int:  # open conversations
        ...

    @abstractmethod
    def add(self, conversation: Conversation) -> Entry:
        ...

    @abstractmethod
    def get(self, conversation_id: str, user_id: str) -> Entry:
        ...

    @abstractmethod
    def remove(self, conversation_id: str, user_id: str) -> None:
        ...

    @abstractmethod
    def close_user(self, user_id: str, why: str) -> int:
        """Close every conversation of a user; returns how many were open."""
        ...


class SharedEntry(Entry):
    """A conversation in the live store: `claim` marks it busy there (for every worker) and
    loads its latest state; `release` writes the state the answer left."""

    def __init__(self, conversation_id: str, conversation: Conversation, store: LiveStore, lease_s: float):
        super().__init__(conversation_id, conversation)
        self.store, self.lease_s = store, lease_s

    def claim(self) -> None:
        conv = self.conversation
        state = self.store.claim_conversation(self.conversation_id, conv.user_id, self.lease_s)
        if state is None:
            current, closed = self.store.conversation(self.conversation_id, conv.user_id)
            if current is None:
                raise ConversationNotFound(f"conversation {self.conversation_id} was closed: {closed}")
            raise _busy(self.conversation_id)
        conv.restore(ConversationState.model_validate_json(state))

    def release(self) -> None:
        self.store.release_conversation(self.conversation_id, self.conversation.snapshot().model_dump_json())


class SharedConversations(ConversationStore):
    """Conversations in the live store (see the module). ``new`` makes the Conversation object
    a stored state goes on in (the service's options, the index version served now).
    ``lease_s``: how long one answer may hold a conversation; a worker killed mid-answer leaves
    it busy until then."""

    def __init__(self, store: Callable[[], LiveStore], new: Callable[[str], Conversation], *,
                 lease_s: float = 300.0, **limits: float):
        super().__init__(**limits)  # type: ignore[arg-type]
        self._store, self._new, self.lease_s = store, new, lease_s

    def __len__(self) -> int:
        return self._store().count_conversations()

    def add(self, conversation: Conversation) -> Entry:
        store = self._store()
        entry = SharedEntry(secrets.token_urlsafe(16), conversation, store, self.lease_s)
        store.open_conversation(entry.conversation_id, conversation.user_id,
                                conversation.snapshot().model_dump_json(), max_per_user=self.max_per_user,
                                max_open=self.max_conversations, ttl_s=self.ttl_s)
        return entry

    def _open_state(self, store: LiveStore, conversation_id: str, user_id: str) -> str:
        """The stored state of an open conversation of this user; else the not-found error."""
        state, closed = store.conversation(conversation_id, str(user_id))
        if state is None:
            raise _not_found(conversation_id, user_id, closed, self.ttl_s)
        return state

    def get(self, conversation_id: str, user_id: str) -> Entry:
        store = self._store()
        state = self._open_state(store, conversation_id, user_id)
        conversation = self._new(str(user_id))
        conversation.restore(ConversationState.model_validate_json(state))
        return SharedEntry(conversation_id, conversation, store, self.lease_s)

    def remove(self, conversation_id: str, user_id: str) -> None:
        store = self._store()
        self._open_state(store, conversation_id, user_id)  # without building the conversation
        store.close_conversation(conversation_id, "it was ended (DELETE /conversations)")

    def close_user(self, user_id: str, why: str) -> int:
        return self._store().close_user_conversations(str(user_id), why)


class MemoryConversations(ConversationStore):
    """Conversations in this worker's memory (see `ConversationStore` for the limits)."""

    def __init__(self, max_conversations: int = 1000, ttl_s: float = 3600.0, max_per_user: int = 8):
        super().__init__(max_conversations, ttl_s, max_per_user)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._closed: OrderedDict[str, str] = OrderedDict()  # id → why it closed (bounded)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, conversation: Conversation) -> Entry:
        entry = Entry(secrets.token_urlsafe(16), conversation)
        user = conversation.user_id
        with self._lock:
            self._expire()
            own = [cid for cid, e in self._entries.items() if e.conversation.user_id == user]
            for cid in own[: max(0, len(own) - self.max_per_user + 1)]:
                self._close(cid, f"the user's newer conversations replaced it (at most {self.max_per_user} per user)")
            self._entries[entry.conversation_id] = entry
            while len(self._entries) > self.max_conversations:
                self._close(next(iter(self._entries)), f"the server was full ({self.max_conversations} conversations)")
        return entry

    def get(self, conversation_id: str, user_id: str) -> Entry:
        with self._lock:
            self._expire()
            entry = self._entries.get(conversation_id)
            if entry is None or entry.conversation.user_id != str(user_id):
                why = self._closed.get(conversation_id) if entry is None else None
                raise _not_found(conversation_id, user_id, why, self.ttl_s)
            entry.last_used = time.monotonic()
            self._entries.move_to_end(conversation_id)
            return entry

    def remove(self, conversation_id: str, user_id: str) -> None:
        self.get(conversation_id, user_id)
        with self._lock:
            self._entries.pop(conversation_id, None)

    def close_user(self, user_id: str, why: str) -> int:
        with self._lock:
            own = [cid for cid, e in self._entries.items() if e.conversation.user_id == str(user_id)]
            for cid in own:
                self._close(cid, why)
        return len(own)

    def _close(self, conversation_id: str, why: str) -> None:
        self._entries.pop(conversation_id, None)
        self._closed[conversation_id] = why
        while len(self._closed) > 10 * self.max_conversations:
            self._closed.popitem(last=False)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.last_used >= cutoff:
                break
            self._close(oldest.conversation_id, f"idle for more than {self.ttl_s:g} s")
