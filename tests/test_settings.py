"""Settings take only values that mean something: each numeric setting has a range, and a value
outside it is an error naming the key (never a silently odd index or list)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from promptrec.config import Settings, describe_validation_error

OUT_OF_RANGE = [
    ("retrieval", {"pool_size": 0}, "retrieval.pool_size"),  # silently dropped two sources
    ("retrieval", {"text_recency_half_life": 0}, "retrieval.text_recency_half_life"),  # NaN scores
    ("retrieval", {"transition_recency_decay": -5}, "retrieval.transition_recency_decay"),
    ("retrieval", {"transition_recency_decay": 1.5}, "retrieval.transition_recency_decay"),
    ("retrieval", {"rrf_k": -1}, "retrieval.rrf_k"),
    ("retrieval", {"als_factors": 0}, "retrieval.als_factors"),
    ("retrieval", {"weights": {"text": math.inf}}, "retrieval.weights"),
    ("retrieval", {"weights": {"text": math.nan}}, "retrieval.weights"),
    ("retrieval", {"sequential": {"dropout": 1.0}}, "retrieval.sequential.dropout"),
    ("retrieval", {"sequential": {"lr": 0}}, "retrieval.sequential.lr"),
    ("retrieval", {"sequential": {"hidden": 64, "heads": 3}}, "retrieval.sequential"),
    ("ranker", {"timeout_s": math.inf}, "ranker.timeout_s"),  # every list degraded (OverflowError)
    ("ranker", {"timeout_s": 0}, "ranker.timeout_s"),
    ("ranker", {"permutations": 0}, "ranker.permutations"),
    ("ranker", {"vllm": {"max_retries": -1}}, "ranker.vllm.max_retries"),
    ("ranker", {"vllm": {"backoff_s": math.nan}}, "ranker.vllm.backoff_s"),
    ("chroma", {"port": 70000}, "chroma.port"),
    ("data", {"k_core": [0, 5]}, "data.k_core"),
]


def test_device_must_be_one_torch_knows():
    with pytest.raises(ValidationError) as caught:
        Settings(device="gpu")
    assert "device" in describe_validation_error(caught.value)
    assert Settings(device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("name", ["PROMPTREC_RETRIEVAL", "PROMPTREC_RETRIEVAL__WEIGHTS", "PROMPTREC_DATA__K_CORE"])
def test_bad_json_in_an_environment_variable_names_the_variable(monkeypatch, name):
    from promptrec.errors import SettingsError

    monkeypatch.setenv(name, "{text: 1")
    with pytest.raises(SettingsError, match=name):
        Settings()


@pytest.mark.parametrize(("section", "value", "key"), OUT_OF_RANGE, ids=[c[2] + "=" + str(c[1]) for c in OUT_OF_RANGE])
def test_out_of_range_setting_is_an_error_naming_the_key(section, value, key):
    with pytest.raises(ValidationError) as caught:
        Settings(**{section: value})
    assert key in describe_validation_error(caught.value)


def test_the_defaults_and_no_timeout_are_valid():
    settings = Settings(ranker={"timeout_s": None})
    assert settings.ranker.timeout_s is None and settings.retrieval.pool_size >= 1


def test_out_of_range_environment_variable_names_the_key(monkeypatch):
    monkeypatch.setenv("PROMPTREC_RETRIEVAL__POOL_SIZE", "0")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "retrieval.pool_size" in describe_validation_error(caught.value)
