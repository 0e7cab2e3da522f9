"""The live service over HTTP: events and items in, fresh lists out, erasure, API keys, body
limits and /metrics. A real Recommender over the ML-100K slice (retrieval mode: no model is
loaded), its own index folder and the live store in it (SQLite), and one test with two
"workers" (two apps) sharing a real PostgreSQL store."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from promptrec.recommender import Recommender
from promptrec.serve import create_app

pytestmark = pytest.mark.integration

WRITE, READ = "w-key-0123456789", "r-key-0123456789"


def _settings(asset_settings, index_dir, **store):
    ranker = asset_settings.ranker.model_copy(update={"mode": "retrieval"})
    update = {"index_dir": index_dir, "n_candidates": 10, "ranker": ranker}
    if store:
        update["store"] = asset_settings.store.model_copy(update=store)
    return asset_settings.model_copy(update=update)


@pytest.fixture(scope="module")
def built(ml_slice, asset_settings, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("live") / "index"
    items, frame = ml_slice
    Recommender.from_interactions(items, frame, _settings(asset_settings, index_dir), namespace="live").close()
    return index_dir


@pytest.fixture
def rec(built, ml_slice, asset_settings, tmp_path):
    """A fresh copy of the built index for each test (its live store starts empty)."""
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(built, index_dir)
    items, frame = ml_slice
    return Recommender.open(items, frame, _settings(asset_settings, index_dir), "live")


def client_for(rec, **keys):
    if keys:
        serve = rec.settings.serve.model_copy(update={k: SecretStr(v) for k, v in keys.items()})
        rec.settings = rec.settings.model_copy(update={"serve": serve})
    return TestClient(create_app(rec, preload=False), base_url="http://localhost")


def listed(client, user, k=10, **headers):
    r = client.post("/recommend", json={"user_id": user, "k": k}, headers=headers)
    assert r.status_code == 200, r.text
    return [x["item_id"] for x in r.json()["recommendations"]]


def test_an_acknowledged_event_changes_the_next_list(rec):
    with client_for(rec) as client:
        before = listed(client, "1")
        r = client.post("/events", json={"events": [{"user_id": "1", "item_id": before[0], "timestamp": 2e9}]})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        after = listed(client, "1")
        assert before[0] not in after and after != before  # read at request time, history excluded
        assert rec.history("1")[-1] == before[0]
        # a user known only from the live store gets lists too
        assert client.post("/events", json={"events": [{"user_id": "new-user", "item_id": before[0]}]}).status_code == 200
        assert listed(client, "new-user")
        # the same item twice in a history (seen again) is a history, not a vector-store error
        assert client.post("/events", json={"events": [{"user_id": "new-user", "item_id": before[0]}]}).status_code == 200
        assert listed(client, "new-user")


def test_bad_rows_are_refused_with_their_field_and_nothing_is_written(rec):
    with client_for(rec) as client:
        item = rec.history("1")[0]
        r = client.post("/events", json={"events": [{"user_id": "1", "item_id": item}, {"user_id": "1"}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 1, "item_id"]
        r = client.post("/events", json={"events": [{"user_id": "1", "item_id": item},
                                                    {"user_id": "1", "item_id": "no-such-item"}]})
        assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["body", "events", 1, "item_id"]
        assert "no-such-item" in r.json()["detail"][0]["msg"]
        assert rec.live_store() is None or rec.live_store().count_events() == 0
        r = client.post("/events", json={"events": [{"user_id": "1", "item_id": item}] * 1001})
        assert r.status_code == 413
        r = client.post("/items", json={"items": [{"item_id": "x", "title": "  "}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "items", 0, "title"]


def test_a_new_item_is_retrievable_at_once(rec, ml_slice):
    """Its text vector is upserted with the write: the text source ranks it for a history like
    it, and with `retrieval.new_item_slots` the fused list gives it a place."""
    toy_story = next(i for i in rec.items if i.title.startswith("Toy Story"))
    new = {"item_id": "new-toy-story", "title": "Toy Story 5", "year": 2026, "genres": list(toy_story.genres)}
    items, frame = ml_slice
    retrieval = rec.settings.retrieval.model_copy(update={"new_item_slots": 2})
    rec = Recommender.open(items, frame, rec.settings.model_copy(update={"retrieval": retrieval}), "live")
    with client_for(rec) as client:
        assert client.post("/items", json={"items": [new]}).status_code == 200
        text = rec.retriever.source_rankings([toy_story.item_id], 5)["text"]
        assert "new-toy-story" in [i for i, _ in text]
        r = client.post("/candidates", json={"history": [toy_story.item_id], "n": 20})
        assert r.status_code == 200, r.text
        found = {c["item_id"]: c for c in r.json()["candidates"]}
        assert "new-toy-story" in found and found["new-toy-story"]["popularity"] == 0
        ok = client.post("/events", json={"events": [{"user_id": "2", "item_id": "new-toy-story"}]})
        assert ok.status_code == 200  # events may name it now


_OTHER_WORKER = """
import json, pickle, sys
from promptrec.config import Settings
from promptrec.recommender import Recommender
items, frame, settings_json = pickle.load(open(sys.argv[1], "rb"))
rec = Recommender.open(items, frame, Settings.model_validate_json(settings_json), "live")
rec.candidates("2", 20)  # its vectors are read before the other process writes
print("ready", flush=True)
sys.stdin.readline()
text = [i for i, _ in rec.retriever.source_rankings([sys.argv[2]], 5)["text"]]
listed = [c.item_id for c in rec.candidates("2", 20).candidates]
print(json.dumps({"text": text, "history": rec.history("2")[-1:], "listed": listed}), flush=True)
"""


def test_a_new_item_reaches_a_worker_in_another_process(rec, ml_slice, tmp_path):
    """Two processes on one embedded index: an item one of them takes is in the other's text
    search at once, and a history that holds it is served there (an embedded Chroma store
    does not show one process the vectors another wrote, so each worker encodes it itself)."""
    import json
    import pickle
    import subprocess
    import sys

    toy_story = next(i for i in rec.items if i.title.startswith("Toy Story"))
    rec.add_interactions([{"user_id": "2", "item_id": toy_story.item_id}])  # the store exists before both open
    items, frame = ml_slice
    data = tmp_path / "worker.pkl"
    data.write_bytes(pickle.dumps((items, frame, rec.settings.model_dump_json())))
    other = subprocess.Popen([sys.executable, "-c", _OTHER_WORKER, str(data), toy_story.item_id],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        new = {"item_id": "new-toy-story", "title": "Toy Story 5", "year": 2026, "genres": list(toy_story.genres)}
        rec.add_items([new])
        rec.add_interactions([{"user_id": "2", "item_id": "new-toy-story"}])
        out, _ = other.communicate("go\n", timeout=120)
    finally:
        other.kill()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["history"] == ["new-toy-story"]
    assert "new-toy-story" in seen["text"]
    assert seen["listed"] and "new-toy-story" not in seen["listed"]  # in the history, so not listed
    assert seen["listed"] == [c.item_id for c in rec.candidates("2", 20).candidates]  # as this process lists


def test_erasing_a_user(rec):
    with client_for(rec) as client:
        item = listed(client, "2")[0]
        client.post("/events", json={"events": [{"user_id": "2", "item_id": item}]})
        conv = client.post("/conversations", json={"user_id": "2"})
        r = client.delete("/users/2")
        assert r.status_code == 200 and r.json()["events_deleted"] == 1 and "next index build" in r.json()["note"]
        gone = client.post("/recommend", json={"user_id": "2"})
        assert gone.status_code == 404 and "erased" in gone.json()["detail"][0]["msg"]
        assert conv.status_code == 201, conv.text
        closed = client.get(f"/conversations/{conv.json()['conversation_id']}", params={"user_id": "2"})
        assert closed.status_code == 404 and "the user was erased" in closed.text
        assert client.delete("/users/no-such-user").status_code == 404


def test_keys_guard_writes_and_reads(rec, caplog):
    caplog.set_level(logging.DEBUG)
    with client_for(rec, write_key=WRITE, read_key=READ) as client:
        event = {"events": [{"user_id": "1", "item_id": rec.history("1")[0]}]}
        assert client.post("/events", json=event).status_code == 401
        assert client.post("/events", json=event, headers={"X-API-Key": READ}).status_code == 401
        assert client.post("/events", json=event, headers={"X-API-Key": WRITE + "x"}).status_code == 401
        assert client.post("/events", json=event, headers={"Authorization": f"Bearer {WRITE}"}).status_code == 200
        assert client.post("/recommend", json={"user_id": "1"}).status_code == 401
        assert listed(client, "1", **{"X-API-Key": READ})
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
        assert client.delete("/users/1", headers={"X-API-Key": READ}).status_code == 401
        big = client.post("/events", content=b"{" + b" " * 1_100_000 + b"}", headers={
            "X-API-Key": WRITE, "content-type": "application/json"})
        assert big.status_code == 413
    assert WRITE not in caplog.text and READ not in caplog.text


def test_metrics_count_requests_events_and_refusals(rec):
    with client_for(rec, write_key=WRITE) as client:
        listed(client, "1")
        client.post("/events", json={"events": [{"user_id": "1", "item_id": rec.history("1")[0]}] * 3},
                    headers={"X-API-Key": WRITE})
        client.post("/events", json={"events": []})
        text = client.get("/metrics").text
    assert "promptrec_events_ingested_total 3.0" in text
    assert 'promptrec_requests_total{method="POST",route="/recommend",status="200"} 1.0' in text
    assert 'promptrec_requests_refused_total{reason="key"} 1.0' in text
    assert 'promptrec_request_seconds_count{method="POST",route="/recommend"} 1.0' in text


def test_two_workers_share_a_postgresql_store(built, ml_slice, asset_settings, postgres_url, tmp_path):
    import shutil

    from promptrec.store import LiveStore

    with LiveStore(postgres_url).engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE events, items, erased_users, conversations RESTART IDENTITY")
    items, frame = ml_slice
    workers = []
    for n in range(2):
        index_dir = tmp_path / f"index{n}"
        shutil.copytree(built, index_dir)
        workers.append(Recommender.open(items, frame, _settings(asset_settings, index_dir, url=postgres_url), "live"))
    with client_for(workers[0]) as one, client_for(workers[1]) as two:
        before = listed(two, "3")
        assert one.post("/events", json={"events": [{"user_id": "3", "item_id": before[0]}]}).status_code == 200
        assert before[0] not in listed(two, "3")  # written by one worker, served by the other
        assert one.delete("/users/4").status_code == 200
        assert two.post("/recommend", json={"user_id": "4"}).status_code == 404
        # a conversation started by one worker goes on in the other, and is seen by both
        started = one.post("/conversations", json={"user_id": "3"})
        assert started.status_code == 201, started.text
        cid, first = started.json()["conversation_id"], started.json()["suggestions"][0]["item_id"]
        answered = two.post("/why", json={"user_id": "3", "item_id": first, "conversation_id": cid, "stream": False})
        assert answered.status_code == 200 and answered.json()["conversation_id"] == cid, answered.text
        seen = one.get(f"/conversations/{cid}", params={"user_id": "3"}).json()
        assert seen["item_id"] == first and len(seen["explanations"]) == 1
        assert one.delete("/users/3").status_code == 200
        closed = two.post(f"/conversations/{cid}/ask", json={"user_id": "3", "question": "Why?", "stream": False})
        assert closed.status_code == 404 and "the user was erased" in closed.text


def _wait_for_retrain(client, outcome, timeout_s=120.0):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = (client.get("/health").json()["retraining"] or {}).get("last")
        if last and last["outcome"] == outcome:
            return last
        time.sleep(0.5)
    raise AssertionError(f"no {outcome} retrain in {timeout_s:g} s: {client.get('/health').json()['retraining']}")


def test_the_service_retrains_on_its_schedule_without_downtime(rec):
    serve = rec.settings.serve.model_copy(update={"retrain_every_s": 1.0})
    rec.settings = rec.settings.model_copy(update={"serve": serve})
    with client_for(rec) as client:
        state = client.app.state.serve
        assert _wait_for_retrain(client, "skipped")["detail"] == "nothing new in the live store"
        old_version = state.recommender().index.version.name
        item = listed(client, "5")[0]
        assert client.post("/events", json={"events": [{"user_id": "5", "item_id": item, "timestamp": 2e9}]}).status_code == 200
        done = _wait_for_retrain(client, "retrained")
        served = state.recommender()
        assert served.index.version.name == done["detail"] != old_version
        assert served.index.manifest.store_seq == done["store_seq"] == 1
        assert served.history("5").count(item) == 1  # trained on once, not counted twice
        assert listed(client, "5")  # the new version answers
        # a retrain that fails (here: its encoder is gone) leaves the served version answering
        broken = served.settings.model_copy(update={"encoder": str(rec.settings.index_dir / "no-such-encoder")})
        served.settings = broken
        assert client.post("/items", json={"items": [{"item_id": "fresh", "title": "A Fresh Film"}]}).status_code == 200
        failed = _wait_for_retrain(client, "failed")
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["retraining"]["last_failure"]["detail"] == failed["detail"]
        assert any(d["name"] == "retraining" and not d["ok"] and "still served" in d["detail"] for d in health["dependencies"])
        assert state.recommender().index.version.name == done["detail"] and listed(client, "5")
