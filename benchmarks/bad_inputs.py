"""Rerun the bad-input campaign of issue 10 and count each case's verdict.

    python benchmarks/bad_inputs.py            # every case (builds a small index; ~2-5 minutes)
    python benchmarks/bad_inputs.py --no-cli   # without the command-line subprocess cases

Each case does one hostile but realistic thing (a bad template, a bad setting, a damaged index
file, a bad data row, an unknown user or item, an LLM that fails or times out, a server that is
down) and says what a user should get: an error (whose message must contain a given text: the
file, field or setting, or the fix) or a handled result (a flagged degradation, a cold start, a
mended index). The verdict:

* clear error: a promptrec error (or a settings/validation error) whose message has the text;
* handled: the result is what the case expects;
* silent: no error and not the expected handling (a plausible but wrong result);
* unclear: an exception that is not a promptrec error, or whose message lacks the text;
* crash: a command-line run that aborted (a signal, exit 134).

Real parts throughout: MovieLens-100K (the first 40 users), the MiniLM encoder, embedded Chroma,
a real `chroma run` server; the generator's failures use small stand-in backends, and the
command-line cases run the real SmolLM2 model in a subprocess.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptrec.config import ChromaSettings, RankerSettings, RetrievalSettings, Settings  # noqa: E402
from promptrec.errors import PromptrecError  # noqa: E402

VERDICTS = ("clear error", "handled", "silent", "unclear", "crash")


@dataclass
class Case:
    category: str
    name: str
    run: Callable[[], Any]
    error: str | None = None  # expected: an error whose message contains this text
    handled: Callable[[Any], bool] | None = None  # expected: a result this accepts


def verdict(case: Case) -> tuple[str, str]:
    try:
        result = case.run()
    except Exception as exc:  # noqa: BLE001 - classified below
        from pydantic import ValidationError

        message = " ".join(str(exc).split())
        ours = isinstance(exc, (PromptrecError, ValidationError))
        if case.error is not None and ours and case.error.lower() in message.lower():
            return "clear error", message[:110]
        return "unclear", f"{type(exc).__name__}: {message[:100]}"
    if isinstance(result, dict) and "returncode" in result:  # a command-line run
        if result["returncode"] < 0 or result["returncode"] == 134 or "terminate called" in result["stderr"]:
            return "crash", f"exit {result['returncode']}: {result['stderr'][-100:]}"
    if case.handled is not None and case.handled(result):
        return "handled", _short(result)
    return "silent", _short(result)


def _short(result: Any) -> str:
    if isinstance(result, dict) and "returncode" in result:
        return f"exit {result['returncode']}: {' '.join((result['stderr'] or result['stdout']).split())[-100:]}"
    return " ".join(repr(result).split())[:110]


# --------------------------------------------------------------------------- fixtures


class Constant:
    """A stand-in generator: instant, equal log-probs; subclasses fail in chosen ways."""

    model_id = "stand-in"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def render_chat(self, messages):
        return "\n".join(m["content"] for m in messages) + "\n"

    def label_token_ids(self, labels):
        return list(range(len(labels)))

    def count_tokens(self, text):
        return len(text.split())

    def next_token_logprobs(self, prompts, token_ids):
        with self._lock:
            return np.log(np.full((len(prompts), len(token_ids)), 0.01))

    def continuation_logprobs(self, prefix, continuations):
        return [-1.0] * len(continuations)


class Raising(Constant):
    def next_token_logprobs(self, prompts, token_ids):
        raise RuntimeError("CUDA error: device-side assert")


class NaNs(Constant):
    def next_token_logprobs(self, prompts, token_ids):
        return np.full((len(prompts), len(token_ids)), np.nan)


class Short(Constant):
    def next_token_logprobs(self, prompts, token_ids):
        return np.zeros((len(prompts), len(token_ids) - 1))


class Gated(Constant):
    """Holds the backend for `hold_s` on its first call (a computation outliving its timeout)."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s, self.calls = hold_s, 0

    def next_token_logprobs(self, prompts, token_ids):
        with self._lock:
            self.calls += 1
            if self.calls == 1:
                time.sleep(self.hold_s)
            return np.log(np.full((len(prompts), len(token_ids)), 0.01))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class World:
    """The slice, its index and a workspace, built once."""

    def __init__(self, root: Path, base: Settings):
        from promptrec.data.named import load_named_dataset
        from promptrec.recommender import Recommender

        self.root = root
        self.base = base
        data = load_named_dataset("movielens-100k", base)
        frame = data.interactions
        users = sorted(frame["user_id"].unique(), key=int)[:40]
        self.frame = frame[frame["user_id"].isin(users)].reset_index(drop=True)
        seen = set(self.frame["item_id"])
        self.items = [it for it in data.items if it.item_id in seen]
        self.settings = base.model_copy(update={"index_dir": root / "main", "n_candidates": 10})
        self.rec = Recommender.from_interactions(self.items, self.frame, self.settings, namespace="campaign")

    def copy_index(self, name: str) -> Settings:
        """A fresh copy of the built index (to damage), and settings pointing at it."""
        from chromadb.api.shared_system_client import SharedSystemClient

        target = self.root / name
        shutil.copytree(self.root / "main", target)
        SharedSystemClient._identifier_to_system.pop(str(target / "chroma"), None)
        return self.settings.model_copy(update={"index_dir": target})

    def open(self, settings: Settings):
        from promptrec.recommender import Recommender

        return Recommender.open(self.items, self.frame, settings, "campaign")

    def reranker_run(self, backend, timeout_s: float = 5.0, n: int = 5, template: str = "letters"):
        from promptrec.ranker.reranker import LLMReranker

        found = self.rec.candidates("1", n)
        return LLMReranker(backend, template, timeout_s=timeout_s).run([self.rec.item(i) for i in found.history], found)


