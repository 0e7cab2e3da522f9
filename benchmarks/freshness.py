"""The live service's write path and freshness, measured on a real uvicorn worker on loopback.

A copy of the MovieLens-100K index (the cached one, copied so the benchmark writes into a live
store of its own) is served in retrieval mode by `promptrec.serve.create_app` under uvicorn.
Then, side by side in one run:

* ``/events`` latency: ``--batches`` POSTs of 100 events each (random users and items of the
  catalog), p50 / p95 / max;
* freshness: for ``--users`` users, the time from sending one event (an item of the user's
  current list) until a ``/recommend`` answer that reflects it (the item gone from the list),
  polling as fast as the worker answers: p50 / p95 / max, and how many needed more than the
  first ``/recommend`` after the acknowledgement;
* the store's event count after the run against the events acknowledged.

    python benchmarks/freshness.py [--store-url postgresql+psycopg://...] [--batches 200] [--users 50]

Targets (issue #29): /events p95 <= 50 ms for 100 events on SQLite; freshness p95 <= 1 s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _common import free_port, percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-url", default=None, help="a PostgreSQL URL (default: SQLite in the index folder)")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import uvicorn

    from promptrec.config import Settings
    from promptrec.hardware import hardware_info
    from promptrec.recommender import Recommender
    from promptrec.serve import create_app

    base = Settings()
    work = Path(tempfile.mkdtemp(prefix="promptrec-freshness-"))
    shutil.copytree(base.resolved_index_dir(), work / "index")
    update = {"index_dir": work / "index", "ranker": base.ranker.model_copy(update={"mode": "retrieval"})}
    if args.store_url:
        update["store"] = base.store.model_copy(update={"url": args.store_url})
    rec = Recommender.from_settings(base.model_copy(update=update), build=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rec, preload=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    rng = random.Random(args.seed)
    users, items = sorted(rec.histories), [it.item_id for it in rec.items]
    acked = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        event_ms = []
        for _ in range(args.batches):
            batch = [{"user_id": rng.choice(users), "item_id": rng.choice(items)} for _ in range(100)]
            t0 = time.perf_counter()
            r = client.post("/events", json={"events": batch})
            event_ms.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            acked += r.json()["accepted"]
        fresh_s, retries = [], 0
        for user in rng.sample(users, args.users):
            answer = client.post("/recommend", json={"user_id": user, "k": 10})
            assert answer.status_code == 200, answer.text
            listed = answer.json()["recommendations"]
            item = listed[0]["item_id"]
            t0 = time.perf_counter()
            client.post("/events", json={"events": [{"user_id": user, "item_id": item}]}).raise_for_status()
            acked += 1
            for attempt in range(1000):
                now = client.post("/recommend", json={"user_id": user, "k": 10}).json()["recommendations"]
                if item not in [x["item_id"] for x in now]:
                    break
                retries += 1
            fresh_s.append(time.perf_counter() - t0)
    stored = rec.live_store().count_events()
    server.should_exit = True
    info = hardware_info("cpu", "float32")
    print(f"store: {rec.live_store().url.split('?')[0] if args.store_url else 'sqlite (index folder)'}; "
          f"CPU capability {info.cpu_capability}, {info.torch_threads} torch threads")
    print(f"/events, 100 events a batch, {args.batches} batches: p50 {percentile(event_ms, .5):.1f} ms, "
          f"p95 {percentile(event_ms, .95):.1f} ms, max {max(event_ms):.1f} ms (target p95 <= 50 ms)")
    print(f"freshness, {args.users} users (event acknowledged -> /recommend without the item): "
          f"p50 {percentile(fresh_s, .5) * 1000:.0f} ms, p95 {percentile(fresh_s, .95) * 1000:.0f} ms, "
          f"max {max(fresh_s) * 1000:.0f} ms; extra /recommend calls needed: {retries} (target p95 <= 1 s)")
    print(f"events acknowledged {acked}, in the store {stored}: {'none lost' if stored == acked else 'MISMATCH'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
