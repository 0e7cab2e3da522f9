"""The HTTP backend and `promptrec llm`: failure handling against scripted answers (no vLLM
needed), then a real vLLM server (the defaults: dtype auto, prefix caching) under `recommend()` and `promptrec eval`.

Tests marked ``vllm`` start a real server (``.venv-vllm/bin/python -m pytest -m vllm``); under
CI=true a missing vLLM fails them.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from ranker_support import MODEL_NAME, model_dir
from test_backend_contract import HISTORY, candidate_list, require_vllm
from typer.testing import CliRunner

from promptrec import llm_server
from promptrec.config import RankerSettings, Settings
from promptrec.eval.suite import named_suites
from promptrec.hardware import resolve_dtype_name
from promptrec.llm_server import ServerOptions, ServerStartError, llm_app, server_command, server_env
from promptrec.ranker.backends.vllm_server import (
    ServerResponseError,
    ServerUnavailable,
    VLLMServerBackend,
    root_url,
)
from promptrec.ranker.reranker import LLMReranker

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- scripted server


class Scripted:
    """An OpenAI-compatible server's answers, computed from the real tokenizer; ``mode`` breaks them."""

    def __init__(self, tokenizer, mode: str = "ok", fail_first: int = 0):
        self.tokenizer = tokenizer
        self.mode = mode
        self.fail_first = fail_first
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        self.calls.append((path, body))
        if self.fail_first:
            self.fail_first -= 1
            return httpx.Response(503, json={"error": {"message": "busy"}})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": MODEL_NAME}]})
        if path == "/tokenize":
            text = body["prompt"] + (" extra" if self.mode == "other-tokenizer" else "")
            return httpx.Response(200, json={"tokens": self.tokenizer(text, add_special_tokens=False)["input_ids"]})
        if path == "/v1/completions":
            if self.mode == "not-json":
                return httpx.Response(200, text="<html>proxy error</html>")
            prompts = body["prompt"]
            if self.mode == "wrong-count":
                prompts = prompts[:-1]
            return httpx.Response(200, json={"choices": [self._choice(i, p, body) for i, p in enumerate(prompts)]})
        if path == "/v1/chat/completions":
            words = ["Try", " Blade", " Runner", "."]
            if body.get("stream"):
                events = [{"choices": [{"delta": {"content": w}}]} for w in words]
                text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json={"choices": [{"message": {"content": " " + "".join(words) + " "}}]})
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    def _choice(self, index: int, prompt: list[int], body: dict) -> dict:
        if body.get("echo"):
            values = [None] + [-0.25 - 0.01 * t % 1 for t in prompt[1:]]
            return {"index": index, "logprobs": {"tokens": [f"token_id:{t}" for t in prompt], "token_logprobs": values}}
        ids = body.get("logprob_token_ids") or []
        if self.mode == "ignores-ids":  # a server without the extension: only the sampled token
            top = {"token_id:7": -0.1}
        else:
            top = {f"token_id:{t}": -1.0 - 0.1 * j for j, t in enumerate(ids)}
        if self.mode == "positive":
            top = {k: 0.7 for k in top}
        if self.mode == "missing" and top:
            top.pop(next(iter(top)))
        return {"index": index, "logprobs": {"top_logprobs": [top]}}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir())


def scripted_backend(tokenizer, mode: str = "ok", **kwargs) -> tuple[VLLMServerBackend, Scripted]:
    server = Scripted(tokenizer, mode, fail_first=kwargs.pop("fail_first", 0))
    client = httpx.Client(transport=httpx.MockTransport(server), base_url="http://scripted")
    kwargs.setdefault("backoff_s", 0.0)
    backend = VLLMServerBackend("http://scripted/v1", model_dir(), model_id=MODEL_NAME, client=client, **kwargs)
    return backend, server


def test_root_url():
    assert root_url("http://h:1/v1/") == "http://h:1" and root_url("http://h:1") == "http://h:1"


@pytest.mark.integration
def test_requests_carry_token_ids_and_label_ids(tokenizer):
    backend, server = scripted_backend(tokenizer)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nAnswer:"] * 2
    ids = backend.label_token_ids([" A", " B", " C"])
    got = backend.next_token_logprobs(prompts, ids + [ids[0]])
    np.testing.assert_allclose(got, [[-1.0, -1.1, -1.2, -1.0]] * 2)
    paths = [p for p, _ in server.calls]
    assert paths[:2] == ["/v1/models", "/tokenize"]  # discovery and the tokenizer check, once
    body = server.calls[2][1]
    assert body["model"] == MODEL_NAME and body["max_tokens"] == 1 and body["logprob_token_ids"] == ids
    assert body["prompt"] == [backend.encode(prompts[0])] * 2 and body["return_tokens_as_token_ids"]
    conts = backend.continuation_logprobs("Movie:", [" Heat", " Fargo"])
    echo = server.calls[-1][1]
    assert echo["echo"] and echo["max_tokens"] == 0 and echo["logprobs"] == 0
    assert len(conts) == 2 and all(c < 0 for c in conts)


