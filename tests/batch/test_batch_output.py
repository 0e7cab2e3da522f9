"""The batch output folder: whole shards, resumption, and refusing another job's files."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from promptrec.batch.output import BatchIdentity, BatchOutput, BatchOutputError, ShardInfo
from promptrec.batch.rows import ROW_SCHEMA, recommendation_rows
from promptrec.schema import Recommendation, RecommendationList


def _identity(**changes) -> BatchIdentity:
    base = dict(index_version="20261205T000000-abcdef", settings_digest="d1", k=3, users_digest="u1", users=4,
                shard_users=2)
    return BatchIdentity(**(base | changes))


def _info(shard: int, unknown=()) -> ShardInfo:
    return ShardInfo(shard=shard, users=2, unknown=list(unknown), degraded_users=0, seconds=0.1, worker="h:1",
                     threads=1, peak_rss_bytes=1)


def _list(user: str) -> RecommendationList:
    recs = [Recommendation(item_id=str(i), title=f"t{i}", rank=i, probability=None, llm_score=-float(i),
                           retrieval_score=0.5, retrieval_rank=i) for i in (1, 2, 3)]
    return RecommendationList(user_id=user, recommendations=recs, strategy="letters", template="letters",
                              template_hash="h", model_id="m", calibrated=False, degraded=user == "2",
                              degraded_reason="timeout" if user == "2" else None)


def test_rows_follow_the_schema_and_carry_the_flags():
    table = recommendation_rows([_list("1"), _list("2")], "v1")
    assert table.schema == ROW_SCHEMA and table.num_rows == 6
    rows = table.to_pylist()
    assert [r["rank"] for r in rows[:3]] == [1, 2, 3] and rows[0]["probability"] is None
    assert rows[3]["degraded"] and rows[3]["degraded_reason"] == "timeout" and rows[0]["index_version"] == "v1"


def test_shards_are_written_whole_and_a_rerun_resumes(tmp_path):
    out = BatchOutput(tmp_path / "out", _identity())
    out.open()
    out.write_shard(_info(0, unknown=["x"]), recommendation_rows([_list("1")], "v1"))
    (tmp_path / "out" / ".part-00001.parquet.tmp").write_bytes(b"cut off by a kill")
    again = BatchOutput(tmp_path / "out", _identity())
    again.open()
    assert list(again.done()) == [0] and again.done()[0].unknown == ["x"]
    assert not (tmp_path / "out" / ".part-00001.parquet.tmp").exists()
    assert pq.read_table(tmp_path / "out" / "part-00000.parquet").num_rows == 3
    assert again.read().schema.metadata is None and again.read().num_rows == again.row_count() == 3


def test_another_jobs_folder_is_refused_unless_overwrite(tmp_path):
    out = BatchOutput(tmp_path / "out", _identity())
    out.open()
    shard = out.write_shard(_info(0), recommendation_rows([_list("1")], "v1"))
    other = BatchOutput(tmp_path / "out", _identity(k=5, index_version="20261206T000000-123456"))
    with pytest.raises(BatchOutputError, match=r"another job's shards \(index_version: .*k: 3 there, 5 now"):
        other.open()
    assert shard.exists()
    other.open(overwrite=True)
    assert not shard.exists() and other.done() == {}


def test_a_folder_with_files_not_ours_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BatchOutputError, match="notes.txt"):
        BatchOutput(tmp_path, _identity()).open(overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "part-00000.parquet").write_bytes(b"someone else's")
    with pytest.raises(BatchOutputError, match="no _batch.json"):
        BatchOutput(tmp_path, _identity()).open()
