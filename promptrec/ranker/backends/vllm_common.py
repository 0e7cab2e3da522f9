"""What the vLLM engine backend, the vLLM server backend and `promptrec llm serve` share: the
one copy of the vLLM defaults (from `VLLMSettings`), the CPU block size, GPU detection, the
error types, and the server readiness probe. Importing it does not import vLLM."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from promptrec.config import RankerSettings, VLLMSettings
from promptrec.errors import PromptrecError


def vllm_default(name: str) -> Any:
    """The default of a vLLM option: the `VLLMSettings` field (settings.ranker.vllm) of that name,
    else the `RankerSettings` one (e.g. a ``dtype`` shared by every backend). The one copy."""
    for model in (VLLMSettings, RankerSettings):
        if name in model.model_fields:
            field = model.model_fields[name]
            return field.default_factory() if field.default_factory is not None else field.default
    raise KeyError(f"no vLLM setting {name!r}")


#: Engine options and their defaults, read from the settings models (see `vllm_default`).
DEFAULT_ENGINE_OPTIONS: dict[str, Any] = {
    key: vllm_default(key)
    for key in ("dtype", "max_model_len", "kv_cache_gib", "enforce_eager", "block_size", "max_num_seqs", "seed")
}
DEFAULT_READY_TIMEOUT_S = 300.0

#: KV block size on CPUs. Prefix caching reuses whole blocks only: with vLLM's CPU default of
#: 128 a 270-token yes/no prompt reuses 128 tokens of its 240 shared ones, with 32 it reuses
#: 224. Measured with benchmarks/vllm_backends.py (two 2-user runs, one per block size): yesno
#: 2.0 -> 1.0 s and likelihood 3.0 -> 2.1 s per user, letters unchanged. The CPU attention
#: backend wants multiples of 32.
CPU_BLOCK_SIZE = 32


class VLLMBackendError(PromptrecError):
    """vLLM failed or returned something unusable (missing or non-finite log-probs)."""


class ServerUnavailable(VLLMBackendError):
    """The server did not answer (refused, reset, 5xx) after the retries."""


class ServerStartError(PromptrecError):
    """The vLLM server could not be started or did not become ready."""


def has_gpu() -> bool:
    """A CUDA device is visible (cheap check: no torch import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def root_url(url: str) -> str:
    """``http://host:port`` from a base URL that may end in ``/v1``."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def probe(url: str, timeout_s: float = 2.0) -> str | None:
    """None when the server at ``url`` is ready (``/health`` 200 and a model listed), else why not."""
    import httpx

    root = root_url(url)
    try:
        with httpx.Client(timeout=timeout_s) as client:
            health = client.get(f"{root}/health")
            if health.status_code != 200:
                return f"/health answered HTTP {health.status_code}"
            models = client.get(f"{root}/v1/models")
            if models.status_code != 200:
                return f"/v1/models answered HTTP {models.status_code}"
            if not models.json().get("data"):
                return "/v1/models lists no model"
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def wait_until_ready(
    url: str,
    timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    poll_s: float = 1.0,
    process: "subprocess.Popen[Any] | None" = None,
    log_path: Path | None = None,
) -> float:
    """Poll until the server is ready; returns the seconds waited. Raises ServerStartError when
    ``process`` exits first (with the end of its log) or the time runs out."""
    start = time.monotonic()
    reason = "not polled yet"
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"the vLLM server exited with code {process.returncode} before it was ready" + _log_tail(log_path)
            )
        reason = probe(url) or ""
        if not reason:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            message = f"the server at {url} was not ready after {timeout_s:g} s ({reason})"
            if process is None:
                raise ServerUnavailable(message)
            raise ServerStartError(message + _log_tail(log_path))
        time.sleep(poll_s)


def _log_tail(log_path: Path | None, lines: int = 25) -> str:
    if log_path is None or not Path(log_path).exists():
        return ""
    text = Path(log_path).read_text(errors="replace").splitlines()
    useful = [line for line in text if "is ignored: it is neither" not in line]
    return "\n--- server log (end) ---\n" + "\n".join(useful[-lines:])
