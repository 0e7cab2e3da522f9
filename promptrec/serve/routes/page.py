"""The chat page at ``/`` and its files under ``/static``."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = resources.files("promptrec.serve") / "static"
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def page() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


def mount_static(app: FastAPI) -> None:
    """Serve the page's files (a router cannot carry a mount: FastAPI drops it on include)."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
