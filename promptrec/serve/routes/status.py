"""``GET /health`` and ``GET /users``: what the server runs on, and whom it knows."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Query

from promptrec.errors import PromptrecError
from promptrec.retrieval.index import read_version_manifest
from promptrec.serve.schema import (
    CalibrationStatus,
    DependencyStatus,
    Health,
    IndexStatus,
    ModelStatus,
    UserList,
)
from promptrec.serve.state import AppState, ServeState

router = APIRouter(tags=["status"])


def _calibration(state: AppState) -> tuple[CalibrationStatus | None, bool]:
    """The calibration's status once the model is loaded, and whether it mismatches the model."""
    if state.backend is None:
        return None, False
    rec = state.recommender()
    reranker = rec.reranker()
    mismatch = False
    try:
        fitted = rec.calibrator(reranker) is not None
        detail = None if fitted else "no calibration fitted: run `promptrec calibrate` (order by LLM score)"
    except PromptrecError as exc:
        fitted, detail, mismatch = False, str(exc), True
    if not rec.settings.ranker.calibrate:
        fitted, detail, mismatch = False, "ranker.calibrate is off", False
    return CalibrationStatus(template=reranker.template.name, fitted=fitted, detail=detail), mismatch


def _dependencies(state: AppState) -> list[DependencyStatus]:
    """The index's files (still there, still the ones served), the vector store (answers a
    count) and, with ranker.backend = "vllm-server", the generator server (answers /models)."""
    rec = state.recommender()
    settings = rec.settings
    out = []
    try:
        served = rec.index.version
        live = settings.index_layout().live()
        on_disk = read_version_manifest(live)
        if state.index_error is not None:
            detail = (f"the index was switched to version {live.name}, which cannot be opened ({state.index_error}); "
                      f"still serving {served.name if served is not None and served.name else 'the old version'}")
        elif on_disk is None:
            detail = f"{live.manifest} is gone; run `promptrec index`"
        elif served is not None and live != served:
            detail = (f"the index was rebuilt (version {live.name or 'unversioned'}); this server still serves "
                      f"{served.name or 'the unversioned index'} until it opens the new one")
        else:
            detail = None
        out.append(DependencyStatus(name="index files", ok=detail is None, detail=detail))
    except PromptrecError as exc:
        out.append(DependencyStatus(name="index files", ok=False, detail=str(exc)))
    try:
        chroma = rec.index.version.chroma if rec.index.version is not None else None
        gone = settings.chroma.mode == "persistent" and chroma is not None and not (chroma / "chroma.sqlite3").is_file()
        rec.index.text.count()
        out.append(DependencyStatus(name="vector store", ok=not gone,
                                    detail=f"{chroma} is gone; run `promptrec index`" if gone else None))
    except PromptrecError as exc:
        out.append(DependencyStatus(name="vector store", ok=False, detail=str(exc)))
    try:
        store = rec.live_store()
        if store is not None:
            store.last_seq()
            out.append(DependencyStatus(name="live store", ok=True))
    except PromptrecError as exc:
        out.append(DependencyStatus(name="live store", ok=False, detail=str(exc)))
    except Exception as exc:  # noqa: BLE001 - a driver error (the database is down): say so
        out.append(DependencyStatus(name="live store", ok=False,
                                    detail=f"{store.url} does not answer ({type(exc).__name__})"))
    failed = state.retraining.status.last_failure if state.retraining is not None else None
    if failed is not None:
        out.append(DependencyStatus(name="retraining", ok=False, detail=(
            f"the retrain of {failed.started:%Y-%m-%d %H:%M:%S} UTC failed ({failed.detail}); "
            "the previous index version is still served")))
    if settings.ranker.backend == "vllm-server":
        url = settings.ranker.server_url.rstrip("/") + "/models"
        try:
            httpx.get(url, timeout=2.0).raise_for_status()
            out.append(DependencyStatus(name="generator server", ok=True))
        except httpx.HTTPError as exc:
            out.append(DependencyStatus(name="generator server", ok=False,
                                        detail=f"{url} does not answer ({type(exc).__name__}); start it with `promptrec llm serve`"))
    return out


@router.get("/health", response_model=Health)
def health(state: ServeState) -> Health:
    """Each dependency (index files, vector store, generator server), the generator (dtype,
    loaded or not), calibration and adapter status; "ok" only when all of them are."""
    settings = state.recommender().settings
    manifest = state.recommender().index.manifest
    backend = state.backend
    dtype = getattr(backend, "dtype", None)
    calibration, mismatch = _calibration(state)
    dependencies = _dependencies(state)
    healthy = backend is not None and not mismatch and all(d.ok for d in dependencies)
    return Health(
        status="ok" if healthy else "degraded",
        dependencies=dependencies,
        index=IndexStatus(namespace=manifest.namespace, items=len(manifest.item_ids), users=manifest.n_users,
                          encoder=settings.encoder),
        model=ModelStatus(
            generator=settings.generator, backend=settings.ranker.backend,
            model_id=getattr(backend, "model_id", None), loaded=backend is not None,
            dtype=None if dtype is None else str(dtype).removeprefix("torch."),
            server_url=settings.ranker.server_url if settings.ranker.backend == "vllm-server" else None,
        ),
        calibration=calibration,
        adapter=getattr(backend, "adapter", None),
        conversations=len(state.conversations) if state.conversations is not None else 0,
        retraining=state.retraining.status if state.retraining is not None else None,
    )


@router.get("/users", response_model=UserList)
def users(state: ServeState, limit: int = Query(100, ge=1, le=10000), offset: int = Query(0, ge=0)) -> UserList:
    """User ids of the interaction log (ids only, no records)."""
    ids = list(state.recommender().histories)
    return UserList(total=len(ids), users=ids[offset: offset + limit])
