"""Batch recommendations on a real slice index and the tiny real generator: the rows equal
`recommend()`'s, the Ray engine (a real local cluster, 2 CPUs, no dashboard) writes the local
engine's rows, a killed actor or an interrupted job leaves complete output, bad input is named."""

from __future__ import annotations

import signal
import socket
import time

import psutil
import pytest

from promptrec.batch import BatchOutputError, batch_recommend
from promptrec.fanout import ClusterError
from promptrec.config import RankerSettings
from promptrec.recommender import Recommender

pytestmark = pytest.mark.integration

USERS = ["1", "2", "3", "no-such-user", "5", "6", "7", "8", "9"]


@pytest.fixture(scope="module")
def settings(ml_slice_dir, asset_settings, tmp_path_factory):
    """Settings that load the slice by name (as a Ray actor opens them), its index built."""
    settings = asset_settings.model_copy(update={
        "dataset": str(ml_slice_dir), "index_dir": tmp_path_factory.mktemp("batch-index"), "n_candidates": 10,
        "ranker": RankerSettings(permutations=1, history_items=5)})
    Recommender.from_settings(settings, build=True).close()
    return settings


@pytest.fixture(scope="module")
def local_rows(settings, tmp_path_factory):
    """The local engine's rows for USERS, with one torch thread (as each Ray actor below)."""
    out = tmp_path_factory.mktemp("local")
    summary = batch_recommend(out, settings=settings, users=USERS, k=4, shard_users=2, threads=1)
    return summary, out


def _table(folder):
    import pyarrow.parquet as pq

    return pq.read_table(folder).replace_schema_metadata(None).sort_by([("user_id", "ascending"), ("rank", "ascending")])


