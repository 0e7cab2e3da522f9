"""Client-server mode: a real `chroma run` server on loopback, queried through HttpClient."""

from __future__ import annotations

import pytest

from promptrec.config import ChromaSettings
from promptrec.errors import PromptrecError
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration


def test_http_mode_builds_and_queries(chroma_server, ml_slice, index_settings):
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=chroma_server.port)})
    rec = Recommender.from_interactions(items, frame, settings, namespace="server-slice")
    found = rec.candidates("2", 10)
    assert len(found.candidates) == 10
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    names = {c.name for c in client.list_collections()}
    assert {"server-slice-text", "server-slice-behaviour"} <= names
    assert client.get_collection("server-slice-text").count() == len(items)


def test_http_mode_without_server_is_a_clear_error(index_settings, ml_slice, free_port):
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=free_port)})
    with pytest.raises(PromptrecError, match="cannot reach the Chroma server"):
        Recommender.from_interactions(items, frame, settings, namespace="nothing")