# --------------------------------------------------------------------------- the cases


def template_cases(w: World, tmp: Path) -> list[Case]:
    from promptrec.ranker.factory import make_reranker
    from promptrec.ranker.prompts import RerankTemplate, load_template

    def tpl(source: str) -> Callable[[], Any]:
        return lambda: RerankTemplate.from_string(source, name="campaign.j2")

    def file(source: str) -> Callable[[], Any]:
        path = tmp / f"t{abs(hash(source))}.j2"
        path.write_text(source, encoding="utf-8")
        return lambda: load_template(path)

    c = "bad templates"
    return [
        Case(c, "misspelt variable", file("{# strategy: letters #}\n{% for h in histroy %}{{ h.text }}{% endfor %}"),
             error="histroy"),
        Case(c, "misspelt variable in the cold-start branch",
             tpl("{# strategy: yesno #}\n{% if history %}{{ candidate.title }}{% else %}{{ candidat.title }}{% endif %}"),
             error="candidat"),
        Case(c, "{% include %}", tpl('{# strategy: letters #}\n{% include "letters.j2" %}'), error="include"),
        Case(c, "{% extends %}", tpl('{# strategy: letters #}\n{% extends "letters.j2" %}'), error="extends"),
        Case(c, "blocked attribute", tpl("{# strategy: yesno #}\n{{ candidate.title.__class__ }}"), error="unsafe"),
        Case(c, "empty user block", tpl("{# strategy: yesno #}\n{% block user %} {% endblock %}"), error="empty"),
        Case(c, "no strategy line", tpl("Pick one of {{ candidates }}"), error="declare the scoring strategy"),
        Case(c, "unknown strategy", tpl("{# strategy: pairwise #}\nx"), error="unknown strategy"),
        Case(c, "syntax error", file("{# strategy: letters #}\n{% for x in %}\n"), error="line 2"),
        Case(c, "template name that does not exist", lambda: load_template("leters"), error="no rerank template"),
        Case(c, "30 candidates for 26 letters", lambda: make_reranker(Settings(n_candidates=30), Constant()),
             error="26"),
        Case(c, "30 candidates passed to recommend()",
             lambda: w.reranker_run(Constant(), n=30), error="26 candidates at most"),
    ]