def test_an_unreachable_cluster_fails_fast_naming_the_address(settings, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"127.0.0.1:{port}"):
        batch_recommend(tmp_path / "out", settings=settings, users=USERS, engine="ray", address=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_local_rows_equal_recommend_and_unknown_users_are_reported(settings, local_rows):
    summary, out = local_rows
    assert summary.complete and summary.users == 9 and summary.users_done == 8 and summary.unknown_users == 1
    assert (out / "_unknown_users.txt").read_text() == "no-such-user\n"
    assert summary.shards == 5 and summary.rows == 8 * 4
    rows = _table(out).to_pylist()
    from promptrec.hardware import compute_threads

    with compute_threads(1):  # the local run's threads
        with Recommender.from_settings(settings, build=False) as rec:
            for user in ("1", "9"):
                listed = rec.recommend(user, k=4)
                mine = [r for r in rows if r["user_id"] == user]
                assert [(r["item_id"], r["rank"], r["llm_score"], r["retrieval_score"], r["mode"], r["degraded"])
                        for r in mine] == [(x.item_id, x.rank, x.llm_score, x.retrieval_score, listed.mode,
                                            listed.degraded) for x in listed.recommendations]
                assert {r["template_hash"] for r in mine} == {listed.template_hash}
                assert {r["model_id"] for r in mine} == {listed.model_id}
    assert {r["mode"] for r in rows} == {"llm"} and all(r["llm_score"] is not None for r in rows)


def test_an_interrupted_job_resumes_and_another_job_is_refused(settings, local_rows, tmp_path):
    _, reference = local_rows
    out = tmp_path / "out"

    class Interrupted(Exception):
        pass

    def stop_after_two(stage, advance, total):
        if stage.startswith("users |") and len(list(out.glob("part-*.parquet"))) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        batch_recommend(out, settings=settings, users=USERS, k=4, shard_users=2, threads=1, progress=stop_after_two)
    resumed = batch_recommend(out, settings=settings, users=USERS, k=4, shard_users=2, threads=1)
    assert resumed.complete and resumed.shards_this_run == 3 and resumed.unknown_users == 1
    assert _table(out).equals(_table(reference))
    with pytest.raises(BatchOutputError, match="k: 4 there, 3 now"):
        batch_recommend(out, settings=settings, users=USERS, k=3, shard_users=2)
    assert _table(out).equals(_table(reference))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _actors() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "MapWorker" in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_the_ray_engine_writes_the_local_engines_rows(settings, local_rows, ray_cluster, tmp_path):
    _, reference = local_rows
    summary = batch_recommend(tmp_path / "ray", settings=settings, users=USERS, k=4, shard_users=2, engine="ray",
                              actors=2, threads=1)
    assert summary.complete and summary.unknown_users == 1 and summary.users_done == 8
    assert (tmp_path / "ray" / "_unknown_users.txt").read_text() == "no-such-user\n"
    assert len(summary.workers) == 2 and summary.cluster["actors"] == 2
    assert _table(tmp_path / "ray").equals(_table(reference))


def test_a_killed_actor_is_replaced_and_the_output_is_complete(settings, local_rows, ray_cluster, tmp_path):
    _, reference = local_rows
    killed: list[int] = []

    def kill_one_actor(stage, advance, total):
        if stage.startswith("users |") and not killed:  # a shard is done; the pool is busy with the next
            victim = _actors()[0]
            killed.append(victim.pid)
            victim.send_signal(signal.SIGKILL)

    summary = batch_recommend(tmp_path / "ray", settings=settings, users=USERS, k=4, shard_users=2, engine="ray",
                              actors=2, threads=1, progress=kill_one_actor)
    assert killed
    assert summary.complete and summary.shards_this_run == summary.shards == 5
    table = _table(tmp_path / "ray")
    assert table.equals(_table(reference))  # no user missing, none twice
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    # a job cut short (two shards lost with it) and run again computes only those, on Ray too
    for shard in ("part-00001.parquet", "part-00003.parquet"):
        (tmp_path / "ray" / shard).unlink()
    resumed = batch_recommend(tmp_path / "ray", settings=settings, users=USERS, k=4, shard_users=2, engine="ray",
                              actors=2, threads=1)
    assert resumed.complete and resumed.shards_this_run == 2 and _table(tmp_path / "ray").equals(_table(reference))


def test_the_command_line_writes_the_job_and_names_bad_input(settings, local_rows, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from promptrec.cli import app

    _, reference = local_rows
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTREC_CONFIG", raising=False)
    for name, value in {"DATASET": settings.dataset, "INDEX_DIR": settings.index_dir, "CACHE_DIR": settings.cache_dir,
                        "N_CANDIDATES": 10, "RANKER__PERMUTATIONS": 1, "RANKER__HISTORY_ITEMS": 5}.items():
        monkeypatch.setenv(f"PROMPTREC_{name}", str(value))
    (tmp_path / "users.txt").write_text("# nightly list\n" + "\n".join(USERS) + "\n\n")
    runner = CliRunner()
    done = runner.invoke(app, ["batch", "recommend", "--out", "out", "--users", "users.txt", "-k", "4",
                               "--shard-users", "2", "--threads", "1", "-q"])
    assert done.exit_code == 0, done.output
    assert "8 users ranked, 32 rows in 5 shards" in " ".join(done.output.split())
    assert "1 users unknown" in done.output and "_unknown_users.txt" in " ".join(done.output.split())
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "out")) == 32  # the folder reads as one table
    assert _table(tmp_path / "out").equals(_table(reference))
    for args, needle in ((["--users", "missing.txt"], "missing.txt"), (["--engine", "spark"], "--engine"),
                         (["-k", "3"], "another job's shards")):
        bad = runner.invoke(app, ["batch", "recommend", "--out", "out", "--users", "users.txt", "--shard-users", "2",
                                  "-k", "4", *args])
        assert bad.exit_code == 2 and "Traceback" not in bad.output and needle in " ".join(bad.output.split()), bad.output


def test_the_index_build_encodes_the_text_on_ray_into_equal_vectors(ml_slice, asset_settings, ray_cluster, tmp_path):
    """`ray.encode_text`: the catalog's text vectors come from encoder actors; they equal the
    local build's (to float noise: the actors run other thread counts) and retrieve the same."""
    import numpy as np

    from promptrec.config import RaySettings

    items, frame = ml_slice
    built, stages = {}, {}
    for name, ray in (("local", RaySettings()), ("ray", RaySettings(encode_text=True, actors=2))):
        settings = asset_settings.model_copy(update={"index_dir": tmp_path / name, "n_candidates": 10, "ray": ray})
        seen = stages[name] = {}

        def report(stage, advance, total, seen=seen):
            seen[stage] = seen.get(stage, 0) + advance

        built[name] = Recommender.from_interactions(items, frame, settings, namespace="encode", progress=report)
    assert stages["ray"]["text vectors (ray)"] == len(items) and "text vectors (ray)" not in stages["local"]
    ids = sorted(it.item_id for it in items)
    (ids_a, a), (ids_b, b) = (built[name].index.text.vectors(ids) for name in ("local", "ray"))
    assert ids_a == ids_b and len(ids_a) == len(items)
    np.testing.assert_allclose(a, b, atol=1e-5)
    for user in ("1", "7"):
        assert ([c.item_id for c in built["local"].candidates(user).candidates]
                == [c.item_id for c in built["ray"].candidates(user).candidates])
    for rec in built.values():
        rec.close()
