"""The live store on its two databases: SQLite in WAL mode and a real PostgreSQL server that the
test starts; two store objects on one database stand for two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from promptrec.data.schema import Interaction, Item
from promptrec.store import LiveStore, StoreError, sqlite_url
from promptrec.store.events import merged_log

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "live.sqlite")
    pg = request.getfixturevalue("postgres_url")
    store = LiveStore(pg)  # a clean database for each test
    with store.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE events, items, erased_users, conversations RESTART IDENTITY")
    store.close()
    return pg


def test_two_workers_share_events_items_and_erasures(url):
    one, two = LiveStore(url), LiveStore(url)
    first, last = one.add_events([Interaction(user_id="u1", item_id="a", timestamp=20.0),
                                  Interaction(user_id="u1", item_id="b", timestamp=10.0)])
    assert (first, last) == (1, 2)
    assert [e["item_id"] for e in two.user_events("u1")] == ["b", "a"]  # by timestamp
    assert [e["item_id"] for e in two.user_events("u1", after_seq=1)] == ["b"]
    two.put_items([Item(item_id="new", title="New Film", year=2026)])
    assert one.item("new").title == "New Film" and one.item("nope") is None
    two.put_items([Item(item_id="new", title="New Film, renamed", year=2026)])
    assert one.item("new").title == "New Film, renamed" and len(one.all_items()) == 1
    assert one.erase_user("u1") == 2
    assert two.is_erased("u1") and two.user_events("u1") == [] and two.count_events() == 0
    seq, until = one.snapshot_mark()
    assert seq == 0 and until > 0  # the last stored event's seq: none is left
    assert one.add_events([Interaction(user_id="u2", item_id="a")]) == (3, 3)  # the erased events' seqs are not given again


def test_a_build_reads_the_store_as_of_its_mark(url):
    store = LiveStore(url)
    items = [Item(item_id="a", title="A"), Item(item_id="b", title="B")]
    log = [Interaction(user_id="u1", item_id="a", timestamp=1.0), Interaction(user_id="u2", item_id="b", timestamp=1.0)]
    store.add_events([Interaction(user_id="u1", item_id="b", timestamp=2.0)])
    store.put_items([Item(item_id="c", title="C")])
    store.erase_user("u2")
    merged_items, frame, mark = merged_log(items, log, store)
    assert [it.item_id for it in merged_items] == ["a", "b", "c"]
    assert sorted(zip(frame["user_id"], frame["item_id"])) == [("u1", "a"), ("u1", "b")]
    store.add_events([Interaction(user_id="u1", item_id="c", timestamp=3.0)])
    again, frame_again, _ = merged_log(items, log, store, mark)  # the same data as the build read
    assert [it.item_id for it in again] == ["a", "b", "c"] and len(frame_again) == len(frame)


def test_a_bad_url_names_itself_without_the_password():
    with pytest.raises(StoreError, match="only sqlite"):
        LiveStore("mysql://user:secret@host/db")
    with pytest.raises(StoreError) as err:
        LiveStore("postgresql+psycopg://user:secret@127.0.0.1:9/none")
    assert "secret" not in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_acknowledged_events_survive_kill_9(url, tmp_path):
    """A writer prints each batch's seq after add_events returns; killed with SIGKILL mid-run,
    every batch it acknowledged is in the store."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from promptrec.data.schema import Interaction
        from promptrec.store import LiveStore
        store = LiveStore({url!r})
        for n in range(100000):
            first, last = store.add_events([Interaction(user_id=f"u{{n}}", item_id="a") for _ in range(20)])
            print(last, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    acked = 0
    for line in proc.stdout:
        acked = int(line)
        if acked >= 2000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    store = LiveStore(url)
    assert store.count_events() >= acked >= 2000
    assert store.count_events() % 20 == 0  # a batch is all or nothing


def test_workers_opening_a_new_sqlite_store_together_all_open_it(tmp_path):
    """Workers start at once and each creates the tables if they are missing: none may fail with
    "database is locked" (the check for the tables turning into their creation used to)."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from promptrec.store import LiveStore, sqlite_url
        sys.stdin.readline()  # start together
        LiveStore(sqlite_url(Path(sys.argv[1]))).close()
    """)
    for round_ in range(10):
        path = tmp_path / f"round-{round_}" / "live.sqlite"
        workers = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
        assert [w.returncode for w in workers] == [0] * 4, "\n".join(errors)
        assert LiveStore(sqlite_url(path)).count_events() == 0
