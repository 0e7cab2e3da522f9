"""Client-server mode: a real `chroma run` server on loopback, queried through HttpClient."""

from __future__ import annotations

import pytest

from promptrec.config import ChromaSettings
from promptrec.errors import PromptrecError
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration


def test_http_mode_builds_versions_beside_the_served_one(chroma_server, ml_slice, index_settings):
    """Each build writes its own collections on the server (a copy of the served ones that it
    updates), switches to them, and deletes those older than the version it replaced."""
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=chroma_server.port)})
    rec = Recommender.from_interactions(items, frame, settings, namespace="server-slice")
    found = rec.candidates("2", 10)
    assert len(found.candidates) == 10
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)

    def names() -> set[str]:
        return {c.name for c in client.list_collections() if c.name.startswith("server-slice")}

    first = rec.index.version.name
    assert {f"server-slice-{first}-text", f"server-slice-{first}-behaviour"} <= names()
    assert client.get_collection(f"server-slice-{first}-text").count() == len(items)
    again = Recommender.from_interactions(items, frame, settings, namespace="server-slice")
    assert again.index.manifest.text_sync.unchanged == len(items)  # copied, not encoded again
    assert [c.item_id for c in again.candidates("2", 10).candidates] == [c.item_id for c in found.candidates]
    assert len(rec.candidates("2", 10).candidates) == 10  # the replaced version still answers
    third = Recommender.from_interactions(items, frame, settings, namespace="server-slice", rebuild=True)
    assert third.index.manifest.text_sync.added == len(items)
    versions = {n.split("-")[2] + "-" + n.split("-")[3] for n in names()}
    assert versions == {again.index.version.name, third.index.version.name}


def test_http_mode_without_server_is_a_clear_error(index_settings, ml_slice, free_port):
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=free_port)})
    with pytest.raises(PromptrecError, match="cannot reach the Chroma server"):
        Recommender.from_interactions(items, frame, settings, namespace="nothing")
