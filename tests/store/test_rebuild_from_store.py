"""A build reads the live store: the events and items written through the API join the
training data, erased users leave it, and the served history counts nothing twice."""

from __future__ import annotations

import pytest

from promptrec.config import Settings
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration


def test_a_rebuild_trains_on_the_store_and_forgets_erased_users(slice_env):
    settings = Settings()
    rec = Recommender.from_settings(settings)
    assert rec.index.manifest.store_seq == 0
    item = rec.recommend("1", k=1).recommendations[0].item_id
    receipt = rec.add_interactions([{"user_id": "1", "item_id": item, "timestamp": 2e9}])
    rec.add_items([{"item_id": "live-1", "title": "A Film Added Live", "year": 2026, "genres": ["Drama"]}])
    rec.forget_user("2")
    assert rec.history("1")[-1] == item
    rebuilt = Recommender.from_settings(settings, retrain=True)  # `promptrec train retriever`
    assert rebuilt.index.manifest.store_seq == receipt.last_seq
    assert rebuilt.histories["1"][-1] == item and rebuilt.history("1").count(item) == 1
    assert "2" not in rebuilt.histories and "live-1" in rebuilt.index.position
    reopened = Recommender.from_settings(settings, build=False)  # what `promptrec serve` opens
    assert reopened.history("1") == rebuilt.history("1")
    later = rec.recommend("3", k=1).recommendations[0].item_id
    reopened.add_interactions([{"user_id": "3", "item_id": later}])
    assert Recommender.from_settings(settings, build=False).history("3")[-1] == later  # after the mark: live
