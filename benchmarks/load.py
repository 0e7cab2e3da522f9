"""A bounded load test of `promptrec serve` on loopback: N concurrent clients for M seconds,
each in a loop of ``POST /recommend`` for a random user, then ``POST /why`` (streamed, read to
its ``done`` event) for that user's top item. Prints, per endpoint: requests, throughput,
p50 / p95 latency (and, for /why, time to the first streamed piece), errors (a non-2xx status
or an ``error`` event; the target is 0), and the server process's peak RSS (sampled).

    python benchmarks/load.py [--clients 1,4] [--seconds 60] [--port 8090] [--k 10]
    python benchmarks/load.py --url http://127.0.0.1:8080 --pid PID   # an already running server

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


def start_server(port: int) -> subprocess.Popen:
    """`promptrec serve` on loopback, its output (access log included) in a temporary file."""
    exe = shutil.which("promptrec") or os.path.join(os.path.dirname(sys.executable), "promptrec")
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
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
    args = parser.parse_args()

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
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

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
