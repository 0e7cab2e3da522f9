"""A bounded load test of `promptrec serve` on loopback: N concurrent clients for M seconds,
each in a loop of ``POST /recommend`` for a random user, then ``POST /why`` (streamed, read to
its ``done`` event) for that user's top item. Prints, per endpoint: requests, throughput,
p50 / p95 latency (and, for /why, time to the first streamed piece), errors (a non-2xx status
or an ``error`` event; the target is 0), and the server process's peak RSS (sampled).

    python benchmarks/load.py [--clients 1,4] [--seconds 60] [--port 8090] [--k 10]
    python benchmarks/load.py --url http://127.0.0.1:8080 --pid PID   # an already running server
    python benchmarks/load.py --mixed [--workers 2] [--seconds 600] [--store-url postgresql+psycopg://...]

``--mixed`` (issue #29): 2 workers over a copy of the configured index and a live store of its
own (SQLite, or the PostgreSQL URL), clients mixing /recommend, /events, /items and
conversations (start, why, a follow-up on new connections, so any worker may answer); prints
per endpoint requests, p50/p95 and errors, each worker's peak RSS, the store's size, and the
events acknowledged against the events the store holds. Targets: 0 errors, 0 lost events.

Without ``--url`` the script starts ``promptrec serve`` itself, with the current settings
(PROMPTREC_* variables or promptrec.toml: build the index first with ``promptrec index``),
waits for ``/health``, and stops it at the end. Each client stops at the deadline after the
request in flight (which has its own time-out); nothing runs past ``--seconds`` + one request.
The generator serialises model calls, so throughput is the model's, not the HTTP stack's.
``--clients 1,4`` runs one phase per count against the same server, one after the other, so
the rows compare side by side (absolute times on a shared machine swing between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from _common import percentile


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"recommend": [], "why": [], "why_first": []})
    errors: dict[str, list[str]] = field(default_factory=lambda: {"recommend": [], "why": []})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, seconds: float) -> None:
        with self.lock:
            self.latencies[what].append(seconds)

    def fail(self, what: str, reason: str) -> None:
        with self.lock:
            self.errors[what].append(reason[:200])


def why(client: httpx.Client, user: str, item: str, tally: Tally) -> None:
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/why", json={"user_id": user, "item_id": item}) as response:
        if response.status_code != 200:
            tally.fail("why", f"{response.status_code}: {response.read().decode()[:200]}")
            return
        event, done = None, False
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "delta" and first is None:
                    first = time.perf_counter() - started
            elif line.startswith("data: ") and event == "error":
                tally.fail("why", json.loads(line[6:])["detail"])
                return
            elif line.startswith("data: ") and event == "done":
                done = True
    if not done:
        tally.fail("why", "the stream ended without a done event")
        return
    tally.add("why", time.perf_counter() - started)
    if first is not None:
        tally.add("why_first", first)


def client_loop(url: str, users: list[str], deadline: float, seed: int, k: int, timeout: float, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=timeout) as client:
        while time.monotonic() < deadline:
            user = rng.choice(users)
            started = time.perf_counter()
            try:
                response = client.post("/recommend", json={"user_id": user, "k": k})
            except httpx.HTTPError as exc:
                tally.fail("recommend", f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200 or response.json()["degraded"]:
                tally.fail("recommend", f"{response.status_code}: {response.text[:200]}")
                continue
            tally.add("recommend", time.perf_counter() - started)
            if time.monotonic() >= deadline:
                break
            top = response.json()["recommendations"][0]["item_id"]
            try:
                why(client, user, top, tally)
            except httpx.HTTPError as exc:
                tally.fail("why", f"{type(exc).__name__}: {exc}")


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.process, self.every = psutil.Process(pid), every
        self.peak = self.start_rss = self.rss()
        self.halt = threading.Event()

    def rss(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running())
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.peak = max(self.peak, self.rss())


def start_server(port: int, workers: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`promptrec serve` on loopback, its output (access log included) in a temporary file."""
    exe = shutil.which("promptrec") or os.path.join(os.path.dirname(sys.executable), "promptrec")
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if server.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"promptrec serve exited with {server.returncode} (is the index built? "
                             f"`promptrec index`):\n{tail}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("promptrec serve did not answer /health within 10 minutes")


