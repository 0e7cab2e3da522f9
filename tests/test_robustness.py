"""The defects a review and a bad-input campaign found (issue 10), one test or more each:
configuration errors raise where they are made, only generator failures degrade, damaged
files are named with their fix, and one path does each job."""

from __future__ import annotations

import ast
import fcntl
import json
import logging
import os
import threading
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from promptrec.config import RankerSettings, RetrievalSettings, Settings
from promptrec.errors import AssetError, IndexMismatchError, PromptrecError, SettingsError
from promptrec.ranker.calibration import (
    CalibrationKey,
    CalibrationMismatchError,
    Calibrator,
    calibration_key,
    final_order,
    fit_features,
)
from promptrec.ranker.factory import make_reranker
from promptrec.ranker.reranker import LLMReranker
from promptrec.retrieval.schema import Candidate, CandidateList
from promptrec.testing import FakeBackend

REPO = Path(__file__).resolve().parents[1]


def _candidates(n: int, user: str = "u") -> CandidateList:
    return CandidateList(user_id=user, history=[], candidates=[
        Candidate(item_id=str(i), title=f"Film {i}", text=f"Film {i} (1999), Drama", fused_score=1 / (i + 1),
                  rank=i + 1, popularity=i) for i in range(n)
    ])


# ----------------------------------------------------------------------------- 1. errors are not degradations


def test_more_candidates_than_letters_is_an_error_not_a_degradation():
    reranker = LLMReranker(FakeBackend(), "letters", timeout_s=5)
    with pytest.raises(PromptrecError, match="26 candidates at most, got 27"):
        reranker.run([], _candidates(27))
    with pytest.raises(SettingsError, match="n_candidates = 30.*26"):
        make_reranker(Settings(n_candidates=30), FakeBackend())
    assert make_reranker(Settings(n_candidates=30), FakeBackend(), "yesno").strategy.name == "yesno"


def test_timeout_must_be_positive():
    with pytest.raises(ValidationError, match="timeout_s"):
        RankerSettings(timeout_s=0)
    with pytest.raises(PromptrecError, match="timeout_s must be > 0"):
        LLMReranker(FakeBackend(), "letters", timeout_s=-1)


def test_generator_failures_degrade_and_are_logged(caplog):
    broken = FakeBackend(error=RuntimeError("CUDA out of memory"))
    with caplog.at_level(logging.WARNING, logger="promptrec"):
        result = LLMReranker(broken, "letters", timeout_s=5).run([], _candidates(4))
    assert result.degraded and "out of memory" in result.degraded_reason
    assert any("degraded" in r.message and "out of memory" in r.message for r in caplog.records)


# ----------------------------------------------------------------------------- 2. calibration keys and numbers


def test_calibration_key_changes_with_everything_that_changes_the_features():
    settings = Settings()
    base = calibration_key(make_reranker(settings, FakeBackend()), settings)
    variants = {
        "n_candidates": calibration_key(make_reranker(settings, FakeBackend()), settings, 15),
        "retrieval": calibration_key(
            make_reranker(settings, FakeBackend()),
            settings.model_copy(update={"retrieval": RetrievalSettings(weights={"transitions": 1.0})}),
        ),
        "permutations": calibration_key(make_reranker(settings, FakeBackend(), permutations=5), settings),
        "history_items": calibration_key(make_reranker(settings, FakeBackend(), history_items=3), settings),
    }
    for field, key in variants.items():
        assert [d[0] for d in base.differences(key)] == [field]
    # a calibration fitted for 20 candidates is refused for 15, naming the field
    x = np.random.default_rng(0).normal(size=(200, 9))
    y = (x[:, 0] > 0.5).astype(float)
    with pytest.raises(CalibrationMismatchError, match="n_candidates: fitted for 20, now 15"):
        fit_features(x, y, base).check_key(variants["n_candidates"])


def test_calibrations_written_before_the_full_key_are_refitted(tmp_path):
    old_key = CalibrationKey(model_id="m", template_hash="h", encoder="e", strategy="letters")
    assert {d[0] for d in old_key.differences(old_key.model_copy(update={"n_candidates": 20}))} == {"n_candidates"}