def settings_cases(w: World, tmp: Path) -> list[Case]:
    c = "bad settings"

    def toml(text: str) -> Callable[[], Any]:
        path = tmp / f"s{abs(hash(text))}.toml"
        path.write_text(text, encoding="utf-8")

        def run():
            with env(PROMPTREC_CONFIG=str(path)):
                return Settings()

        return run

    def with_env(**values: str) -> Callable[[], Any]:
        def run():
            with env(**values):
                return Settings()

        return run

    return [
        Case(c, "unknown top-level key", lambda: Settings(n_candidate=5), error="n_candidate"),
        Case(c, "unknown nested key in TOML", toml('[ranker]\ntemplatee = "yesno"\n'), error="templatee"),
        Case(c, "unknown [ranker.vllm] key", toml('[ranker.vllm]\ndtypee = "float32"\n'), error="dtypee"),
        Case(c, "unknown [chroma] key", toml("[chroma]\nprot = 9000\n"), error="prot"),
        Case(c, "invalid TOML", toml('dataset = "movielens-100k"\n[ranker\n'), error="line 2"),
        Case(c, "unknown PROMPTREC_ variable", with_env(PROMPTREC_RANKER__TEMPLATEE="yesno"),
             error="PROMPTREC_RANKER__TEMPLATEE"),
        Case(c, "PROMPTREC_CONFIG names a missing file", with_env(PROMPTREC_CONFIG=str(tmp / "nope.toml")),
             error="nope.toml"),
        Case(c, "timeout_s = 0", lambda: RankerSettings(timeout_s=0), error="timeout_s"),
        Case(c, "timeout_s < 0", lambda: RankerSettings(timeout_s=-5), error="timeout_s"),
        Case(c, "every fusion weight 0", lambda: RetrievalSettings(weights={"transitions": 0, "text": 0}),
             error="every fusion weight is 0"),
        Case(c, "negative fusion weight", lambda: RetrievalSettings(weights={"transitions": 1, "text": -1}),
             error=">= 0"),
        Case(c, "misspelt source", lambda: RetrievalSettings(weights={"transition": 1.0}),
             error="unknown retrieval source"),
        Case(c, "n_candidates = 0", lambda: Settings(n_candidates=0), error="n_candidates"),
        Case(c, "unknown backend", lambda: RankerSettings(backend="vllm"), error="backend"),
        Case(c, "permutations = 0", lambda: RankerSettings(permutations=0), error="permutations"),
    ]


def index_cases(w: World, tmp: Path) -> list[Case]:
    from promptrec.recommender import Recommender

    c = "broken index files"

    def truncated(name: str) -> Callable[[], Any]:
        def run():
            s = w.copy_index(f"trunc-{name}")
            path = s.resolved_index_dir() / name
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            return w.open(s)

        return run

    def corrupt_chroma():
        s = w.copy_index("chroma-bad")
        (s.resolved_index_dir() / "chroma" / "chroma.sqlite3").write_bytes(b"garbage" * 200)
        return w.open(s)

    def mended(name: str, rebuild: bool) -> Callable[[], Any]:
        def run():
            s = w.copy_index(f"mend-{name}-{rebuild}")
            path = s.resolved_index_dir() / name
            if name == "chroma.sqlite3":
                path = s.resolved_index_dir() / "chroma" / name
                path.write_bytes(b"garbage" * 200)
            else:
                path.write_bytes(path.read_bytes()[:100])
            rec = Recommender.from_interactions(w.items, w.frame, s, namespace="campaign", rebuild=rebuild)
            return w.open(s).candidates("1", 5)

        return run

    def other_data():
        s = w.copy_index("other-data")
        return Recommender.open(w.items, w.frame.iloc[:-5], s, "campaign")

    def not_a_folder():
        blocker = tmp / "a-file"
        blocker.write_text("x")
        return Recommender.from_interactions(w.items, w.frame, w.settings.model_copy(
            update={"index_dir": blocker / "index"}), namespace="campaign")

    def no_index():
        return w.open(w.settings.model_copy(update={"index_dir": tmp / "never-built"}))

    ok = lambda found: len(found.candidates) == 5  # noqa: E731
    return [
        Case(c, "truncated manifest.json", truncated("manifest.json"), error="manifest.json"),
        Case(c, "truncated sequential.npz", truncated("sequential.npz"), error="sequential.npz"),
        Case(c, "corrupt chroma.sqlite3", corrupt_chroma, error="promptrec index --rebuild"),
        Case(c, "plain `index` after a truncated sequential.npz", mended("sequential.npz", False), handled=ok),
        Case(c, "plain `index` after a truncated manifest.json", mended("manifest.json", False), handled=ok),
        Case(c, "`index --rebuild` after a corrupt chroma.sqlite3", mended("chroma.sqlite3", True), handled=ok),
        Case(c, "index built from other data", other_data, error="fingerprint"),
        Case(c, "index folder cannot be created", not_a_folder, error="a-file"),
        Case(c, "no index built yet", no_index, error="promptrec index"),
    ]