def stop_server(server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Stop `promptrec serve` as Ctrl-C does (requests in flight finish), else kill it."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()


class WorkerRss(threading.Thread):
    """Peak resident memory of each worker process of a server (its children), sampled."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.process, self.every = psutil.Process(pid), every
        self.peaks: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            for child in self.process.children(recursive=False):
                try:
                    if not any(c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                        continue  # not a worker (multiprocessing's resource tracker)
                    tree = [child, *child.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in tree)
                except psutil.Error:
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)


MIXED_ENDPOINTS = ("recommend", "events", "items", "conversations", "why", "ask")


@dataclass
class MixedTally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {e: [] for e in MIXED_ENDPOINTS})
    errors: dict[str, list[str]] = field(default_factory=lambda: {e: [] for e in MIXED_ENDPOINTS})
    acked_events: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, what: str, send, ok=lambda r: r.status_code < 300):
        """`send()` timed; a non-2xx answer (or a transport error) is an error of `what`."""
        started = time.perf_counter()
        try:
            response = send()
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[what].append(f"{type(exc).__name__}: {exc}"[:200])
            return None
        with self.lock:
            if ok(response):
                self.latencies[what].append(time.perf_counter() - started)
                return response
            self.errors[what].append(f"{response.status_code}: {response.text[:200]}")
        return None


def mixed_client(url: str, users: list[str], items: list[str], deadline: float, seed: int, k: int,
                 timeout: float, tally: MixedTally) -> None:
    """One client's loop: /recommend (55%), a batch of 10 events (20%), a new item (5%), a
    conversation (20%: start it, "why" its first suggestion, one follow-up question). Each
    conversation request goes on a new connection, so with several workers any of them may
    answer it (the conversation lives in the store)."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=timeout) as client:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            roll = rng.random()
            user = rng.choice(users)
            if roll < 0.55:
                tally.timed("recommend", lambda: client.post("/recommend", json={"user_id": user, "k": k}),
                            ok=lambda r: r.status_code == 200 and not r.json()["degraded"])
            elif roll < 0.75:
                batch = [{"user_id": rng.choice(users), "item_id": rng.choice(items)} for _ in range(10)]
                r = tally.timed("events", lambda: client.post("/events", json={"events": batch}))
                if r is not None:
                    with tally.lock:
                        tally.acked_events += r.json()["accepted"]
            elif roll < 0.80:
                new_id = f"load-{seed}-{n}"
                tally.timed("items", lambda: client.post("/items", json={"items": [
                    {"item_id": new_id, "title": f"Load Test Film {seed}-{n}", "genres": ["Drama"]}]}))
            else:
                def fresh(method: str, path: str, **kw):
                    with httpx.Client(base_url=url, timeout=timeout) as one:
                        return one.request(method, path, **kw)

                r = tally.timed("conversations", lambda: fresh("POST", "/conversations", json={"user_id": user}))
                if r is None or not r.json()["suggestions"]:
                    continue
                cid, first = r.json()["conversation_id"], r.json()["suggestions"][0]["item_id"]
                r = tally.timed("why", lambda: fresh("POST", "/why", json={
                    "user_id": user, "item_id": first, "conversation_id": cid, "stream": False}))
                if r is None:
                    continue
                tally.timed("ask", lambda: fresh("POST", f"/conversations/{cid}/ask", json={
                    "user_id": user, "question": "What else is it like?", "stream": False}))


def store_size(index_dir: Path, store_url: str | None) -> str:
    if store_url is None:
        size = sum(p.stat().st_size for p in index_dir.glob("live.sqlite*"))
        return f"{size / 2**20:.1f} MiB (SQLite, with its WAL)"
    from promptrec.store import LiveStore

    store = LiveStore(store_url)
    with store.engine.connect() as conn:
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    store.close()
    return f"{size / 2**20:.1f} MiB (the PostgreSQL database)"


def mixed_main(args: argparse.Namespace) -> None:
    """The mixed workload on `--workers` uvicorn workers over a copy of the configured index."""
    from promptrec.config import Settings
    from promptrec.data.named import load_dataset
    from promptrec.hardware import hardware_info
    from promptrec.store import LiveStore, sqlite_url

    settings = Settings()
    work = Path(tempfile.mkdtemp(prefix="promptrec-load-"))
    index_dir = work / "index"
    shutil.copytree(settings.resolved_index_dir(), index_dir,
                    ignore=shutil.ignore_patterns("live.sqlite*", ".retrain.lock"))
    env = {"PROMPTREC_INDEX_DIR": str(index_dir)}
    if args.store_url:
        env["PROMPTREC_STORE__URL"] = args.store_url
    store = LiveStore(args.store_url or sqlite_url(index_dir / "live.sqlite"))
    events_before = store.count_events()
    items = [it.item_id for it in load_dataset(settings).items]
    server = start_server(args.port, args.workers, env)
    url = f"http://127.0.0.1:{args.port}"
    try:
        health = httpx.get(url + "/health", timeout=30).json()
        users = httpx.get(url + "/users", params={"limit": 10000}, timeout=30).json()["users"]
        sampler = WorkerRss(server.pid)
        sampler.start()
        tally = MixedTally()
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [threading.Thread(target=mixed_client, args=(url, users, items, deadline, args.seed + i, args.k,
                                                               args.timeout, tally))
                   for i in range(args.clients_mixed)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        sampler.halt.set()
        answers = httpx.get(url + "/health", timeout=30).status_code == 200
    finally:
        stop_server(server)
    stored = store.count_events() - events_before
    store.close()
    info = hardware_info("cpu", "float32")
    m = health["model"]
    print(f"mixed load: {args.workers} workers, {args.clients_mixed} clients, {args.seconds:g} s; store "
          f"{'PostgreSQL' if args.store_url else 'SQLite (index folder)'}; ranker.mode {settings.ranker.mode}, "
          f"generator {m['model_id'] or m['generator']} ({m['backend']}); CPU capability {info.cpu_capability}")
    print(f"{'endpoint':<15}{'requests':>9}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'errors':>8}")
    errors = 0
    for what in MIXED_ENDPOINTS:
        lat = tally.latencies[what]
        print(f"{'/' + what:<15}{len(lat):>9}{len(lat) / elapsed:>8.2f}{percentile(lat, .5):>8.3f}"
              f"{percentile(lat, .95):>8.3f}{len(tally.errors[what]):>8}")
        errors += len(tally.errors[what])
        for reason in sorted(set(tally.errors[what]))[:5]:
            print(f"        error: {reason}")
    peaks = ", ".join(f"{rss / 2**20:.0f} MiB" for _, rss in sorted(sampler.peaks.items()))
    print(f"peak RSS per worker: {peaks}; store size after the run: {store_size(index_dir, args.store_url)}")
    lost = tally.acked_events - stored
    print(f"events acknowledged {tally.acked_events}, new in the store {stored}: "
          f"{'none lost' if lost == 0 else f'{lost} MISSING'}; answers after the run: {answers}")
    shutil.rmtree(work, ignore_errors=True)
    if errors or lost:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4", help="concurrent clients; a list runs one phase each")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--pid", type=int, help="the running server's pid, for its memory")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed", action="store_true", help="the mixed workload (reads, events, items, conversations)")
    parser.add_argument("--workers", type=int, default=2, help="--mixed: uvicorn workers")
    parser.add_argument("--clients-mixed", type=int, default=4, help="--mixed: concurrent clients")
    parser.add_argument("--store-url", default=None, help="--mixed: a PostgreSQL URL (default: SQLite in the index)")
    args = parser.parse_args()
    if args.mixed:
        mixed_main(args)
        return

    counts = [int(c) for c in str(args.clients).split(",")]
    server = None
    if args.url is None:
        server = start_server(args.port)
        url, pid = f"http://127.0.0.1:{args.port}", server.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    try:
        health = httpx.get(url + "/health", timeout=30).json()
        users = httpx.get(url + "/users", params={"limit": 10000}, timeout=30).json()["users"]
        sampler = RssSampler(pid) if pid else None
        if sampler:
            sampler.start()
        phases = []
        for n in counts:
            tally = Tally()
            started = time.monotonic()
            deadline = started + args.seconds
            threads = [
                threading.Thread(target=client_loop, args=(url, users, deadline, args.seed + i, args.k, args.timeout, tally))
                for i in range(n)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            phases.append((n, tally, time.monotonic() - started))
        if sampler:
            sampler.halt.set()
    finally:
        if server is not None:
            stop_server(server)

    m = health["model"]
    print(f"server: {m['model_id']} on {m['backend']} ({m['dtype']}), index {health['index']['namespace']} "
          f"({health['index']['users']} users); {args.seconds:g} s a phase, in-flight requests finished")
    print(f"{'clients':>7} {'endpoint':<10}{'requests':>9}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}"
          f"{'first p50':>10}{'errors':>8}{'ran s':>7}")
    errors = 0
    for n, tally, elapsed in phases:
        for what in ("recommend", "why"):
            lat = tally.latencies[what]
            first = f"{percentile(tally.latencies['why_first'], .5):.2f}" if what == "why" else "-"
            print(f"{n:>7} {'/' + what:<10}{len(lat):>9}{len(lat) / elapsed:>8.3f}{percentile(lat, .5):>8.2f}"
                  f"{percentile(lat, .95):>8.2f}{first:>10}{len(tally.errors[what]):>8}{elapsed:>7.0f}")
            errors += len(tally.errors[what])
            for reason in sorted(set(tally.errors[what]))[:5]:
                print(f"        error: {reason}")
    if sampler:
        print(f"server RSS (with children): {sampler.start_rss / 2**20:.0f} MiB at start, "
              f"peak {sampler.peak / 2**20:.0f} MiB")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