@pytest.mark.parametrize("field, value, message", [
    ("scales", 0.0, "scale is <= 0"), ("weights", float("nan"), "non-finite"), ("means", float("inf"), "non-finite"),
])
def test_calibration_with_bad_numbers_is_refused_on_load(tmp_path, field, value, message):
    x = np.random.default_rng(1).normal(size=(300, 9))
    y = (x[:, 0] + np.random.default_rng(2).normal(size=300) > 1).astype(float)
    key = CalibrationKey(model_id="m", template_hash="h", encoder="e", strategy="letters")
    path = fit_features(x, y, key).save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    data[field][0] = value
    path.write_text(json.dumps(data))  # json writes NaN / Infinity, which Python reads back
    with pytest.raises(PromptrecError, match=message):
        Calibrator.load(path)


def test_fit_reports_convergence():
    x = np.random.default_rng(3).normal(size=(500, 9))
    y = (x[:, 1] > 0).astype(float)
    fit = fit_features(x, y, CalibrationKey(model_id="m", template_hash="h", encoder="e", strategy="s")).fit
    assert fit.converged and fit.iterations > 0


def test_one_ordering_rule():
    # probabilities first, ties by the LLM score, then retrieval order; no calibration: LLM score
    assert final_order(4, [0.2, 0.5, 0.5, 0.1], [0.0, 1.0, 2.0, 3.0]) == [2, 1, 0, 3]
    assert final_order(3, None, [1.0, 3.0, 3.0]) == [1, 2, 0]
    assert final_order(3, None, None) == [0, 1, 2]


# ----------------------------------------------------------------------------- 6. settings typos


def test_unknown_nested_keys_are_rejected_everywhere():
    for section, model in (("retrieval", RetrievalSettings), ("ranker", RankerSettings)):
        with pytest.raises(ValidationError, match="Extra inputs"):
            model(nonsense=1)
    with pytest.raises(ValidationError, match="vllm.dtypee"):
        Settings(ranker={"vllm": {"dtypee": "float32"}})
    with pytest.raises(ValidationError, match="chroma.prot"):
        Settings(chroma={"prot": 1})


def test_unknown_env_var_and_missing_config_are_errors(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMPTREC_N_CANDIDATE", "5")
    with pytest.raises(SettingsError, match="PROMPTREC_N_CANDIDATE"):
        Settings()
    monkeypatch.delenv("PROMPTREC_N_CANDIDATE")
    monkeypatch.setenv("PROMPTREC_RANKER__TEMPLATE", "yesno")  # a real nested setting is fine
    assert Settings().ranker.template == "yesno"
    monkeypatch.setenv("PROMPTREC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="nope.toml.*not a file"):
        Settings()


def test_invalid_toml_names_file_and_line(monkeypatch, tmp_path):
    path = tmp_path / "conf.toml"
    path.write_text('dataset = "movielens-100k"\n\n[ranker]\ntemplate = letters\n')
    monkeypatch.setenv("PROMPTREC_CONFIG", str(path))
    with pytest.raises(SettingsError, match=r"conf\.toml: invalid TOML: .*line 4"):
        Settings()


def test_fusion_weights_are_checked():
    with pytest.raises(ValidationError, match="every fusion weight is 0"):
        RetrievalSettings(weights={"transitions": 0.0, "text": 0.0})
    with pytest.raises(ValidationError, match="unknown retrieval source"):
        RetrievalSettings(weights={"transition": 1.0})
    with pytest.raises(ValidationError, match=">= 0"):
        RetrievalSettings(weights={"transitions": 1.0, "text": -0.5})


# ----------------------------------------------------------------------------- 7. model folders


def _tiny_safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.arange(1000, dtype=np.float32)}, str(path))


def test_truncated_safetensors_and_missing_tokenizer_are_named(tmp_path):
    from promptrec.model_files import check_model_dir, model_dir_problems, safetensors_problem

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _tiny_safetensors(folder / "model.safetensors")
    assert safetensors_problem(folder / "model.safetensors") is None
    assert model_dir_problems(folder) == ["the tokenizer is missing (none of tokenizer.json, tokenizer.model, vocab.json)"]
    (folder / "tokenizer.json").write_text("{}")
    assert model_dir_problems(folder) == []
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(AssetError, match=r"model\.safetensors: .*truncated.*promptrec models fetch tiny"):
        check_model_dir(folder, "tiny")