def data_cases(w: World, tmp: Path) -> list[Case]:
    import pandas as pd

    from promptrec.data.loaders import load_interactions
    from promptrec.recommender import Recommender

    c = "bad data rows"

    def repeated():
        frame = pd.concat([w.frame, w.frame[w.frame["user_id"] == "1"].head(3)], ignore_index=True)
        s = w.settings.model_copy(update={"index_dir": tmp / "repeats"})
        rec = Recommender.from_interactions(w.items, frame, s, namespace="repeats")
        return rec.history("1"), rec.candidates("1", 5)

    def unknown_item():
        frame = pd.concat([w.frame, pd.DataFrame([{"user_id": "1", "item_id": "no-such-item"}])], ignore_index=True)
        s = w.settings.model_copy(update={"index_dir": tmp / "unknown-item"})
        return Recommender.from_interactions(w.items, frame, s, namespace="unknown-item")

    def csv(text: str, **kw) -> Callable[[], Any]:
        path = tmp / f"d{abs(hash(text))}.csv"
        path.write_text(text, encoding="utf-8")
        return lambda: load_interactions(path, rating_field="rating", timestamp_field="timestamp", **kw)

    def missing_column():
        return Recommender.from_interactions(w.items, w.frame.drop(columns=["item_id"]), w.settings,
                                             namespace="campaign")

    def text_timestamp():
        frame = w.frame.astype({"timestamp": object}).copy()
        frame.loc[0, "timestamp"] = "yesterday"
        return Recommender.from_interactions(w.items, frame, w.settings, namespace="campaign")

    return [
        Case(c, "a user who repeats an item", repeated,
             handled=lambda r: len(r[0]) == len(set(r[0])) and len(r[1].candidates) == 5),
        Case(c, "an interaction with an item not in the catalog", unknown_item, error="not in the catalog"),
        Case(c, "a rating that is not a number", csv("user_id,item_id,rating,timestamp\n1,2,five,100\n"),
             error="line 2"),
        Case(c, "a row with a missing field", csv("user_id,item_id,rating,timestamp\n1,2,3\n"), error="line 2"),
        Case(c, "a bad timestamp", csv("user_id,item_id,rating,timestamp\n1,2,3,yesterday\n"), error="line 2"),
        Case(c, "bad rows skipped on request",
             csv("user_id,item_id,rating,timestamp\n1,2,five,100\n1,3,4,200\n", skip_bad_rows=True),
             handled=lambda f: list(f["item_id"]) == ["3"]),
        Case(c, "a frame without item_id", missing_column, error="item_id"),
        Case(c, "a frame with a text timestamp", text_timestamp, error="'timestamp' must be numeric"),
    ]


def lookup_cases(w: World, tmp: Path) -> list[Case]:
    rec = w.rec
    c = "unknown users and items"
    return [
        Case(c, "unknown user", lambda: rec.candidates("nobody"), error="unknown user 'nobody'"),
        Case(c, "unknown item in a given history", lambda: rec.candidates("1", history=["1", "no-such"]),
             error="unknown item 'no-such'"),
        Case(c, "explain an unknown item", lambda: rec.explain("1", "no-such", backend=Constant()),
             error="unknown item"),
        Case(c, "empty history (cold start)", lambda: rec.candidates("1", 5, history=[]),
             handled=lambda f: f.cold_start and len(f.candidates) == 5),
        Case(c, "k = 0", lambda: rec.recommend("1", 0), error="must be positive"),
        Case(c, "n = 0", lambda: rec.candidates("1", 0), error="positive"),
        Case(c, "filter that matches nothing (wrong case)", lambda: rec.candidates("1", 5, where={"genre_comedy": True}),
             error="genre_Comedy"),
        Case(c, "filter with a bad operator", lambda: rec.candidates("1", 5, where={"genre_Comedy": {"$bad": 1}}),
             error="invalid metadata filter"),
        Case(c, "a filter that matches", lambda: rec.candidates("1", 5, where={"genre_Comedy": True}),
             handled=lambda f: len(f.candidates) == 5),
    ]