@pytest.mark.integration
def test_server_without_logprob_token_ids_falls_back_to_echo(tokenizer):
    backend, server = scripted_backend(tokenizer, "ignores-ids")
    ids = backend.label_token_ids([" A", " B"])
    got = backend.next_token_logprobs(["Pick one. Answer:"], ids)
    assert backend.label_mode == "echo" and got.shape == (1, 2) and np.all(got < 0)
    last = server.calls[-1][1]
    assert last["echo"] and [p[-1] for p in last["prompt"]] == ids


@pytest.mark.integration
def test_retries_with_backoff_then_succeeds(tokenizer):
    backend, server = scripted_backend(tokenizer, fail_first=2, max_retries=3)
    assert backend.chat([{"role": "user", "content": "hi"}], 8) == "Try Blade Runner."
    assert len(server.calls) >= 3


@pytest.mark.integration
@pytest.mark.parametrize("mode, match", [
    ("positive", "not a log-probability"),
    ("wrong-count", "choices for 2 prompts"),
    ("not-json", "not JSON"),
    ("other-tokenizer", "another tokenizer"),
])
def test_garbage_answers_raise_clear_errors(tokenizer, mode, match):
    backend, _ = scripted_backend(tokenizer, mode)
    with pytest.raises(ServerResponseError, match=match):
        backend.next_token_logprobs(["a prompt", "another prompt"], backend.label_token_ids([" A"]))


@pytest.mark.integration
def test_garbage_degrades_the_rerank_to_retrieval_order(tokenizer):
    backend, _ = scripted_backend(tokenizer, "positive")
    result = LLMReranker(backend, "letters", timeout_s=None).run(HISTORY, candidate_list())
    assert result.degraded and "ServerResponseError" in result.degraded_reason
    assert [c.retrieval_rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))


@pytest.mark.integration
def test_http_errors_are_reported_not_retried(tokenizer):
    backend, server = scripted_backend(tokenizer)
    with pytest.raises(ServerResponseError, match="HTTP 404"):
        backend._request("GET", "/v1/nowhere")
    assert len(server.calls) == 1


@pytest.mark.integration
def test_chat_stream_parses_server_sent_events(tokenizer):
    backend, _ = scripted_backend(tokenizer)
    assert list(backend.chat_stream([{"role": "user", "content": "hi"}], 8)) == ["Try", " Blade", " Runner", "."]


@pytest.mark.integration
def test_chat_stream_retries_before_the_first_byte_and_can_be_closed(tokenizer):
    backend, server = scripted_backend(tokenizer, fail_first=2, max_retries=3, check_tokenizer=False, model=MODEL_NAME)
    stream = backend.chat_stream([{"role": "user", "content": "hi"}], 8)
    assert next(stream) == "Try"
    stream.close()  # closing mid-stream ends the generator, no retry
    assert len(server.calls) == 3
    backend, server = scripted_backend(tokenizer, fail_first=5, max_retries=1, check_tokenizer=False, model=MODEL_NAME)
    with pytest.raises(ServerUnavailable, match="no answer after retries"):
        list(backend.chat_stream([{"role": "user", "content": "hi"}], 8))
    assert len(server.calls) == 2


@pytest.mark.integration
def test_dead_server_fails_fast_and_degrades(tokenizer):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = VLLMServerBackend(url, model_dir(), model_id=MODEL_NAME, max_retries=2, backoff_s=0.05, cooldown_s=30)
    result = LLMReranker(backend, "yesno", timeout_s=30).run(HISTORY, candidate_list())
    assert result.degraded and "ServerUnavailable" in result.degraded_reason
    assert "promptrec llm serve" in result.degraded_reason and "after 3 tries" in result.degraded_reason
    with pytest.raises(ServerUnavailable, match="not retrying"):  # within the cool-down: no new tries
        backend.chat([{"role": "user", "content": "hi"}], 4)


# ----------------------------------------------------------------------------- llm_server (no vLLM)


def test_options_follow_the_settings_url(tmp_path):
    settings = Settings(cache_dir=tmp_path, ranker=RankerSettings(server_url="http://127.0.0.1:8123/v1"))
    options = ServerOptions.from_settings(settings, model_path=tmp_path)
    assert (options.host, options.port, options.served_model_name) == ("127.0.0.1", 8123, settings.generator)
    assert options.url == "http://127.0.0.1:8123/v1"


