"""The HTTP API (FastAPI) and its chat page: `promptrec serve`, or `create_app(rec)`.
Needs the ``serve`` extra (``pip install "promptrec[serve]"``)."""

from promptrec.extras import require

require("fastapi", "serve", "the HTTP service (promptrec serve)")
require("uvicorn", "serve", "the HTTP service (promptrec serve)")

from promptrec.serve.app import create_app
from promptrec.serve.conversations import ConversationStore, MemoryConversations, SharedConversations

__all__ = ["ConversationStore", "MemoryConversations", "SharedConversations", "create_app"]
