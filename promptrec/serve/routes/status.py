"""``GET /health`` and ``GET /users``: what the server runs on, and whom it knows."""

from __future__ import annotations

from fastapi import APIRouter, Query

from promptrec.errors import PromptrecError
from promptrec.serve.schema import (
    CalibrationStatus,
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


@router.get("/health", response_model=Health)
def health(state: ServeState) -> Health:
    """Index, generator (dtype, loaded or not), calibration and adapter status."""
    settings = state.recommender().settings
    manifest = state.recommender().index.manifest
    backend = state.backend
    dtype = getattr(backend, "dtype", None)
    calibration, mismatch = _calibration(state)
    return Health(
        status="ok" if backend is not None and not mismatch else "degraded",
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
        conversations=len(state.conversations),
    )


@router.get("/users", response_model=UserList)
def users(state: ServeState, limit: int = Query(100, ge=1, le=10000), offset: int = Query(0, ge=0)) -> UserList:
    """User ids of the interaction log (ids only, no records)."""
    ids = list(state.recommender().histories)
    return UserList(total=len(ids), users=ids[offset: offset + limit])
