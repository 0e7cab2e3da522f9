"""What every request passes before a route: the API keys, the body size limit, and the
Prometheus metrics (`/metrics`).

Keys come from the settings (`serve.write_key`, `serve.read_key`; give them through
PROMPTREC_SERVE__WRITE_KEY / PROMPTREC_SERVE__READ_KEY), are compared in constant time and
never logged. A request carries one as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from promptrec.config import ServeSettings

#: (method, path prefix) of the routes that write: they need the write key when one is set.
WRITES = (("POST", "/events"), ("POST", "/items"), ("DELETE", "/users/"))
#: Open even when reads are keyed: liveness probes and the scraper.
OPEN = ("/health", "/metrics")


@dataclass
class ServeMetrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    registry: Any = None
    requests: Any = None
    latency: Any = None
    degraded: Any = None
    events: Any = None
    items: Any = None
    llm_tokens: Any = None
    refused: Any = None

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("promptrec_requests", "HTTP requests answered", ["method", "route", "status"], registry=r)
        self.latency = Histogram("promptrec_request_seconds", "time to answer a request (streams: to the first byte)",
                                 ["method", "route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.degraded = Counter("promptrec_degraded_lists", "lists served in retrieval order because the LLM failed",
                                registry=r)
        self.events = Counter("promptrec_events_ingested", "events written to the live store", registry=r)
        self.items = Counter("promptrec_items_ingested", "catalog entries written to the live store", registry=r)
        self.llm_tokens = Counter("promptrec_llm_tokens", "tokens the generator computed for lists", registry=r)
        self.refused = Counter("promptrec_requests_refused", "requests refused before a route", ["reason"], registry=r)

    def exposition(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


def _matches(given: str | None, *wanted: Any) -> bool:
    if given is None:
        return False
    ok = False
    for secret in wanted:
        if secret is not None:  # every configured key is compared, in constant time
            ok |= hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
    return ok


def _refuse(metrics: ServeMetrics, status: int, reason: str, message: str) -> JSONResponse:
    metrics.refused.labels(reason).inc()
    headers = {"WWW-Authenticate": 'Bearer realm="promptrec"'} if status == 401 else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def install_guard(app: FastAPI, settings: ServeSettings, metrics: ServeMetrics) -> None:
    """Add the keys, the body limit and the request metrics to ``app``."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        method, path = request.method, request.url.path
        writes = any(method == m and path.startswith(p) for m, p in WRITES)
        if writes and settings.write_key is not None:
            if not _matches(_presented_key(request), settings.write_key):
                return _refuse(metrics, 401, "key", "this route writes: send the write key "
                               "(X-API-Key or Authorization: Bearer)")
        elif not writes and settings.read_key is not None and not path.startswith(OPEN):
            if not _matches(_presented_key(request), settings.read_key, settings.write_key):
                return _refuse(metrics, 401, "key", "send the read key (X-API-Key or Authorization: Bearer)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _refuse(metrics, 413, "size", f"the body has {length} bytes; at most {settings.max_body_bytes} "
                           "(serve.max_body_bytes)")
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or "(unmatched)"
        metrics.latency.labels(method, name).observe(time.perf_counter() - started)
        metrics.requests.labels(method, name, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return metrics.exposition()
