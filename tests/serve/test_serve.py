"""The HTTP API on real parts: the ML-100K slice, MiniLM, a real Chroma store in a tmp dir,
SmolLM2-135M-Instruct; FastAPI's TestClient (the app's real lifespan and threads)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from serve_support import CONVERSATION_OPTIONS, faulty_backend, slice_recommender, sse_events

from promptrec.explain import Evidence, Explanation
from promptrec.recommender import Recommender
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import RecommendationList
from promptrec.serve import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rec(ml_slice, asset_settings, tmp_path_factory):
    return slice_recommender(ml_slice, asset_settings, tmp_path_factory)


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec, conversation_options=CONVERSATION_OPTIONS), base_url="http://localhost") as client:
        yield client


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    (detail,) = response.json()["detail"]
    return detail


def test_health_docs_and_users(client, rec):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["index"] == {"namespace": "serve-slice", "items": len(rec.catalog), "users": 40,
                               "encoder": rec.settings.encoder}
    assert health["model"]["loaded"] and health["model"]["model_id"] == "smollm2-135m-instruct"
    assert health["model"]["dtype"] == str(rec.backend.dtype).removeprefix("torch.")
    assert health["calibration"]["fitted"] is False and "promptrec calibrate" in health["calibration"]["detail"]
    assert "adapter" in health and health["adapter"] is None
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/candidates", "/recommend", "/why", "/conversations/{conversation_id}/ask"} <= set(paths)
    assert client.get("/docs").status_code == 200
    users = client.get("/users", params={"limit": 5}).json()
    assert users["total"] == 40 and users["users"] == list(rec.histories)[:5]
    page = client.get("/")
    assert page.status_code == 200 and "/static/page.js" in page.text
    assert client.get("/static/page.js").status_code == 200


def test_candidates_for_a_user_an_anonymous_history_and_a_filter(client, rec):
    found = CandidateList.model_validate(client.post("/candidates", json={"user_id": "1", "n": 5}).json())
    assert found == rec.candidates("1", 5)
    history = rec.history("2")[-5:]
    anonymous = CandidateList.model_validate(client.post("/candidates", json={"history": history, "n": 5}).json())
    assert anonymous.user_id == "anonymous" and anonymous.history == history
    assert not set(history) & {c.item_id for c in anonymous.candidates}
    comedy = client.post("/candidates", json={"user_id": "1", "n": 5, "where": {"genre_Comedy": True}}).json()
    assert comedy["candidates"] and all("Comedy" in rec.item(c["item_id"]).genres for c in comedy["candidates"])


def test_only_trusted_host_names_are_served(client):
    """DNS rebinding: a page on another name must not read a service bound to localhost."""
    assert client.get("/health").status_code == 200
    assert client.get("/users", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    refused = client.get("/users", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and "1" not in refused.text


def test_recommend(client, rec):
    body = client.post("/recommend", json={"user_id": "1", "k": 3}).json()
    result = RecommendationList.model_validate(body)
    assert len(result.recommendations) == 3 and not result.degraded
    assert result.model_id == "smollm2-135m-instruct" and not result.calibrated
    assert all(r.llm_score is not None and r.probability is None for r in result.recommendations)
    assert not {r.item_id for r in result.recommendations} & set(rec.history("1"))


def test_bad_input_names_the_field(client):
    detail = error_of(client.post("/recommend", json={"user_id": "no-such-user"}), 404)
    assert detail["loc"] == ["body", "user_id"] and "unknown user 'no-such-user'" in detail["msg"]
    detail = error_of(client.post("/candidates", json={"history": ["1", "no-such-item"]}), 404)
    assert detail["loc"] == ["body", "history", 1] and "unknown item 'no-such-item'" in detail["msg"]
    detail = error_of(client.post("/why", json={"user_id": "1", "item_id": "no-such-item"}), 404)
    assert detail["loc"] == ["body", "item_id"]
    detail = error_of(client.post("/recommend", json={"user_id": "1", "where": {"year": {"$near": 1}}}), 422)
    assert detail["loc"] == ["body", "where"] and "$near" in detail["msg"]
    detail = error_of(client.post("/recommend", json={"user_id": "1", "template": "no-such-template"}), 422)
    assert detail["loc"] == ["body", "template"]
    assert ["body", "k"] in [d["loc"] for d in client.post("/recommend", json={"user_id": "1", "k": 0}).json()["detail"]]
    assert client.post("/recommend", json={"k": 3}).status_code == 422  # neither user_id nor history
    for path, body in (("/recommend", {"user_id": "1", "K": 3}), ("/candidates", {"user_id": "1", "limit": 3}),
                       ("/why", {"user_id": "1", "item_id": "50", "strem": False}), ("/conversations", {"user": "1"})):
        misspelt = next(k for k in body if k not in ("user_id", "item_id"))
        assert ["body", misspelt] in [d["loc"] for d in client.post(path, json=body).json()["detail"]], path


def test_why_streams_a_grounded_answer_and_follow_ups_stay_with_the_user(client, rec):
    shown = client.post("/recommend", json={"user_id": "1", "k": 3}).json()["recommendations"]
    item = shown[1]["item_id"]
    response = client.post("/why", json={"user_id": "1", "item_id": item})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["conversation", "evidence"] and kinds[-1] == "done" and "delta" in kinds
    cid = events[0][1]["conversation_id"]
    assert response.headers["x-conversation-id"] == cid
    evidence = Evidence.model_validate(events[1][1])
    done = Explanation.model_validate(events[-1][1])
    assert done.evidence == evidence and done.user_id == "1" and done.item_id == item and done.text
    assert {r.item_id for r in evidence.related} <= set(rec.history("1"))
    assert (evidence.scores.recommended_rank, evidence.scores.recommended_of) == (2, 10)  # the list shown
    streamed = "".join(data["text"] for kind, data in events if kind == "delta")
    assert streamed == done.text  # each sentence shown once it passed the checks: nothing withdrawn

    follow = client.post(f"/conversations/{cid}/ask",
                         json={"user_id": "1", "question": "What else do they share?", "stream": False})
    assert follow.status_code == 200, follow.text
    answer = follow.json()
    assert answer["conversation_id"] == cid and answer["explanation"]["kind"] == "free"
    transcript = client.get(f"/conversations/{cid}", params={"user_id": "1"}).json()
    assert [e["kind"] for e in transcript["explanations"]] == ["why", "free"]

    # Another user's id finds nothing, and learns nothing of user 1's records.
    for response, where in (
        (client.get(f"/conversations/{cid}", params={"user_id": "2"}), "path"),
        (client.post(f"/conversations/{cid}/ask", json={"user_id": "2", "question": "And user 1?"}), "path"),
        (client.post("/why", json={"user_id": "2", "item_id": item, "conversation_id": cid}), "body"),
    ):
        detail = error_of(response, 404)
        assert detail["type"] == "unknown_conversation" and detail["loc"] == [where, "conversation_id"]
        assert not any(rec.item(i).title in response.text for i in rec.history("1"))
    detail = error_of(client.post(f"/conversations/{cid}/ask", json={"user_id": "1", "question": " "}), 422)
    assert detail["loc"] == ["body", "question"]
    assert client.delete(f"/conversations/{cid}", params={"user_id": "1"}).status_code == 204
    assert client.get(f"/conversations/{cid}", params={"user_id": "1"}).status_code == 404


def test_a_refinement_returns_a_new_list_with_reasons(client, rec):
    info = client.post("/conversations", json={"user_id": "1"}).json()
    cid = info["conversation_id"]
    response = client.post(f"/conversations/{cid}/refine", json={"user_id": "1", "request": "no comedy", "k": 3})
    assert response.status_code == 200, response.text
    refined = response.json()
    assert refined["refinement"]["exclude_genres"] == ["Comedy"] and len(refined["items"]) == 3
    assert all("Comedy" not in rec.item(i["item_id"]).genres and "not Comedy" in i["reasons"] for i in refined["items"])
    detail = error_of(client.post(f"/conversations/{cid}/refine", json={"user_id": "2", "request": "no comedy"}), 404)
    assert detail["type"] == "unknown_conversation"
    detail = error_of(client.post(f"/conversations/{cid}/refine", json={"user_id": "1", "request": "!!"}), 422)
    assert detail["loc"] == ["body", "request"]


def test_a_follow_up_needs_an_item_in_focus(client):
    created = client.post("/conversations", json={"user_id": "3"})
    assert created.status_code == 201
    info = created.json()
    assert info["user_id"] == "3" and info["item_id"] is None and info["suggestions"]
    detail = error_of(client.post(f"/conversations/{info['conversation_id']}/ask",
                                  json={"user_id": "3", "question": "Why?"}), 409)
    assert "POST /why" in detail["msg"]


def test_concurrent_requests_share_the_model_safely(client):
    body = {"user_id": "4", "k": 5}
    alone = client.post("/recommend", json=body).json()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.post("/recommend", json=body), range(4)))
    assert all(r.status_code == 200 for r in results)
    assert all([x["item_id"] for x in r.json()["recommendations"]] ==
               [x["item_id"] for x in alone["recommendations"]] for r in results)


def test_a_failing_generator_degrades_or_is_a_503(client, rec):
    real = rec.backend
    item = rec.candidates("1", 3).candidates[0].item_id
    try:
        rec.use_backend(faulty_backend(real, "fail"))
        result = client.post("/recommend", json={"user_id": "1", "k": 3}).json()
        assert result["degraded"] and "generator down" in result["degraded_reason"]
        assert [r["retrieval_rank"] for r in result["recommendations"]] == [1, 2, 3]
        response = client.post("/why", json={"user_id": "1", "item_id": item})
        assert response.status_code == 503 and "generator down" in response.json()["detail"]
    finally:
        rec.use_backend(real)


def test_a_stalled_generator_times_out(client, rec):
    real = rec.backend
    item = rec.candidates("1", 3).candidates[0].item_id
    stalled = faulty_backend(real, "stall")
    old_timeout = rec.settings.ranker.timeout_s
    try:
        rec.settings.ranker.timeout_s = 1.0
        rec.use_backend(stalled)
        result = client.post("/recommend", json={"user_id": "1", "k": 3}).json()
        assert result["degraded"] and "longer than 1 s" in result["degraded_reason"]
        response = client.post("/why", json={"user_id": "1", "item_id": item})
        assert response.status_code == 503 and "did not answer in time" in response.json()["detail"]
    finally:
        stalled.release()
        rec.settings.ranker.timeout_s = old_timeout
        rec.use_backend(real)


@pytest.fixture(params=["memory", "shared"])
def conversation_stores(request, rec, tmp_path):
    """Makes conversation stores of one kind: in memory, or in a live store (SQLite)."""
    from promptrec.explain import Conversation
    from promptrec.serve.conversations import MemoryConversations, SharedConversations
    from promptrec.store import LiveStore

    if request.param == "memory":
        yield MemoryConversations
        return
    live = LiveStore(f"sqlite:///{tmp_path / 'live.sqlite'}")
    yield lambda **limits: SharedConversations(lambda: live, lambda user: Conversation(rec, user), **limits)
    live.close()


def test_the_conversation_store_binds_users_and_stays_bounded(rec, conversation_stores):
    from promptrec.explain import Conversation
    from promptrec.serve.conversations import ConversationBusy, ConversationNotFound

    store = conversation_stores(max_conversations=2)
    first, second, third = (store.add(Conversation(rec, user)) for user in ("1", "2", "3"))
    assert len(store) == 2 and len({first.conversation_id, second.conversation_id, third.conversation_id}) == 3
    with pytest.raises(ConversationNotFound, match="closed: the server was full"):
        store.get(first.conversation_id, "1")  # the least recently used went first
    with pytest.raises(ConversationNotFound):
        store.get(second.conversation_id, "3")
    assert store.get(second.conversation_id, "2").conversation_id == second.conversation_id
    second.claim()
    with pytest.raises(ConversationBusy):
        store.get(second.conversation_id, "2").claim()  # busy for any holder of the id
    second.release()
    second.claim()
    second.release()
    # one client starting many conversations for one user closes only that user's older ones
    store = conversation_stores(max_conversations=100, max_per_user=2)
    others = store.add(Conversation(rec, "2"))
    flood = [store.add(Conversation(rec, "1")) for _ in range(5)]
    assert store.get(others.conversation_id, "2").conversation_id == others.conversation_id
    assert store.get(flood[-1].conversation_id, "1").conversation_id == flood[-1].conversation_id
    with pytest.raises(ConversationNotFound, match=r"closed: the user's newer conversations replaced it \(at most 2"):
        store.get(flood[0].conversation_id, "1")
    assert store.close_user("1", "the user was erased") >= 2
    with pytest.raises(ConversationNotFound):
        store.get(flood[-1].conversation_id, "1")


def test_health_reports_each_dependency(client, rec):
    from test_backend_contract import free_port

    health = client.get("/health").json()
    assert {d["name"]: d["ok"] for d in health["dependencies"]} == {"index files": True, "vector store": True,
                                                                            "live store": True}
    manifest = rec.settings.index_layout().live().manifest
    aside = manifest.with_name("manifest.aside")
    manifest.rename(aside)
    try:
        gone = client.get("/health").json()
    finally:
        aside.rename(manifest)
    assert gone["status"] == "degraded"
    assert [d["detail"] for d in gone["dependencies"] if d["name"] == "index files"] == [f"{manifest} is gone; run `promptrec index`"]
    dead = rec.settings.model_copy(update={"ranker": rec.settings.ranker.model_copy(update={
        "backend": "vllm-server", "server_url": f"http://127.0.0.1:{free_port()}/v1"})})
    other = Recommender(rec.items, rec.histories, rec.index, dead)
    with TestClient(create_app(other, preload=False), base_url="http://localhost") as down:
        body = down.get("/health").json()
    server = [d for d in body["dependencies"] if d["name"] == "generator server"]
    assert body["status"] == "degraded" and server and not server[0]["ok"] and "promptrec llm serve" in server[0]["detail"]


def test_client_mistakes_are_422s_naming_the_field_and_server_faults_say_so(client, rec, tmp_path):
    deep: dict = {"genre_Drama": True}
    for _ in range(200):
        deep = {"$and": [deep, {"genre_Drama": True}]}
    cases = [
        ({"user_id": "1", "where": {}}, ["body", "where"]),
        ({"user_id": "1", "where": deep}, ["body", "where"]),
        ({"user_id": "1", "where": {"item_id": {"$in": [str(i) for i in range(100_000)]}}}, ["body", "where"]),
        ({"user_id": "1", "where": {"\ud800": True}}, ["body", "where"]),
        ({"user_id": "1", "where": {"genre_comedy": True}}, ["body", "where"]),  # matches nothing: a typo
        ({"user_id": "1", "n_candidates": 30}, ["body", "n_candidates"]),  # letters labels 26 at most
        ({"history": ["1", "2", "1"]}, ["body", "history", 2]),
    ]
    for body, loc in cases:  # sent as ASCII JSON: a lone surrogate travels as its \u escape
        response = client.post("/recommend", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
        assert response.status_code == 422, (loc, response.status_code, response.text[:300])
        assert loc in [d["loc"] for d in response.json()["detail"]], (loc, response.text[:300])
        assert "/tmp/" not in response.text and "/root/" not in response.text
    nan = client.post("/recommend", content=b'{"user_id": "1", "where": {"year": NaN}}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 422 and nan.headers["content-type"].startswith("application/json")
    broken = tmp_path / "broken.j2"
    broken.write_text("{# strategy: letters #}\n{% block user %}{{ no_such_variable }}{% endblock %}\n", encoding="utf-8")
    settings = rec.settings.model_copy(update={"ranker": rec.settings.ranker.model_copy(update={"template": str(broken)})})
    with TestClient(create_app(Recommender(rec.items, rec.histories, rec.index, settings), preload=False),
                    base_url="http://localhost") as misconfigured:
        response = misconfigured.post("/recommend", json={"user_id": "1", "k": 3})
    assert response.status_code == 500 and "server's prompt template" in response.json()["detail"]
    assert str(tmp_path) not in response.text