def llm_cases(w: World, tmp: Path) -> list[Case]:
    from promptrec.ranker.calibration import FEATURE_NAMES, Calibrator, calibration_key, fit_features
    from promptrec.ranker.factory import make_reranker

    c = "LLM timeout or failure"

    def degraded_with(text: str) -> Callable[[Any], bool]:
        return lambda r: r.degraded and text in (r.degraded_reason or "") and r.scores_in_input_order() is None

    def timeout_leak():
        backend = Gated(hold_s=1.5)
        first = w.reranker_run(backend, timeout_s=0.3)
        second = w.reranker_run(backend, timeout_s=1.0)
        return first, second

    def bad_calibration(value: float, field: str) -> Callable[[], Any]:
        def run():
            x = np.random.default_rng(0).normal(size=(300, len(FEATURE_NAMES)))
            key = calibration_key(make_reranker(w.settings, Constant()), w.settings)
            path = fit_features(x, (x[:, 0] > 0.5).astype(float), key).save(tmp / f"cal-{field}.json")
            data = json.loads(path.read_text())
            data[field][0] = value
            path.write_text(json.dumps(data))
            return Calibrator.load(path, key)

        return run

    def stale_calibration():
        x = np.random.default_rng(0).normal(size=(300, len(FEATURE_NAMES)))
        reranker = make_reranker(w.settings, Constant())
        path = fit_features(x, (x[:, 0] > 0.5).astype(float), calibration_key(reranker, w.settings, 20)).save(
            tmp / "cal-stale.json")
        return Calibrator.load(path, calibration_key(reranker, w.settings, 10))

    return [
        Case(c, "backend raises", lambda: w.reranker_run(Raising()), handled=degraded_with("device-side assert")),
        Case(c, "backend returns NaN", lambda: w.reranker_run(NaNs()), handled=degraded_with("non-finite")),
        Case(c, "backend returns too few scores", lambda: w.reranker_run(Short()), handled=degraded_with("")),
        Case(c, "LLM timeout", lambda: w.reranker_run(Gated(hold_s=1.0), timeout_s=0.1),
             handled=degraded_with("longer than")),
        Case(c, "the user after a timeout", timeout_leak,
             handled=lambda r: r[0].degraded and not r[1].degraded),
        Case(c, "calibration with a zero scale", bad_calibration(0.0, "scales"), error="scale"),
        Case(c, "calibration with NaN weights", bad_calibration(float("nan"), "weights"), error="non-finite"),
        Case(c, "calibration fitted for another n_candidates", stale_calibration, error="n_candidates"),
    ]


def server_cases(w: World, tmp: Path) -> list[Case]:
    from promptrec.recommender import Recommender

    c = "server down"

    def chroma_absent():
        s = w.settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=free_port()),
                                          "index_dir": tmp / "http-none"})
        return Recommender.from_interactions(w.items, w.frame, s, namespace="campaign-http")

    def chroma_dies_mid_use():
        exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        port = free_port()
        proc = subprocess.Popen([exe, "run", "--path", str(tmp / "server"), "--host", "127.0.0.1", "--port",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.2)
            s = w.settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=port),
                                              "index_dir": tmp / "http-index"})
            rec = Recommender.from_interactions(w.items, w.frame, s, namespace="campaign-http")
            rec.candidates("1", 5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return rec.candidates("2", 5)

    def vllm_server_down():
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend
        from promptrec.assets import resolve_model

        model = resolve_model(w.settings.generator, w.settings)
        backend = VLLMServerBackend(f"http://127.0.0.1:{free_port()}/v1", model, model_id="m", max_retries=1,
                                    backoff_s=0.05)
        return w.reranker_run(backend, timeout_s=20, template="yesno")

    return [
        Case(c, "Chroma server not running", chroma_absent, error="Chroma server"),
        Case(c, "Chroma server dies mid-use", chroma_dies_mid_use, error="did not answer"),
        Case(c, "vLLM server not running", vllm_server_down,
             handled=lambda r: r.degraded and "ServerUnavailable" in (r.degraded_reason or "")),
    ]


def model_cases(w: World, tmp: Path) -> list[Case]:
    from safetensors.numpy import save_file

    from promptrec.model_files import check_model_dir
    from promptrec.ranker.factory import make_backend

    c = "bad model folders"
    folder = tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    save_file({"w": np.arange(1000, dtype=np.float32)}, str(folder / "model.safetensors"))

    def truncated():
        (folder / "tokenizer.json").write_text("{}")
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:-64])
        return check_model_dir(folder, "tiny")

    return [
        Case(c, "model folder without a tokenizer", lambda: make_backend(Settings(generator=str(folder))),
             error="tokenizer is missing"),
        Case(c, "truncated model.safetensors", truncated, error="truncated"),
        Case(c, "generator that is not a model", lambda: make_backend(Settings(generator="no-such-model")),
             error="unknown generator"),
    ]


