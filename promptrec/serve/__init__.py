"""The HTTP API (FastAPI) and its chat page: `promptrec serve`, or `create_app(rec)`."""

from promptrec.serve.app import create_app
from promptrec.serve.conversations import ConversationStore

__all__ = ["ConversationStore", "create_app"]
