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
        # Retraining is not bit-reproducible across runs on two threads (about one run in three
        # gave another 5th candidate): the switch is what is checked here, not the training.
        again = client.post("/candidates", json={"user_id": "2", "n": 5})
        assert again.status_code == 200 and len(again.json()["candidates"]) == 5
        assert _dependency(client, "index files")["ok"] and state.rec.index.version == layout.live()


def test_a_server_on_the_configured_data_serves_the_new_log_after_promptrec_index(ml_slice_dir, index_settings, tmp_path):
    """The live path of `promptrec serve`: its data come from the settings; after the log file
    gains an event and `promptrec train retriever` builds and switches the index, the next request reads the new log
    (the user's history holds the new item), with no restart."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(ml_slice_dir, folder)
    settings = index_settings.model_copy(update={"dataset": str(folder)})
    rec = Recommender.from_settings(settings, build=True)
    user = "2"
    history = rec.history(user)
    new_item = next(i for i in rec.catalog if i not in history)
    with TestClient(create_app(rec, preload=False), base_url="http://localhost") as client:
        before = client.post("/candidates", json={"user_id": user, "n": 5}).json()
        assert before["history"] == history
        inter = folder / "slice.inter"
        last = max(int(line.split("\t")[3]) for line in inter.read_text().splitlines()[1:])
        with open(inter, "a", encoding="utf-8") as fh:
            fh.write(f"{user}\t{new_item}\t5\t{last + 60}\n")
        Recommender.from_settings(settings, build=True, retrain=True)  # `promptrec train retriever`: a new log
        after = client.post("/candidates", json={"user_id": user, "n": 5}).json()
        assert after["history"] == history + [new_item]
        assert new_item not in [c["item_id"] for c in after["candidates"]]
        assert all(d["ok"] for d in client.get("/health").json()["dependencies"])