def test_server_command_and_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(llm_server, "has_gpu", lambda: False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    options = ServerOptions(tmp_path, served_model_name=MODEL_NAME, port=8124, python=sys.executable)
    cmd = server_command(options)
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    auto = resolve_dtype_name("auto", "cpu")  # bfloat16 only where this CPU has a bf16 path
    for flag in ("--enable-prefix-caching", "--enforce-eager", f"--dtype {auto}", "--port 8124",
                 f"--served-model-name {MODEL_NAME}", f"--model {tmp_path}", "--block-size 32"):
        assert flag in joined
    assert server_env(options, base={})["VLLM_CPU_KVCACHE_SPACE"] == "1"
    monkeypatch.setattr(llm_server, "has_gpu", lambda: True)
    assert "--enforce-eager" not in server_command(options) and "--block-size" not in server_command(options)
    assert "VLLM_CPU_KVCACHE_SPACE" not in server_env(options, base={})


def test_missing_vllm_python_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTREC_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ServerStartError, match="PROMPTREC_VLLM_PYTHON"):
        llm_server.find_vllm_python()


@pytest.mark.integration
def test_server_that_exits_early_reports_its_log(monkeypatch, tmp_path):
    monkeypatch.setattr(llm_server, "SERVER_MODULE", "promptrec_no_such_module")
    options = ServerOptions(tmp_path, served_model_name=MODEL_NAME, port=free_port(), python=sys.executable)
    with pytest.raises(ServerStartError, match="No module named promptrec_no_such_module"):
        llm_server.start_server(options, log_path=tmp_path / "server.log", ready_timeout_s=30)


@pytest.mark.integration
def test_cli_ready_and_dry_run(monkeypatch):
    runner = CliRunner()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = runner.invoke(llm_app, ["ready", "--url", dead, "--timeout", "0"])
    assert result.exit_code == 1 and "not ready" in result.output
    result = runner.invoke(llm_app, ["ready", "--url", dead, "--timeout", "1.5"])
    assert result.exit_code == 1
    result = runner.invoke(llm_app, ["serve", "--dry-run", "--python", sys.executable, "--port", "8125"])
    assert result.exit_code == 0, result.output
    assert "vllm.entrypoints.openai.api_server" in result.output and "--port 8125" in result.output


# ----------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_vllm()
    options = ServerOptions(model_dir(), served_model_name=MODEL_NAME, port=free_port())  # dtype auto, caching on
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with llm_server.start_server(options, log_path=log, ready_timeout_s=600) as running:
        yield running


@pytest.mark.vllm
def test_cli_ready_sees_the_server(server):
    result = CliRunner().invoke(llm_app, ["ready", "--url", server.url, "--timeout", "5"])
    assert result.exit_code == 0 and "ready" in result.output


@pytest.mark.vllm
@pytest.mark.integration
def test_recommend_through_the_server_unchanged(server, ml_slice, asset_settings, tmp_path):
    from promptrec import Recommender
    from promptrec.data.preprocess import temporal_split

    settings = asset_settings.model_copy(update={
        "index_dir": tmp_path / "index",
        "n_candidates": 10,
        "ranker": RankerSettings(backend="vllm-server", server_url=server.url, permutations=1, history_items=5),
    })
    rec = Recommender.from_interactions(ml_slice[0], temporal_split(ml_slice[1]).history_for_test(), settings,
                                        namespace="vllm")
    assert isinstance(rec.backend, VLLMServerBackend)
    for template in ("letters", "yesno"):
        result = rec.recommend("1", k=5, template=template)
        assert not result.degraded, result.degraded_reason
        assert result.model_id == MODEL_NAME and len(result.recommendations) == 5
        assert all(r.llm_score is not None for r in result.recommendations)


@pytest.mark.vllm
@pytest.mark.integration
def test_eval_suite_through_the_server_unchanged(server, asset_settings, tmp_path, monkeypatch):
    from promptrec.eval import parse_suite, run_suite
    from promptrec.eval.runner import read_results

    monkeypatch.setenv("PROMPTREC_RANKER__SERVER_URL", server.url)
    text = named_suites()["smoke"].read_text()
    text = text.replace('backends = ["transformers"]', 'backends = ["vllm-server"]')
    text = text.replace('rankers = ["popularity", "retrieval", "als"]', 'rankers = ["popularity"]')
    text = text.replace("[calibration]\nenabled = true", "[calibration]\nenabled = false")
    assert "enabled = false" in text
    assert '"vllm-server"' in text
    suite = parse_suite(text, "smoke-vllm")
    settings = asset_settings.model_copy(update={
        "index_dir": tmp_path / "index",
        "ranker": asset_settings.ranker.model_copy(update={"server_url": server.url}),
    })
    result = run_suite(suite, tmp_path / "run", settings=settings, progress=False)
    assert result.complete
    rows = [r for r in read_results(result.run_dir) if r["ranker"].endswith("/vllm-server")]
    assert len(rows) == suite.grid.users
    assert not any(r.get("degraded") for r in rows), [r.get("degraded_reason") for r in rows]
