"""The server's conversations: each bound to one user, found only with that user's id."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from promptrec.errors import PromptrecError
from promptrec.explain.conversation import Conversation


class ConversationNotFound(PromptrecError, KeyError):
    """No such conversation for this user (another user's id reads the same as a wrong one)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConversationBusy(PromptrecError):
    """The conversation is answering another request."""


@dataclass
class Entry:
    conversation_id: str
    conversation: Conversation
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)

    def claim(self) -> None:
        """Hold the conversation for one answer; a second concurrent request is refused."""
        if not self.lock.acquire(blocking=False):
            raise ConversationBusy(
                f"conversation {self.conversation_id} is still answering; wait for that answer to finish"
            )

    def release(self) -> None:
        self.last_used = time.monotonic()
        self.lock.release()


class ConversationStore:
    """In-process conversations: at most `max_per_user` per user (a user's own least recently
    used one closes first) and `max_conversations` in all (the least recently used closes);
    idle ones close after `ttl_s`. Ids are unguessable tokens; a lookup needs the id and its user.
    A closed conversation's id says why it closed."""

    def __init__(self, max_conversations: int = 1000, ttl_s: float = 3600.0, max_per_user: int = 8):
        self.max_conversations = max_conversations
        self.max_per_user = max_per_user
        self.ttl_s = ttl_s
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
                raise ConversationNotFound(
                    f"no conversation {conversation_id!r} for user {user_id!r} "
                    + (f"(it was closed: {why}; " if why else f"(conversations close after {self.ttl_s:g} s idle; ")
                    + "start one with POST /why)"
                )
            entry.last_used = time.monotonic()
            self._entries.move_to_end(conversation_id)
            return entry

    def remove(self, conversation_id: str, user_id: str) -> None:
        self.get(conversation_id, user_id)
        with self._lock:
            self._entries.pop(conversation_id, None)

    def close_user(self, user_id: str, why: str) -> int:
        """Close every conversation of a user; returns how many were open."""
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