def test_a_truncated_download_is_fetched_again(tmp_path):
    """`models fetch` trusts a finished folder only when its weights are whole (the marker check)."""
    from promptrec import assets
    from promptrec.assets import store

    asset = next(a for a in assets.list_assets("generator"))
    folder = tmp_path / "hf"
    folder.mkdir()
    _tiny_safetensors(folder / "model.safetensors")
    store.write_marker(folder, store.marker_payload(asset, ["model.safetensors"]))
    assert store.marker_ok(folder, asset)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-8])
    assert not store.marker_ok(folder, asset)


def test_model_folder_without_tokenizer_fails_at_backend_construction(tmp_path):
    from promptrec.ranker.factory import make_backend

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _tiny_safetensors(folder / "model.safetensors")
    with pytest.raises(AssetError, match="tokenizer is missing"):
        make_backend(Settings(generator=str(folder)))


# ----------------------------------------------------------------------------- 8. the timeout does not leak


def test_a_timed_out_computation_does_not_time_out_the_next_user():
    backend = FakeBackend(hang_s=30, hang_calls=1)
    first = LLMReranker(backend, "letters", timeout_s=0.2).run([], _candidates(4, "slow"))
    assert first.degraded and "RerankTimeout" in first.degraded_reason
    # the abandoned computation holds the backend for another second; the next user's timeout
    # starts once it is done, so that user gets scores
    threading.Timer(1.0, backend.release).start()
    reranker = LLMReranker(backend, "letters", timeout_s=0.6)
    second = reranker.run([], _candidates(4, "next"))
    assert not second.degraded, second.degraded_reason
    assert backend.calls["next_token_logprobs"] == 2 and reranker.timeouts == 0


def test_recommender_close_and_context_manager(monkeypatch):
    from promptrec.recommender import Recommender
    from promptrec.ranker import factory

    owned = FakeBackend()
    monkeypatch.setattr(factory, "make_backend", lambda settings: owned)
    with Recommender([], {}, index=None, settings=Settings()) as rec:
        assert rec.backend is owned
    assert owned.closed and rec._backend is None
    shared = FakeBackend()
    rec = Recommender([], {}, index=None, settings=Settings())
    rec.use_backend(shared)
    rec.close()
    assert not shared.closed  # a backend handed in belongs to the caller


# ----------------------------------------------------------------------------- 9. declared imports


