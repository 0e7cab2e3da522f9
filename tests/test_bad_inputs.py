"""The bad-input campaign of issue 10, one test per case.

Each case does one hostile but realistic thing (a bad template, a bad setting, a damaged index
file, a bad data row, an unknown user or item, an LLM that fails or times out, a server that is
down, a bad model folder, a command line run) and says what a user should get: an error whose
message contains a given text (the file, field or setting, or the fix), or a handled result (a
flagged degradation, a cold start, a mended index). The verdict:

* clear error: a promptrec error (or a settings/validation error) whose message has the text;
* handled: the result is what the case expects;
* silent: no error and not the expected handling (a plausible but wrong result);
* unclear: an exception that is not a promptrec error, or whose message lacks the text;
* crash: a command-line run that aborted (a signal, exit 134).

A case passes on "clear error" or "handled" only. Real parts throughout: the MovieLens-100K
slice of conftest, the MiniLM encoder, embedded Chroma, a real `chroma run` server, the real
SmolLM2 model in the command-line subprocesses; generator failures come from
`promptrec.testing.FakeBackend`. Cases that need none of that are in the fast lane.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from promptrec.config import ChromaSettings, RankerSettings, RetrievalSettings, Settings
from promptrec.errors import PromptrecError
from promptrec.index_layout import IndexLayout
from promptrec.explain import explain
from promptrec.testing import FakeBackend

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Ctx:
    """What a case runs in: a fresh temp folder, the module's slice index (built on first use),
    fixtures by name and the environment (restored after the case)."""

    request: pytest.FixtureRequest
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def w(self) -> World:
        return self.request.getfixturevalue("world")

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


@dataclass
class Case:
    category: str
    name: str
    run: Callable[[Ctx], Any]
    error: str | None = None  # expected: an error whose message contains this text
    handled: Callable[[Any], bool] | None = None  # expected: a result this accepts
    integration: bool = False  # needs the real data, encoder, Chroma or model


def verdict(case: Case, ctx: Ctx) -> tuple[str, str]:
    try:
        result = case.run(ctx)
    except Exception as exc:  # noqa: BLE001 - classified below
        message = " ".join(str(exc).split())
        ours = isinstance(exc, (PromptrecError, ValidationError))
        if case.error is not None and ours and case.error.lower() in message.lower():
            return "clear error", message[:200]
        return "unclear", f"{type(exc).__name__}: {message[:300]}"
    if isinstance(result, dict) and "returncode" in result:  # a command-line run
        if result["returncode"] < 0 or result["returncode"] == 134 or "terminate called" in result["stderr"]:
            return "crash", f"exit {result['returncode']}: {result['stderr'][-300:]}"
    if case.handled is not None and case.handled(result):
        return "handled", _short(result)
    return "silent", _short(result)


def _short(result: Any) -> str:
    if isinstance(result, dict) and "returncode" in result:
        return f"exit {result['returncode']}: {' '.join((result['stderr'] or result['stdout']).split())[-300:]}"
    return " ".join(repr(result).split())[:300]


# --------------------------------------------------------------------------- the slice index


class World:
    """The conftest slice (40 users), its index (10 candidates) and copies of it to damage."""

    def __init__(self, root: Path, base: Settings, items, frame):
        from promptrec.recommender import Recommender

        self.root, self.items, self.frame = root, items, frame
        self.settings = base.model_copy(update={"index_dir": root / "main", "n_candidates": 10})
        self.rec = Recommender.from_interactions(items, frame, self.settings, namespace="campaign")

    def copy_index(self, name: str) -> Settings:
        """A fresh copy of the built index (to damage), and settings pointing at it."""
        from chromadb.api.shared_system_client import SharedSystemClient

        target = self.root / name
        shutil.copytree(self.root / "main", target)
        settings = self.settings.model_copy(update={"index_dir": target})
        SharedSystemClient._identifier_to_system.pop(str(settings.index_layout().live().chroma), None)
        return settings

    def open(self, settings: Settings):
        from promptrec.recommender import Recommender

        return Recommender.open(self.items, self.frame, settings, "campaign")

    def reranker_run(self, backend, timeout_s: float = 5.0, n: int = 5, template: str = "letters"):
        from promptrec.ranker.reranker import LLMReranker

        found = self.rec.candidates("1", n)
        return LLMReranker(backend, template, timeout_s=timeout_s).run([self.rec.item(i) for i in found.history], found)


@pytest.fixture(scope="module")
def world(ml_slice, asset_settings, tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("campaign"), asset_settings, *ml_slice)


# --------------------------------------------------------------------------- the cases


def _write(ctx: Ctx, suffix: str, text: str) -> Path:
    path = ctx.tmp / f"case{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


def template_cases() -> list[Case]:
    from promptrec.ranker.factory import make_reranker
    from promptrec.ranker.prompts import RerankTemplate, load_template

    def tpl(source: str) -> Callable[[Ctx], Any]:
        return lambda c: RerankTemplate.from_string(source, name="campaign.j2")

    def file(source: str) -> Callable[[Ctx], Any]:
        return lambda c: load_template(_write(c, ".j2", source))

    k = "bad templates"
    return [
        Case(k, "misspelt variable", file("{# strategy: letters #}\n{% for h in histroy %}{{ h.text }}{% endfor %}"),
             error="histroy"),
        Case(k, "misspelt variable in the cold-start branch",
             tpl("{# strategy: yesno #}\n{% if history %}{{ candidate.title }}{% else %}{{ candidat.title }}{% endif %}"),
             error="candidat"),
        Case(k, "{% include %}", tpl('{# strategy: letters #}\n{% include "letters.j2" %}'), error="include"),
        Case(k, "{% extends %}", tpl('{# strategy: letters #}\n{% extends "letters.j2" %}'), error="extends"),
        Case(k, "blocked attribute", tpl("{# strategy: yesno #}\n{{ candidate.title.__class__ }}"), error="unsafe"),
        Case(k, "empty user block", tpl("{# strategy: yesno #}\n{% block user %} {% endblock %}"), error="empty"),
        Case(k, "no strategy line", tpl("Pick one of {{ candidates }}"), error="declare the scoring strategy"),
        Case(k, "unknown strategy", tpl("{# strategy: pairwise #}\nx"), error="unknown strategy"),
        Case(k, "syntax error", file("{# strategy: letters #}\n{% for x in %}\n"), error="line 2"),
        Case(k, "template name that does not exist", lambda c: load_template("leters"), error="no rerank template"),
        Case(k, "30 candidates for 26 letters", lambda c: make_reranker(Settings(n_candidates=30), FakeBackend()),
             error="26"),
        Case(k, "30 candidates passed to recommend()", lambda c: c.w.reranker_run(FakeBackend(), n=30),
             error="26 candidates at most", integration=True),
    ]


def settings_cases() -> list[Case]:
    k = "bad settings"

    def with_env(**values: str) -> Callable[[Ctx], Any]:
        def run(c: Ctx) -> Settings:
            for name, value in values.items():
                c.monkeypatch.setenv(name, value)
            return Settings()

        return run

    def toml(text: str) -> Callable[[Ctx], Any]:
        return lambda c: with_env(PROMPTREC_CONFIG=str(_write(c, ".toml", text)))(c)

    return [
        Case(k, "unknown top-level key", lambda c: Settings(n_candidate=5), error="n_candidate"),
        Case(k, "unknown nested key in TOML", toml('[ranker]\ntemplatee = "yesno"\n'), error="templatee"),
        Case(k, "unknown [ranker.vllm] key", toml('[ranker.vllm]\ndtypee = "float32"\n'), error="dtypee"),
        Case(k, "unknown [chroma] key", toml("[chroma]\nprot = 9000\n"), error="prot"),
        Case(k, "invalid TOML", toml('dataset = "movielens-100k"\n[ranker\n'), error="line 2"),
        Case(k, "unknown PROMPTREC_ variable", with_env(PROMPTREC_RANKER__TEMPLATEE="yesno"),
             error="PROMPTREC_RANKER__TEMPLATEE"),
        Case(k, "PROMPTREC_CONFIG names a missing file",
             lambda c: with_env(PROMPTREC_CONFIG=str(c.tmp / "nope.toml"))(c), error="nope.toml"),
        Case(k, "timeout_s = 0", lambda c: RankerSettings(timeout_s=0), error="timeout_s"),
        Case(k, "timeout_s < 0", lambda c: RankerSettings(timeout_s=-5), error="timeout_s"),
        Case(k, "every fusion weight 0", lambda c: RetrievalSettings(weights={"transitions": 0, "text": 0}),
             error="every fusion weight is 0"),
        Case(k, "negative fusion weight", lambda c: RetrievalSettings(weights={"transitions": 1, "text": -1}),
             error=">= 0"),
        Case(k, "misspelt source", lambda c: RetrievalSettings(weights={"transition": 1.0}),
             error="unknown retrieval source"),
        Case(k, "n_candidates = 0", lambda c: Settings(n_candidates=0), error="n_candidates"),
        Case(k, "unknown backend", lambda c: RankerSettings(backend="vllm"), error="backend"),
        Case(k, "permutations = 0", lambda c: RankerSettings(permutations=0), error="permutations"),
    ]


def index_cases() -> list[Case]:
    from promptrec.recommender import Recommender

    k = "broken index files"

    def truncated(name: str) -> Callable[[Ctx], Any]:
        def run(c: Ctx):
            s = c.w.copy_index(f"trunc-{name}")
            path = s.index_layout().live().root / name
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            return c.w.open(s)

        return run

    def corrupt_chroma(c: Ctx):
        s = c.w.copy_index("chroma-bad")
        (s.index_layout().live().chroma / "chroma.sqlite3").write_bytes(b"garbage" * 200)
        return c.w.open(s)

    def mended(name: str, rebuild: bool) -> Callable[[Ctx], Any]:
        def run(c: Ctx):
            s = c.w.copy_index(f"mend-{name}-{rebuild}")
            if name == "chroma.sqlite3":
                (s.index_layout().live().chroma / name).write_bytes(b"garbage" * 200)
            else:
                path = s.index_layout().live().root / name
                path.write_bytes(path.read_bytes()[:100])
            Recommender.from_interactions(c.w.items, c.w.frame, s, namespace="campaign", rebuild=rebuild)
            return c.w.open(s).candidates("1", 5)

        return run

    def other_data(c: Ctx):
        return Recommender.open(c.w.items, c.w.frame.iloc[:-5], c.w.copy_index("other-data"), "campaign")

    def not_a_folder(c: Ctx):
        blocker = c.tmp / "a-file"
        blocker.write_text("x")
        return Recommender.from_interactions(c.w.items, c.w.frame, c.w.settings.model_copy(
            update={"index_dir": blocker / "index"}), namespace="campaign")

    def no_index(c: Ctx):
        return c.w.open(c.w.settings.model_copy(update={"index_dir": c.tmp / "never-built"}))

    ok = lambda found: len(found.candidates) == 5  # noqa: E731
    cases = [
        Case(k, "truncated manifest.json", truncated("manifest.json"), error="manifest.json"),
        Case(k, "truncated transitions.npz", truncated("transitions.npz"), error="transitions.npz"),
        Case(k, "corrupt chroma.sqlite3", corrupt_chroma, error="promptrec index --rebuild"),
        Case(k, "plain `index` after a truncated transitions.npz", mended("transitions.npz", False), handled=ok),
        Case(k, "plain `index` after a truncated manifest.json", mended("manifest.json", False), handled=ok),
        Case(k, "`index --rebuild` after a corrupt chroma.sqlite3", mended("chroma.sqlite3", True), handled=ok),
        Case(k, "index built from other data", other_data, error="fingerprint"),
        Case(k, "index folder cannot be created", not_a_folder, error="a-file"),
        Case(k, "no index built yet", no_index, error="promptrec index"),
    ]
    return [_integration(case) for case in cases]


def data_cases() -> list[Case]:
    import pandas as pd

    from promptrec.data.loaders import load_interactions
    from promptrec.recommender import Recommender

    k = "bad data rows"

    def repeated(c: Ctx):
        w = c.w
        frame = pd.concat([w.frame, w.frame[w.frame["user_id"] == "1"].head(3)], ignore_index=True)
        rec = Recommender.from_interactions(w.items, frame, w.settings.model_copy(update={"index_dir": c.tmp / "r"}),
                                            namespace="repeats")
        return rec.history("1"), rec.candidates("1", 5)

    def unknown_item(c: Ctx):
        w = c.w
        frame = pd.concat([w.frame, pd.DataFrame([{"user_id": "1", "item_id": "no-such-item"}])], ignore_index=True)
        return Recommender.from_interactions(w.items, frame, w.settings.model_copy(update={"index_dir": c.tmp / "u"}),
                                             namespace="unknown-item")

    def csv(text: str, **options) -> Callable[[Ctx], Any]:
        return lambda c: load_interactions(_write(c, ".csv", text), rating_field="rating", timestamp_field="timestamp",
                                           **options)

    def missing_column(c: Ctx):
        return Recommender.from_interactions(c.w.items, c.w.frame.drop(columns=["item_id"]), c.w.settings,
                                             namespace="campaign")

    def text_timestamp(c: Ctx):
        frame = c.w.frame.astype({"timestamp": object}).copy()
        frame.loc[0, "timestamp"] = "yesterday"
        return Recommender.from_interactions(c.w.items, frame, c.w.settings, namespace="campaign")

    return [
        _integration(Case(k, "a user who repeats an item", repeated,
                          handled=lambda r: len(r[0]) == len(set(r[0])) and len(r[1].candidates) == 5)),
        _integration(Case(k, "an interaction with an item not in the catalog", unknown_item,
                          error="not in the catalog")),
        Case(k, "a rating that is not a number", csv("user_id,item_id,rating,timestamp\n1,2,five,100\n"),
             error="line 2"),
        Case(k, "a row with a missing field", csv("user_id,item_id,rating,timestamp\n1,2,3\n"), error="line 2"),
        Case(k, "a bad timestamp", csv("user_id,item_id,rating,timestamp\n1,2,3,yesterday\n"), error="line 2"),
        Case(k, "bad rows skipped on request",
             csv("user_id,item_id,rating,timestamp\n1,2,five,100\n1,3,4,200\n", skip_bad_rows=True),
             handled=lambda f: list(f["item_id"]) == ["3"]),
        _integration(Case(k, "a frame without item_id", missing_column, error="item_id")),
        _integration(Case(k, "a frame with a text timestamp", text_timestamp, error="'timestamp' must be numeric")),
    ]


def lookup_cases() -> list[Case]:
    k = "unknown users and items"
    cases = [
        Case(k, "unknown user", lambda c: c.w.rec.candidates("nobody"), error="unknown user 'nobody'"),
        Case(k, "unknown item in a given history", lambda c: c.w.rec.candidates("1", history=["1", "no-such"]),
             error="unknown item 'no-such'"),
        Case(k, "explain an unknown item", lambda c: explain(c.w.rec, "1", "no-such", backend=FakeBackend()),
             error="unknown item"),
        Case(k, "empty history (cold start)", lambda c: c.w.rec.candidates("1", 5, history=[]),
             handled=lambda f: f.cold_start and len(f.candidates) == 5),
        Case(k, "k = 0", lambda c: c.w.rec.recommend("1", 0), error="must be positive"),
        Case(k, "n = 0", lambda c: c.w.rec.candidates("1", 0), error="positive"),
        Case(k, "filter that matches nothing (wrong case)",
             lambda c: c.w.rec.candidates("1", 5, where={"genre_comedy": True}), error="genre_Comedy"),
        Case(k, "filter with a bad operator", lambda c: c.w.rec.candidates("1", 5, where={"genre_Comedy": {"$bad": 1}}),
             error="invalid metadata filter"),
        Case(k, "a filter that matches", lambda c: c.w.rec.candidates("1", 5, where={"genre_Comedy": True}),
             handled=lambda f: len(f.candidates) == 5),
    ]
    return [_integration(case) for case in cases]


def llm_cases() -> list[Case]:
    from promptrec.ranker.calibration import FEATURE_NAMES, Calibrator, calibration_key, fit_features
    from promptrec.ranker.factory import make_reranker

    k = "LLM timeout or failure"
    settings = Settings(n_candidates=10)  # the slice index's; calibration keys read no index

    def degraded_with(text: str) -> Callable[[Any], bool]:
        return lambda r: r.degraded and text in (r.degraded_reason or "") and r.scores_in_input_order() is None

    def timeout_leak(c: Ctx):
        backend = FakeBackend(hang_s=1.5, hang_calls=1)
        return c.w.reranker_run(backend, timeout_s=0.3), c.w.reranker_run(backend, timeout_s=1.0)

    def bad_calibration(value: float, field: str) -> Callable[[Ctx], Any]:
        def run(c: Ctx):
            x = np.random.default_rng(0).normal(size=(300, len(FEATURE_NAMES)))
            key = calibration_key(make_reranker(settings, FakeBackend()), settings)
            path = fit_features(x, (x[:, 0] > 0.5).astype(float), key).save(c.tmp / f"cal-{field}.json")
            data = json.loads(path.read_text())
            data[field][0] = value
            path.write_text(json.dumps(data))
            return Calibrator.load(path, key)

        return run

    def stale_calibration(c: Ctx):
        x = np.random.default_rng(0).normal(size=(300, len(FEATURE_NAMES)))
        reranker = make_reranker(settings, FakeBackend())
        path = fit_features(x, (x[:, 0] > 0.5).astype(float), calibration_key(reranker, settings, 20)).save(
            c.tmp / "cal-stale.json")
        return Calibrator.load(path, calibration_key(reranker, settings, 10))

    short = FakeBackend(logprobs=lambda prompts, ids: np.zeros((len(prompts), len(ids) - 1)))
    return [
        _integration(Case(k, "backend raises",
                          lambda c: c.w.reranker_run(FakeBackend(error=RuntimeError("CUDA error: device-side assert"))),
                          handled=degraded_with("device-side assert"))),
        _integration(Case(k, "backend returns NaN", lambda c: c.w.reranker_run(FakeBackend(logprobs=float("nan"))),
                          handled=degraded_with("non-finite"))),
        _integration(Case(k, "backend returns too few scores", lambda c: c.w.reranker_run(short),
                          handled=degraded_with(""))),
        _integration(Case(k, "LLM timeout",
                          lambda c: c.w.reranker_run(FakeBackend(hang_s=1.0, hang_calls=1), timeout_s=0.1),
                          handled=degraded_with("longer than"))),
        _integration(Case(k, "the user after a timeout", timeout_leak,
                          handled=lambda r: r[0].degraded and not r[1].degraded)),
        Case(k, "calibration with a zero scale", bad_calibration(0.0, "scales"), error="scale"),
        Case(k, "calibration with NaN weights", bad_calibration(float("nan"), "weights"), error="non-finite"),
        Case(k, "calibration fitted for another n_candidates", stale_calibration, error="n_candidates"),
    ]


def server_cases() -> list[Case]:
    from promptrec.recommender import Recommender

    k = "server down"

    def chroma_absent(c: Ctx):
        s = c.w.settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=c.fixture("free_port")),
                                            "index_dir": c.tmp / "http-none"})
        return Recommender.from_interactions(c.w.items, c.w.frame, s, namespace="campaign-http")

    def chroma_dies_mid_use(c: Ctx):
        server = c.fixture("chroma_server")
        s = c.w.settings.model_copy(update={"chroma": ChromaSettings(mode="http", port=server.port),
                                            "index_dir": c.tmp / "http-index"})
        rec = Recommender.from_interactions(c.w.items, c.w.frame, s, namespace="campaign-http")
        rec.candidates("1", 5)
        server.stop()
        # the vectors searched exactly were read at the first query: lists go on from them
        assert rec.candidates("2", 5).candidates
        # a write needs the server: a clear error, and the live store is not written either
        try:
            return rec.add_items([{"item_id": "campaign-new", "title": "A New Film"}])
        finally:
            assert rec.live_store() is None or rec.live_store().item("campaign-new") is None

    def vllm_server_down(c: Ctx):
        from promptrec.assets import resolve_model
        from promptrec.ranker.backends.vllm_server import VLLMServerBackend

        model = resolve_model(c.w.settings.generator, c.w.settings)
        backend = VLLMServerBackend(f"http://127.0.0.1:{c.fixture('free_port')}/v1", model, model_id="m",
                                    max_retries=1, backoff_s=0.05)
        return c.w.reranker_run(backend, timeout_s=20, template="yesno")

    cases = [
        Case(k, "Chroma server not running", chroma_absent, error="Chroma server"),
        Case(k, "Chroma server dies mid-use", chroma_dies_mid_use, error="did not answer"),
        Case(k, "vLLM server not running", vllm_server_down,
             handled=lambda r: r.degraded and "ServerUnavailable" in (r.degraded_reason or "")),
    ]
    return [_integration(case) for case in cases]


def model_cases() -> list[Case]:
    from safetensors.numpy import save_file

    from promptrec.model_files import check_model_dir
    from promptrec.ranker.factory import make_backend

    k = "bad model folders"

    def folder(c: Ctx) -> Path:
        path = c.tmp / "model"
        path.mkdir()
        (path / "config.json").write_text("{}")
        save_file({"w": np.arange(1000, dtype=np.float32)}, str(path / "model.safetensors"))
        return path

    def truncated(c: Ctx):
        path = folder(c)
        (path / "tokenizer.json").write_text("{}")
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:-64])
        return check_model_dir(path, "tiny")

    return [
        Case(k, "model folder without a tokenizer", lambda c: make_backend(Settings(generator=str(folder(c)))),
             error="tokenizer is missing"),
        Case(k, "truncated model.safetensors", truncated, error="truncated"),
        Case(k, "generator that is not a model", lambda c: make_backend(Settings(generator="no-such-model")),
             error="unknown generator"),
    ]


@pytest.fixture(scope="module")
def cli_env(ml_slice_dir, asset_settings, tmp_path_factory) -> dict[str, str]:
    """The environment of the command-line cases: the slice, one index folder, a small setup."""
    root = tmp_path_factory.mktemp("campaign-cli")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMPTREC_DATASET": str(ml_slice_dir),
           "PROMPTREC_INDEX_DIR": str(root / "index"), "PROMPTREC_CACHE_DIR": str(asset_settings.cache_dir),
           "PROMPTREC_N_CANDIDATES": "10", "PROMPTREC_RANKER__PERMUTATIONS": "1", "COLUMNS": "160"}
    env.pop("PROMPTREC_CONFIG", None)
    return env


def _promptrec(env: dict[str, str], cwd: Path, *args: str, **extra: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "promptrec", *args], capture_output=True, text=True,
                         env={**env, **extra}, cwd=cwd, timeout=900)
    return {"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr}


@pytest.fixture(scope="module")
def cli_index(cli_env, tmp_path_factory) -> dict[str, Any]:
    """`promptrec index` on the slice, run once for the command-line cases that need an index."""
    return _promptrec(cli_env, tmp_path_factory.mktemp("cli-cwd"), "index")


def cli_cases() -> list[Case]:
    k = "command line"

    def cli(*args: str, index: bool = True, **extra: str) -> Callable[[Ctx], Any]:
        def run(c: Ctx):
            if index:
                c.fixture("cli_index")
            return _promptrec(c.fixture("cli_env"), c.tmp, *args, **extra)

        return run

    def one_line(needle: str) -> Callable[[Any], bool]:
        return lambda r: r["returncode"] == 2 and "Traceback" not in r["stderr"] and needle in " ".join(
            r["stderr"].split())

    def truncated_sequential(run: Callable[[Ctx], Any], restore: bool) -> Callable[[Ctx], Any]:
        def wrapped(c: Ctx):
            c.fixture("cli_index")
            path = IndexLayout(Path(c.fixture("cli_env")["PROMPTREC_INDEX_DIR"])).live().transitions
            whole = path.read_bytes()
            path.write_bytes(whole[:200])
            try:
                return run(c)
            finally:
                if restore:
                    path.write_bytes(whole)

        return wrapped

    def bad_toml(c: Ctx):
        path = _write(c, ".toml", '[ranker]\ntemplatee = "letters"\n')
        return cli("why", "1", "2", PROMPTREC_CONFIG=str(path))(c)

    cases = [
        Case(k, "`index` on the slice", lambda c: c.fixture("cli_index"), handled=lambda r: r["returncode"] == 0),
        Case(k, "`recommend` after an LLM timeout", cli("recommend", "1", "-k", "3", PROMPTREC_RANKER__TIMEOUT_S="0.001"),
             handled=lambda r: r["returncode"] == 0 and "the LLM failed" in r["stdout"]),
        Case(k, "`why` with a settings typo", bad_toml, handled=one_line("templatee")),
        Case(k, "`candidates --genre comedy`", cli("candidates", "1", "--genre", "comedy"),
             handled=one_line("genre_Comedy")),
        Case(k, "`candidates -n 0`", cli("candidates", "1", "-n", "0"), handled=lambda r: r["returncode"] == 2),
        Case(k, "`candidates` before any `index`",
             lambda c: cli("candidates", "1", index=False, PROMPTREC_INDEX_DIR=str(c.tmp / "nothing"))(c),
             handled=one_line("promptrec index")),
        Case(k, "`candidates` on a truncated transitions.npz",
             truncated_sequential(cli("candidates", "1"), restore=True), handled=one_line("promptrec index --rebuild")),
        Case(k, "`index --rebuild` mends a truncated transitions.npz",
             truncated_sequential(cli("index", "--rebuild"), restore=False), handled=lambda r: r["returncode"] == 0),
        Case(k, "`candidates` after the rebuild", cli("candidates", "1"), handled=lambda r: r["returncode"] == 0),
    ]
    return [_integration(case) for case in cases]


def _integration(case: Case) -> Case:
    case.integration = True
    return case


CASES = [case for group in (template_cases, settings_cases, index_cases, data_cases, lookup_cases, llm_cases,
                            server_cases, model_cases, cli_cases) for case in group()]


@pytest.mark.parametrize("case", [
    pytest.param(case, id=f"{case.category}: {case.name}", marks=[pytest.mark.integration] if case.integration else [])
    for case in CASES
])
def test_bad_input_gets_a_clear_error_or_is_handled(case, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./promptrec.toml of the checkout is read
    monkeypatch.delenv("PROMPTREC_CONFIG", raising=False)
    result, detail = verdict(case, Ctx(request, tmp_path, monkeypatch))
    assert result in ("clear error", "handled"), f"{result}: {detail}"
