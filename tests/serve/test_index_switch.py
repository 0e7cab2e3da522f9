"""A running server and `promptrec index`: a build writes a new version beside the one served
and switches to it; the server opens it on its next request, and keeps serving the old one
(saying why on /health) when the new one cannot be opened for its data."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from promptrec.recommender import Recommender
from promptrec.serve import create_app

pytestmark = pytest.mark.integration


def _dependency(client: TestClient, name: str) -> dict:
    (found,) = [d for d in client.get("/health").json()["dependencies"] if d["name"] == name]
    return found


def test_a_rebuild_under_a_running_server_is_switched_to_without_a_restart(ml_slice, index_settings):
    items, frame = ml_slice
    rec = Recommender.from_interactions(items, frame, index_settings, namespace="switch")
    layout = index_settings.index_layout()
    with TestClient(create_app(rec, preload=False), base_url="http://localhost") as client:
        before = client.post("/candidates", json={"user_id": "2", "n": 5})
        assert before.status_code == 200
        served = rec.index.version
        rebuilt = Recommender.from_interactions(items, frame, index_settings, namespace="switch", rebuild=True)
        assert layout.live() == rebuilt.index.version != served
        assert served.manifest.is_file()  # the version replaced stays until the next build
        after = client.post("/candidates", json={"user_id": "2", "n": 5})
        assert after.status_code == 200 and after.json() == before.json()
        state = client.app.state.serve
        assert state.rec is not rec and state.rec.index.version == layout.live()
        assert all(d["ok"] for d in client.get("/health").json()["dependencies"])

        fewer = frame[frame["user_id"] != "2"]  # a log the server's data no longer matches
        Recommender.from_interactions(items, fewer, index_settings, namespace="switch", retrain=True)
        still = client.post("/candidates", json={"user_id": "2", "n": 5})
        assert still.status_code == 200 and still.json() == before.json()
        index = _dependency(client, "index files")
        assert not index["ok"] and "cannot be opened" in index["detail"] and "still serving" in index["detail"]
        assert client.get("/health").json()["status"] == "degraded"
        Recommender.from_interactions(items, frame, index_settings, namespace="switch", retrain=True)  # the data it serves again
        assert client.post("/candidates", json={"user_id": "2", "n": 5}).json() == before.json()
        assert _dependency(client, "index files")["ok"] and state.rec.index.version == layout.live()