def test_every_third_party_import_is_declared():
    declared = {
        dep.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower().replace("_", "-")
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    optional = {"vllm", "lightfm", "peft", "openai", "fastapi", "uvicorn", "prometheus_client", "ray", "playwright", "selenium"}
    distributions = metadata.packages_distributions()
    missing = set()
    for path in (REPO / "promptrec").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {  # imports inside `try: ... except ImportError:` are optional by construction
            id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
            and any("ImportError" in ast.dump(h.type) for h in node.handlers if h.type is not None)
            for stmt in node.body for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top == "promptrec" or top in optional or top in __import__("sys").stdlib_module_names:
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.add((top, path.relative_to(REPO).as_posix()))
    assert not missing, sorted(missing)


# ----------------------------------------------------------------------------- 3, 4, 7: on a real index


@pytest.fixture
def built(ml_slice, index_settings):
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    return Recommender.from_interactions(items, frame, index_settings, namespace="robust")


@pytest.mark.integration
def test_damaged_index_files_are_named_and_rebuild_mends_them(built, ml_slice, index_settings):
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    layout = index_settings.index_layout()
    for name in ("manifest.json", "transitions.npz"):
        path = layout.live().root / name
        original = path.read_bytes()
        path.write_bytes(original[: len(original) // 2])
        with pytest.raises(IndexMismatchError, match=f"{name}.*promptrec index --rebuild"):
            Recommender.open(items, frame, index_settings, "robust")
        # a plain build notices the damaged file and writes it again
        Recommender.from_interactions(items, frame, index_settings, namespace="robust")
        assert len(Recommender.open(items, frame, index_settings, "robust").candidates("2", 5).candidates) == 5
    sqlite = layout.live().chroma / "chroma.sqlite3"
    sqlite.write_bytes(b"not a database" * 100)
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(layout.live().chroma), None)  # as a new process sees it
    with pytest.raises(IndexMismatchError, match="chroma.*promptrec index --rebuild"):
        Recommender.open(items, frame, index_settings, "robust")
    rebuilt = Recommender.from_interactions(items, frame, index_settings, namespace="robust", rebuild=True)
    assert len(rebuilt.candidates("2", 5).candidates) == 5


def test_an_index_folder_with_someone_elses_files_is_refused_untouched(index_settings):
    """Refused before anything loads or is written (no model, no Chroma)."""
    from promptrec.data.schema import Interaction, Item
    from promptrec.index_layout import ForeignFilesError
    from promptrec.recommender import Recommender

    items = [Item(item_id="a", title="A"), Item(item_id="b", title="B")]
    frame = [Interaction(user_id="1", item_id="a", timestamp=1.0), Interaction(user_id="1", item_id="b", timestamp=2.0)]
    folder = index_settings.resolved_index_dir()
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"name": "my web app", "icons": []}', encoding="utf-8")
    (folder / "app.js").write_text("console.log(1)", encoding="utf-8")
    with pytest.raises(ForeignFilesError, match=r"manifest\.json \(not an index manifest\).*app\.js"):
        Recommender.from_interactions(items, frame, index_settings, namespace="robust")
    assert sorted(p.name for p in folder.iterdir()) == ["app.js", "manifest.json"]
    assert "my web app" in (folder / "manifest.json").read_text(encoding="utf-8")


@pytest.mark.integration
def test_rebuilds_keep_a_users_file_in_the_chroma_folder_and_adopt_an_unmarked_index(built, ml_slice, index_settings):
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    layout = index_settings.index_layout()
    assert layout.marker.is_file()
    mine = layout.live().chroma / "notes.txt"
    mine.write_text("keep me", encoding="utf-8")
    for _ in range(3):  # the version holding the file is replaced, then would be deleted
        Recommender.from_interactions(items, frame, index_settings, namespace="robust", rebuild=True)
    assert mine.read_text(encoding="utf-8") == "keep me"
    assert mine.parent.parent != layout.live().root and len(list(layout.versions.iterdir())) == 3
    layout.marker.unlink()  # an index written before the marker existed is still promptrec's
    Recommender.from_interactions(items, frame, index_settings, namespace="robust")
    assert layout.marker.is_file()


@pytest.mark.integration
def test_a_truncated_sequential_checkpoint_is_named_and_a_build_retrains_it(built, ml_slice, index_settings):
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    checkpoint = index_settings.index_layout().live().sequential_checkpoint
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(IndexMismatchError, match=r"sequential_model\.pt is damaged.*promptrec train retriever"):
        Recommender.open(items, frame, index_settings, "robust")
    rebuilt = Recommender.from_interactions(items, frame, index_settings, namespace="robust")
    assert rebuilt.index.manifest.sequential_trained and len(rebuilt.candidates("2", 5).candidates) == 5


@pytest.mark.integration
def test_a_plain_build_rewrites_a_damaged_vector_segment(built, ml_slice, index_settings):
    """The item list lives in SQLite and still looks complete; the HNSW files hold the vectors."""
    from chromadb.api.shared_system_client import SharedSystemClient

    from promptrec.recommender import Recommender

    items, frame = ml_slice
    chroma = index_settings.index_layout().live().chroma
    segments = sorted(chroma.glob("*/data_level0.bin"))
    assert segments, "the slice's vectors should be persisted as HNSW segment files"
    built.close()
    SharedSystemClient._identifier_to_system.pop(str(chroma), None)  # as a new process sees it
    for data in segments:
        data.write_bytes(b"\x00" * data.stat().st_size)
    rebuilt = Recommender.from_interactions(items, frame, index_settings, namespace="robust")
    sync = rebuilt.index.manifest.text_sync
    assert sync.unchanged == 0 and sync.added == len(items)
    assert len(rebuilt.candidates("2", 5).candidates) == 5


@pytest.mark.integration
def test_a_build_holds_the_index_lock(ml_slice, index_settings):
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    seen = []

    def probe(stage, advance, total):
        if seen:
            return
        with open(index_settings.resolved_index_dir() / ".build.lock", "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                seen.append("held")

    Recommender.from_interactions(items, frame, index_settings, namespace="locked", progress=probe)
    assert seen == ["held"]


@pytest.mark.integration
def test_repeated_items_go_through_the_same_preprocessing(ml_slice, index_settings):
    import pandas as pd

    from promptrec.recommender import Recommender

    items, frame = ml_slice
    repeated = pd.concat([frame, frame[frame["user_id"] == "1"].head(3)], ignore_index=True)
    rec = Recommender.from_interactions(items, repeated, index_settings, namespace="repeats")
    history = rec.history("1")
    assert len(history) == len(set(history)) == (frame["user_id"] == "1").sum()
    assert len(rec.candidates("1", 10).candidates) == 10
    assert Recommender.open(items, repeated, index_settings, "repeats").history("1") == history


@pytest.mark.integration
def test_filters_through_candidates_and_bad_operators(built):
    found = built.candidates("2", 5, where={"genre_Comedy": True})
    assert found.candidates and all("Comedy" in (c.text or "") for c in found.candidates)
    with pytest.raises(PromptrecError, match="matches no item.*genre_Comedy"):
        built.candidates("2", 5, where={"genre_comedy": True})
    with pytest.raises(PromptrecError, match="invalid metadata filter.*\\$bad"):
        built.candidates("2", 5, where={"genre_Comedy": {"$bad": True}})
    with pytest.raises(ValueError, match="positive"):
        built.candidates("2", 0)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_index_dir_is_named(ml_slice, tmp_path, asset_settings):
    from promptrec.recommender import Recommender

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    settings = asset_settings.model_copy(update={"index_dir": folder / "index"})
    with pytest.raises(PromptrecError, match="ro"):
        Recommender.from_interactions(*ml_slice, settings, namespace="ro")


def test_atomic_writes_get_the_mode_a_plain_write_gets(tmp_path):
    """Index manifests, checkpoints and run manifests go through `atomic_write`; its temporary
    file must not leave them 0600 (unreadable to the other users of a shared index)."""
    from promptrec.paths import atomic_write_text

    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    atomic = atomic_write_text(tmp_path / "atomic.json", "{}")
    assert atomic.read_text() == "{}"
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system with little room: a tmpfs mounted for the test (needs root)."""
    import subprocess

    def mount(size_bytes: int) -> Path:
        folder = tmp_path / "small-disk"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
        mounted.append(folder)
        return folder

    mounted: list[Path] = []
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.integration
def test_a_build_that_fills_the_disk_says_so_and_the_served_version_stays(built, ml_slice, index_settings, small_disk):
    import shutil

    from chromadb.api.shared_system_client import SharedSystemClient

    from promptrec.paths import DiskFullError
    from promptrec.recommender import Recommender

    items, frame = ml_slice
    source = index_settings.resolved_index_dir()
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    disk = small_disk(int(size * 1.5))  # room for the served version, not for a second one
    shutil.copytree(source, disk / "index")
    settings = index_settings.model_copy(update={"index_dir": disk / "index"})
    served = settings.index_layout().live()
    SharedSystemClient._identifier_to_system.pop(str(served.chroma), None)
    with pytest.raises(DiskFullError, match=r"no space left on the disk holding .*small-disk.* served is unchanged"):
        Recommender.from_interactions(items, frame, settings, namespace="robust", rebuild=True)
    assert settings.index_layout().live() == served
    assert [p.name for p in settings.index_layout().versions.iterdir()] == [served.name]  # the partial one is gone
    assert len(Recommender.open(items, frame, settings, "robust").candidates("2", 5).candidates) == 5
