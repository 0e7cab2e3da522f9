"""`LLMBackend` over HTTP: an OpenAI-compatible server (`promptrec llm serve`, i.e. vLLM's
``api_server``, or any server that speaks the same API with log-probs).

Only httpx is needed on the client side; vLLM runs in the server's environment. Prompts are
rendered and tokenised here, with the tokenizer of the served model folder, and sent as token
ids, so the server scores exactly the tokens the transformers backend scores. On the first
request the client asks the server's ``/tokenize`` to split a probe text and refuses to go on
when it splits it differently (a server serving another model).

Requests, per protocol call:

* ``next_token_logprobs``: ``POST /v1/completions`` with all prompts in one batch,
  ``max_tokens=1``, ``temperature=0`` and ``logprob_token_ids=[...]`` (a vLLM extension):
  the full-vocabulary log-prob of exactly those ids, whatever their rank, which the standard
  ``logprobs=k`` (top k, capped by the server's ``max_logprobs``, 20 by default) cannot give.
  ``return_tokens_as_token_ids`` keys the answer by id (``"token_id:49"``), not by text. A
  server that ignores ``logprob_token_ids`` (another implementation, an older vLLM) is
  detected by the missing ids; the backend then scores each label as a one-token
  continuation (below), which is exact but costs one prompt per label.
  With prefix reuse on, the first prompt is sent alone so that the others read its cached
  blocks (requests in one engine step cannot share blocks).
* ``continuation_logprobs``: ``POST /v1/completions`` with ``echo=true``, ``logprobs=0``,
  ``max_tokens=0``: the standard OpenAI way to get the log-prob of every prompt token, which
  vLLM, like OpenAI's legacy API, supports. Each echoed token is checked against the id sent.
  vLLM does not read its prefix cache for requests that return prompt log-probs, so on the
  server every continuation is a full prefill (the in-process engine avoids that).
* ``chat`` / ``chat_stream``: ``POST /v1/chat/completions`` (streamed as server-sent events).

Failures: connection errors and HTTP 429/5xx are retried ``max_retries`` times with
exponential back-off; a read time-out is not retried (it already waited ``timeout_s``). After
the retries `ServerUnavailable` is raised, and for ``cooldown_s`` later calls fail at once
instead of waiting again (an evaluation run against a dead server degrades quickly). Other
4xx answers and malformed bodies (missing ids, non-finite or positive log-probs, wrong counts)
raise `ServerResponseError`. `LLMReranker` turns any of these into its degraded result:
the retrieval order, flagged ``degraded=True`` with the reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from promptrec.ranker.backends.base import TokenizerOps, continues_final_message, record_usage
from promptrec.ranker.backends.quoted import quoted_choices_regex
from promptrec.ranker.backends.vllm_common import ServerUnavailable, root_url, vllm_default, wait_until_ready
from promptrec.ranker.backends.vllm_engine import (
    MAX_LOGPROB_TOKEN_IDS,
    VLLMBackendError,
    check_logprob,
    common_prefix_length,
)

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from promptrec.config import Settings

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TOKENIZER_PROBE = "Hello <|im_start|>user\nToy Story (1995) A B C Yes No\n"


class _Retry(Exception):
    """A failure worth another try (connection refused or reset, HTTP 429/5xx); never escapes."""


class ServerResponseError(VLLMBackendError):
    """The server answered, but with an error or with something unusable."""


def _logprob(value: Any, what: str) -> float:
    try:
        return check_logprob(value, what)
    except VLLMBackendError as exc:
        raise ServerResponseError(f"/v1/completions: {exc}") from None


def _token_key_id(key: str) -> int | None:
    if key.startswith("token_id:"):
        try:
            return int(key[len("token_id:") :])
        except ValueError:
            return None
    return None


class VLLMServerBackend(TokenizerOps):
    """A model behind an OpenAI-compatible HTTP server, behind `LLMBackend`."""

    def __init__(
        self,
        base_url: str,
        tokenizer_path: str | Path,
        *,
        model: str | None = None,
        model_id: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = vllm_default("max_retries"),
        backoff_s: float = vllm_default("backoff_s"),
        cooldown_s: float = 10.0,
        api_key: str | None = None,
        reuse_prefix: bool = True,
        warm_prefix_tokens: int = 128,
        check_tokenizer: bool = True,
        client: "httpx.Client | None" = None,
    ):
        import httpx
        from transformers import AutoTokenizer

        self.base_url = root_url(base_url)
        self.tokenizer_path = Path(tokenizer_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        self.model = model
        self.model_id = model_id or model or self.tokenizer_path.name
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = float(backoff_s)
        self.cooldown_s = float(cooldown_s)
        self.reuse_prefix = reuse_prefix
        self.warm_prefix_tokens = int(warm_prefix_tokens)
        self._check_tokenizer = check_tokenizer
        self._checked = False
        self._down_until = 0.0
        self._lock = threading.Lock()  # guards the lazy checks only; requests run concurrently
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(self.timeout_s, connect=float(connect_timeout_s))
        self.client = client or httpx.Client(base_url=self.base_url, timeout=self._timeout, headers=headers)
        #: "logprob_token_ids" (vLLM) or "echo" (fallback for servers without the extension).
        self.label_mode = "logprob_token_ids"

    @classmethod
    def from_settings(cls, settings: "Settings", **kwargs: Any) -> "VLLMServerBackend":
        """The server at ``settings.ranker.server_url``, tokenizer from the generator's folder;
        client options from ``settings.ranker.vllm``."""
        from promptrec.assets import resolve_model

        path = kwargs.pop("model_path", None) or resolve_model(settings.generator, settings)
        model_id = kwargs.pop("model_id", None) or settings.generator
        options: dict[str, Any] = {"timeout_s": settings.ranker.timeout_s}
        if model_id != settings.generator:  # a tuned model is served under its own name
            options["model"] = model_id
        data = settings.ranker.vllm.model_dump()
        for ours, theirs in (
            ("timeout_s", "request_timeout_s"),
            ("max_retries", "max_retries"),
            ("backoff_s", "backoff_s"),
            ("api_key", "api_key"),
            ("model", "served_model_name"),
        ):
            if data.get(theirs) is not None:
                options[ours] = data[theirs]
        options.update(kwargs)
        return cls(settings.ranker.server_url, path, model_id=model_id, **options)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "VLLMServerBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def _retrying(self):
        """The one retry policy (tenacity): ``max_retries`` more tries after the first, waits
        doubling from ``backoff_s`` (at most 10 s), only on `_Retry` (refused, reset, 429/5xx)."""
        import tenacity

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=10.0),
            retry=tenacity.retry_if_exception_type(_Retry),
            reraise=True,
        )

    def _check_cooldown(self) -> None:
        now = time.monotonic()
        if now < self._down_until:
            raise ServerUnavailable(
                f"{self.base_url} did not answer a moment ago; not retrying for another "
                f"{self._down_until - now:.0f} s (is `promptrec llm serve` running?)"
            )

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One JSON call with retries and back-off; returns the decoded body."""
        import httpx

        self._check_cooldown()

        def once() -> Any:
            try:
                response = self.client.request(method, path, json=payload)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    raise _Retry(f"connect time-out ({exc})") from exc
                raise ServerUnavailable(f"{self.base_url}{path}: no answer within {self.timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in RETRY_STATUS:
                raise _Retry(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.status_code >= 400:
                raise ServerResponseError(f"{self.base_url}{path}: HTTP {response.status_code}: {_error_text(response)}")
            try:
                return response.json()
            except ValueError as exc:
                raise ServerResponseError(f"{self.base_url}{path}: the answer is not JSON: {response.text[:200]!r}") from exc

        try:
            return self._retrying()(once)
        except _Retry as exc:
            self._down_until = time.monotonic() + self.cooldown_s
            raise ServerUnavailable(
                f"{self.base_url}{path}: no answer after {self.max_retries + 1} tries ({exc}); "
                "start it with `promptrec llm serve`"
            ) from None

    def _served_model(self) -> str:
        if self.model is None:
            body = self._request("GET", "/v1/models")
            names = [m.get("id") for m in (body.get("data") or []) if isinstance(m, dict)]
            if not names:
                raise ServerResponseError(f"{self.base_url}/v1/models lists no model")
            self.model = self.model_id if self.model_id in names else names[0]
        return self.model

    def _prepare(self) -> str:
        """The served model name; on first use, checks the server's tokenizer against ours."""
        with self._lock:
            model = self._served_model()
            if self._check_tokenizer and not self._checked:
                try:
                    body = self._request(
                        "POST", "/tokenize", {"model": model, "prompt": TOKENIZER_PROBE, "add_special_tokens": False}
                    )
                except ServerResponseError:
                    body = None  # no /tokenize (not vLLM): nothing to compare with
                if body is not None:
                    ours = [int(i) for i in self.tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]]
                    theirs = body.get("tokens") if isinstance(body, dict) else None
                    if theirs != ours:
                        raise ServerResponseError(
                            f"{self.base_url} serves {model!r} with another tokenizer than {self.tokenizer_path} "
                            f"(probe: {theirs} vs {ours}); start the server with the same model folder"
                        )
                self._checked = True
            return model

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        """Block until the server answers ``/health`` and lists a model (or raise ServerUnavailable)."""

        wait_until_ready(self.base_url, timeout_s=timeout_s, poll_s=poll_s)

    # ------------------------------------------------------------------ protocol: scoring

    def _completions(self, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
        body = self._request("POST", "/v1/completions", {"model": self._prepare(), **payload})
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
            record_usage(usage["prompt_tokens"] - cached, cached=cached)
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise ServerResponseError(f"/v1/completions returned {got} choices for {n} prompts")
        try:
            return sorted(choices, key=lambda c: int(c.get("index", 0)))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ServerResponseError(f"/v1/completions returned malformed choices: {exc}") from exc

    def _label_batch(self, encoded: list[list[int]], chunk: list[int]) -> list[dict[int, float]]:
        choices = self._completions(
            {
                "prompt": encoded,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "logprob_token_ids": chunk,
                "return_tokens_as_token_ids": True,
            },
            len(encoded),
        )
        rows = []
        for i, choice in enumerate(choices):
            try:
                top = choice["logprobs"]["top_logprobs"][0]
            except (KeyError, IndexError, TypeError) as exc:
                raise ServerResponseError(f"/v1/completions: no log-probs for prompt {i}") from exc
            if not isinstance(top, dict):
                raise ServerResponseError(f"/v1/completions: malformed log-probs for prompt {i}")
            row = {}
            for key, value in top.items():
                tid = _token_key_id(str(key))
                if tid is not None:
                    row[tid] = _logprob(value, f"token {tid}, prompt {i}")
            rows.append(row)
        return rows

    def next_token_logprobs_grouped(
        self, groups: list[list[str]], token_ids: list[int], *, reuse_prefix: bool | None = None
    ) -> list[np.ndarray]:
        """One user's prompts a request group, the groups sent concurrently (the server batches
        them; each group's first prompt warms its prefix cache as in `next_token_logprobs`)."""
        import contextvars
        from concurrent.futures import ThreadPoolExecutor

        if len(groups) <= 1:
            return [self.next_token_logprobs(g, token_ids, reuse_prefix=reuse_prefix) for g in groups]

        def one(prompts: list[str]) -> np.ndarray:
            return self.next_token_logprobs(prompts, token_ids, reuse_prefix=reuse_prefix)

        with ThreadPoolExecutor(max_workers=min(len(groups), 16), thread_name_prefix="promptrec-vllm") as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, g) for g in groups]
            return [f.result() for f in futures]

    def next_token_logprobs(
        self, prompts: list[str], token_ids: list[int], *, reuse_prefix: bool | None = None
    ) -> np.ndarray:
        reuse = self.reuse_prefix if reuse_prefix is None else reuse_prefix
        ids = [int(t) for t in token_ids]
        result = np.zeros((len(prompts), len(ids)), dtype=np.float64)
        if not prompts or not ids:
            return result
        encoded = [self.encode(p) for p in prompts]
        if any(not e for e in encoded):
            raise ValueError("an empty prompt has no next token to score")
        unique = list(dict.fromkeys(ids))
        found: list[dict[int, float]] = [{} for _ in encoded]
        if self.label_mode == "logprob_token_ids":
            split = reuse and len(encoded) > 1 and common_prefix_length(encoded) >= self.warm_prefix_tokens
            groups = [encoded[:1], encoded[1:]] if split else [encoded]
            for start in range(0, len(unique), MAX_LOGPROB_TOKEN_IDS):
                chunk = unique[start : start + MAX_LOGPROB_TOKEN_IDS]
                rows = [row for group in groups for row in self._label_batch(group, chunk)]
                for i, row in enumerate(rows):
                    found[i].update({t: row[t] for t in chunk if t in row})
            if all(t in row for row in found for t in unique):
                return self._fill(result, ids, found)
            self.label_mode = "echo"  # the server ignores logprob_token_ids: score labels as continuations
        missing = [(i, t) for i, row in enumerate(found) for t in unique if t not in row]
        scored = self._echo_logprobs([encoded[i] + [t] for i, t in missing], [len(encoded[i]) for i, _ in missing])
        for (i, t), lp in zip(missing, scored):
            found[i][t] = lp
        return self._fill(result, ids, found)

    @staticmethod
    def _fill(result: np.ndarray, ids: list[int], found: list[dict[int, float]]) -> np.ndarray:
        for i, row in enumerate(found):
            for j, t in enumerate(ids):
                result[i, j] = row[t]
        return result

    def _echo_logprobs(self, token_lists: list[list[int]], starts: list[int]) -> list[float]:
        """Sum of the log-probs of tokens[start:] of each list (echo of the prompt, no generation)."""
        if not token_lists:
            return []
        choices = self._completions(
            {
                "prompt": token_lists,
                "max_tokens": 0,
                "echo": True,
                "logprobs": 0,
                "temperature": 0.0,
                "return_tokens_as_token_ids": True,
            },
            len(token_lists),
        )
        sums = []
        for i, (choice, tokens, start) in enumerate(zip(choices, token_lists, starts)):
            try:
                logprobs = choice["logprobs"]
                values, names = logprobs["token_logprobs"], logprobs["tokens"]
            except (KeyError, TypeError) as exc:
                raise ServerResponseError(f"/v1/completions: no echoed log-probs for prompt {i}") from exc
            if not isinstance(values, list) or not isinstance(names, list) or len(values) < len(tokens):
                raise ServerResponseError(f"/v1/completions: echoed {len(values or [])} log-probs for {len(tokens)} tokens")
            total = 0.0
            for pos in range(start, len(tokens)):
                echoed = _token_key_id(str(names[pos]))
                if echoed is not None and echoed != tokens[pos]:
                    raise ServerResponseError(
                        f"/v1/completions: echoed token {echoed} at position {pos}, sent {tokens[pos]}"
                    )
                total += _logprob(values[pos], f"prompt {i}, position {pos}")
            sums.append(total)
        return sums

    def continuation_logprobs(
        self, prefix: str, continuations: list[str], *, reuse_prefix: bool | None = None
    ) -> list[float]:
        if not continuations:
            return []
        prefix_ids, suffixes = self.continuation_token_ids(prefix, continuations)
        start = max(len(prefix_ids), 1)
        full = [prefix_ids + s for s in suffixes]
        if any(len(f) <= start for f in full):
            raise ValueError("every continuation needs a token after the prefix")
        return self._echo_logprobs(full, [start] * len(full))

    # ------------------------------------------------------------------ protocol: generation

    # chat() and chat_stream() take ``quoted``: quoted text must be one of these strings, held
    # by the server's structured outputs (a regex, `quoted_choices_regex`).
    constrains_quotes = True

    def _chat_payload(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float,
                      quoted: Sequence[str] | None = None) -> dict:
        payload = {
            "model": self._prepare(),
            "messages": messages,
            "max_tokens": int(max_new_tokens),
            "temperature": float(max(temperature, 0.0)),
        }
        if continues_final_message(messages):  # vLLM's chat API continues the open assistant message
            payload.update(add_generation_prompt=False, continue_final_message=True)
        regex = quoted_choices_regex(quoted, messages[-1]["content"] if continues_final_message(messages) else "") \
            if quoted else None
        if regex is not None:
            payload["structured_outputs"] = {"regex": regex}
        return payload

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
             quoted: Sequence[str] | None = None) -> str:
        body = self._request("POST", "/v1/chat/completions",
                             self._chat_payload(messages, max_new_tokens, temperature, quoted))
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ServerResponseError(f"/v1/chat/completions: no message in {str(body)[:200]!r}") from exc
        if not isinstance(content, str):
            raise ServerResponseError("/v1/chat/completions: the message has no text")
        return content.strip()

    def chat_stream(
        self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0, *,
        quoted: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces from a streamed chat completion; closing the iterator closes the
        connection (the server then aborts the request). Connection failures before the first
        byte are retried like any request."""
        import httpx

        payload = {**self._chat_payload(messages, max_new_tokens, temperature, quoted), "stream": True}

        def events(response: Any) -> Iterator[str]:
            first = True
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                    raise ServerResponseError(f"/v1/chat/completions: malformed event {data[:200]!r}") from exc
                if delta and first:
                    delta = delta.lstrip()
                if delta:
                    first = False
                    yield delta

        def pieces() -> Iterator[str]:
            yielded = False
            try:
                for attempt in self._retrying():
                    with attempt:
                        try:
                            with self.client.stream("POST", "/v1/chat/completions", json=payload) as response:
                                if response.status_code in RETRY_STATUS:
                                    raise _Retry(f"HTTP {response.status_code}")
                                if response.status_code >= 400:
                                    response.read()
                                    raise ServerResponseError(
                                        f"/v1/chat/completions: HTTP {response.status_code}: {_error_text(response)}"
                                    )
                                for delta in events(response):
                                    yielded = True
                                    yield delta
                                return
                        except httpx.TimeoutException as exc:
                            raise ServerUnavailable(
                                f"/v1/chat/completions: no answer within {self.timeout_s:g} s") from exc
                        except httpx.TransportError as exc:
                            if yielded:  # a retry would repeat what the caller already has
                                raise ServerUnavailable(f"/v1/chat/completions: the stream broke ({exc})") from exc
                            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            except _Retry as exc:
                raise ServerUnavailable(
                    f"{self.base_url}/v1/chat/completions: no answer after retries ({exc})") from None

        return pieces()


def _error_text(response: Any) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict):
                return str(err.get("message") or err)[:300]
            return str(err)[:300]
    except ValueError:
        pass
    return response.text[:300]