def cli_cases(w: World, tmp: Path) -> list[Case]:
    c = "command line"
    base_env = {**os.environ, "PYTHONPATH": str(REPO), "PROMPTREC_INDEX_DIR": str(tmp / "cli-index"),
                "PROMPTREC_CACHE_DIR": str(w.base.cache_dir), "PROMPTREC_N_CANDIDATES": "10",
                "PROMPTREC_RANKER__PERMUTATIONS": "1", "COLUMNS": "160"}
    base_env.pop("PROMPTREC_CONFIG", None)
    folder = tmp / "slice"
    folder.mkdir(exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{r.user_id}\t{r.item_id}\t{r.rating:g}\t{r.timestamp:.0f}" for r in w.frame.itertuples()]
    (folder / "slice.inter").write_text("\n".join(lines) + "\n")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    rows += [f"{it.item_id}\t{it.title}\t{it.year or ''}\t{' '.join(it.genres)}" for it in w.items]
    (folder / "slice.item").write_text("\n".join(rows) + "\n")
    base_env["PROMPTREC_DATASET"] = str(folder)

    def cli(*args: str, **extra: str) -> Callable[[], Any]:
        def run():
            out = subprocess.run([sys.executable, "-m", "promptrec", *args], capture_output=True, text=True,
                                 env={**base_env, **extra}, cwd=tmp, timeout=900)
            return {"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr}

        return run

    def one_line(needle: str) -> Callable[[Any], bool]:
        return lambda r: r["returncode"] == 2 and "Traceback" not in r["stderr"] and needle in " ".join(
            r["stderr"].split())

    def truncate_then(run: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped():
            path = tmp / "cli-index" / "sequential.npz"
            path.write_bytes(path.read_bytes()[:200])
            return run()

        return wrapped

    (tmp / "bad.toml").write_text('[ranker]\ntemplatee = "letters"\n')
    return [
        Case(c, "`index` on the slice", cli("index"), handled=lambda r: r["returncode"] == 0),
        Case(c, "`recommend` after an LLM timeout", cli("recommend", "1", "-k", "3", PROMPTREC_RANKER__TIMEOUT_S="0.001"),
             handled=lambda r: r["returncode"] == 0 and "the LLM failed" in r["stdout"]),
        Case(c, "`why` with a settings typo", cli("why", "1", "2", PROMPTREC_CONFIG=str(tmp / "bad.toml")),
             handled=one_line("templatee")),
        Case(c, "`candidates --genre comedy`", cli("candidates", "1", "--genre", "comedy"),
             handled=one_line("genre_Comedy")),
        Case(c, "`candidates -n 0`", cli("candidates", "1", "-n", "0"), handled=lambda r: r["returncode"] == 2),
        Case(c, "`candidates` before any `index`", cli("candidates", "1", PROMPTREC_INDEX_DIR=str(tmp / "nothing")),
             handled=one_line("promptrec index")),
        Case(c, "`candidates` on a truncated sequential.npz", truncate_then(cli("candidates", "1")),
             handled=one_line("promptrec index --rebuild")),
        Case(c, "`index --rebuild` mends it", cli("index", "--rebuild"), handled=lambda r: r["returncode"] == 0),
        Case(c, "`candidates` after the rebuild", cli("candidates", "1"), handled=lambda r: r["returncode"] == 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line subprocess cases")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    logging.getLogger("promptrec").setLevel(logging.ERROR)  # the cases log their degradations
    cache = os.environ.get("PROMPTREC_CACHE_DIR")
    base = Settings(cache_dir=Path(cache)) if cache else Settings()
    with tempfile.TemporaryDirectory(prefix="promptrec-campaign-") as name:
        tmp = Path(name)
        world = World(tmp / "indexes", base)
        groups = [template_cases, settings_cases, index_cases, data_cases, lookup_cases, llm_cases, server_cases,
                  model_cases]
        if not args.no_cli:
            groups.append(cli_cases)
        counts: collections.Counter[str] = collections.Counter()
        by_category: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for group in groups:
            work = tmp / group.__name__
            work.mkdir()
            for case in group(world, work):
                result, detail = verdict(case)
                counts[result] += 1
                by_category[case.category][result] += 1
                print(f"{result:<12} {case.category:<24} {case.name:<48} {detail}", flush=True)
    print()
    print(f"{'category':<26}" + "".join(f"{v:>13}" for v in VERDICTS))
    for category, c in by_category.items():
        print(f"{category:<26}" + "".join(f"{c[v]:>13}" for v in VERDICTS))
    print(f"{'total (' + str(sum(counts.values())) + ' cases)':<26}" + "".join(f"{counts[v]:>13}" for v in VERDICTS))


if __name__ == "__main__":
    main()
