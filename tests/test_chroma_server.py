"""Client-server mode: a real `chroma run` server on loopback, queried through HttpClient."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptrec.config import ChromaSettings
from promptrec.errors import PromptrecError
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("chroma server did not start in 60 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_mode_builds_and_queries(chroma_server, ml_slice, index_settings):
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=chroma_server)})
    rec = Recommender.from_interactions(items, frame, settings, namespace="server-slice")
    found = rec.candidates("2", 10)
    assert len(found.candidates) == 10
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    names = {c.name for c in client.list_collections()}
    assert {"server-slice-text", "server-slice-behaviour"} <= names
    assert client.get_collection("server-slice-text").count() == len(items)


def test_http_mode_without_server_is_a_clear_error(index_settings, ml_slice):
    items, frame = ml_slice
    settings = index_settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=free_port())})
    with pytest.raises(PromptrecError, match="cannot reach the Chroma server"):
        Recommender.from_interactions(items, frame, settings, namespace="nothing")
