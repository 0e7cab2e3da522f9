"""Retraining on a schedule (`serve.retrain_every_s`): the service trains the sequential model
and refits the index from the data plus the live store into a new index version
(`Recommender.retrained`, what `promptrec train retriever` runs), whenever the store holds something the served version has
not seen. The workers follow the new version on their next request (requests in flight finish
on the old one); a failed retrain leaves the old version serving and `/health` says why.

One worker retrains at a time: the others find the index folder's retrain lock held and skip
that turn. The training runs in a thread of the worker that holds the lock, so on a small
machine it slows that worker's answers while it runs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import BaseModel

from promptrec.paths import LockHeld, file_lock

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.serve.state import AppState

log = logging.getLogger("promptrec.serve")


class RetrainRun(BaseModel):
    """One turn of the schedule: skipped (and why), or a retrain that made a version or failed."""

    started: datetime
    seconds: float = 0.0
    outcome: str  # "retrained" | "skipped" | "failed"
    detail: str | None = None  # the new version, why it was skipped, or the error
    store_seq: int | None = None  # the last stored event the new version read


class RetrainStatus(BaseModel):
    every_s: float
    last: RetrainRun | None = None
    last_failure: RetrainRun | None = None  # kept until a later retrain succeeds


class RetrainSchedule:
    """Every ``every_s`` seconds, `run_once` in a background thread (see the module)."""

    def __init__(self, state: AppState, every_s: float):
        self.state, self.every_s = state, every_s
        self.status = RetrainStatus(every_s=every_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="promptrec-retrain", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the schedule; a retrain in progress finishes in its thread (its version is used
        only if it completes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()

    def run_once(self) -> RetrainRun:
        """Retrain now if the live store changed since the served version was built."""
        started, clock = datetime.now(timezone.utc), time.perf_counter()
        rec = self.state.recommender()
        manifest = rec.index.manifest
        store = rec.live_store()
        if store is None or not store.changed_since(manifest.store_seq, manifest.store_until):
            run = RetrainRun(started=started, outcome="skipped", detail="nothing new in the live store")
        else:
            try:
                with file_lock(rec.settings.index_layout().retrain_lock, "retraining", wait=False):
                    new = rec.retrained()
                    new.close()
                built = self.state.recommender().index  # follows the new version
                run = RetrainRun(started=started, outcome="retrained",
                                 detail=built.version.name if built.version is not None else None,
                                 store_seq=built.manifest.store_seq)
                log.info("retrained: now serving index version %s (store events up to %s)", run.detail,
                         run.store_seq)
            except LockHeld:
                run = RetrainRun(started=started, outcome="skipped", detail="another worker is retraining")
            except Exception as exc:  # noqa: BLE001 - the old version goes on serving; /health says why
                run = RetrainRun(started=started, outcome="failed", detail=f"{type(exc).__name__}: {exc}")
                log.error("retraining failed, still serving the old version: %s", run.detail)
        run.seconds = round(time.perf_counter() - clock, 3)
        self.status.last = run
        if run.outcome == "failed":
            self.status.last_failure = run
        elif run.outcome == "retrained":
            self.status.last_failure = None
        return run
