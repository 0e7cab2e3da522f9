"""A feature used without its extra says which extra to install (no bare ImportError)."""

from __future__ import annotations

import importlib
import sys

import pytest

from promptrec.extras import MissingExtraError, require


def _without(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def test_require_names_the_extra(monkeypatch):
    _without(monkeypatch, "fastapi")
    with pytest.raises(MissingExtraError, match=r'the HTTP service needs the package \'fastapi\'.*promptrec\[serve\]'):
        require("fastapi", "serve", "the HTTP service")
    assert require("json", "serve", "x") is importlib.import_module("json")


def test_the_service_without_the_serve_extra(monkeypatch):
    _without(monkeypatch, "fastapi")
    for name in [m for m in sys.modules if m == "promptrec.serve" or m.startswith("promptrec.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError, match=r"promptrec\[serve\]"):
        importlib.import_module("promptrec.serve")


def test_lora_tuning_without_the_train_extra(monkeypatch):
    from promptrec.ranker.adapters import TuningConfig
    from promptrec.train.ranker import RankerTrainer

    _without(monkeypatch, "peft")
    with pytest.raises(MissingExtraError, match=r"promptrec\[train\]"):
        RankerTrainer("no-model-is-loaded-before-the-check", "m", TuningConfig())


def test_lightfm_without_the_baselines_extra(monkeypatch):
    from promptrec.eval.baselines import BaselineUnavailable, LightFMRanker
    from promptrec.eval.suite import LightFMParams

    _without(monkeypatch, "lightfm")
    with pytest.raises(BaselineUnavailable, match=r"promptrec\[baselines\]"):
        LightFMRanker(LightFMParams(), seed=0).prepare(None)


def test_the_ray_engine_without_the_ray_extra(monkeypatch, tmp_path):
    from promptrec.batch import batch_recommend

    _without(monkeypatch, "ray", "ray.data")
    with pytest.raises(MissingExtraError, match=r"the Ray engine.*promptrec\[ray\]"):
        batch_recommend(tmp_path / "out", engine="ray")  # before any index is opened
    assert not (tmp_path / "out").exists()
