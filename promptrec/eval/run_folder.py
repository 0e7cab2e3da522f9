"""The layout of an evaluation run folder, shared by the runner (which writes it) and the
report and compare commands (which read it): file names, the resumable JSON-lines log, and
`load_run`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from promptrec.errors import PromptrecError
from promptrec.eval.suite import Suite, parse_suite

log = logging.getLogger(__name__)

__all__ = ["JsonlLog", "load_run", "read_results"]

FORMAT = "promptrec.eval-run/1"
SUITE_FILE = "suite.toml"
SUITE_JSON = "suite.json"
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
VALIDATION = "validation.jsonl"
CALIBRATION_DIR = "calibration"
USER_FACTS = "users.json"  # per evaluated user: what the report's segments cut by
EXPLANATIONS = "explanations.jsonl"  # the [explain] rows (`promptrec.eval.explanations`)
#: Every name a run folder holds: a folder with anything else and no manifest is not ours to write.
RUN_FILES = frozenset({SUITE_FILE, SUITE_JSON, MANIFEST, RESULTS, VALIDATION, CALIBRATION_DIR, USER_FACTS, EXPLANATIONS,
                       "summary.json", "summary.md", "metrics.png", "reliability.png", "segments.png"})


def check_run_dir(run_dir: Path) -> None:
    """Refuse an output folder that is a file, or that holds files of someone else's (no run
    manifest and names a run never writes): a run only writes and replaces its own files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise PromptrecError(f"{run_dir} is a file, not a folder: give --out a new or empty folder, or a run folder")
    if not run_dir.is_dir() or (run_dir / MANIFEST).is_file():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
    if foreign:
        raise PromptrecError(
            f"{run_dir} is not an evaluation run folder (no {MANIFEST}) and holds other files "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing was written: "
            "give --out a new or empty folder"
        )


class JsonlLog:
    """An append-only JSON-lines file keyed by (ranker, user_id).

    Opening it drops a last line cut off by a kill (no trailing newline, or not JSON); a
    malformed line anywhere else is an error. Each `append` writes one line and flushes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.keys: set[tuple[str, str]] = set()
        if path.is_file():
            self._load()
        self._handle = None

    def _load(self) -> None:
        data = self.path.read_bytes()
        keep = len(data)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # the last line was cut off mid-write
        lines = data[:keep].splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                if n == len(lines):
                    keep -= len(line) + 1
                    break
                raise PromptrecError(f"{self.path}, line {n}: not JSON ({exc}); the run folder is damaged") from None
            key = (row["ranker"], row["user_id"])
            if key in self.keys:  # never count a user twice
                continue
            self.keys.add(key)
            self.rows.append(row)
        if keep != len(data):
            log.warning("%s: dropped an incomplete last line (an interrupted run)", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def done(self, ranker: str) -> set[str]:
        return {u for r, u in self.keys if r == ranker}

    def rows_for(self, ranker: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["ranker"] == ranker]

    def append(self, row: dict[str, Any]) -> None:
        key = (row["ranker"], row["user_id"])
        if key in self.keys:
            raise PromptrecError(f"{self.path}: ranker {key[0]!r} already has user {key[1]!r}")
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(row, separators=(",", ":"), allow_nan=True) + "\n")
        self._handle.flush()
        self.keys.add(key)
        self.rows.append(row)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    """The per-user rows of a run (first row per (ranker, user))."""
    log_ = JsonlLog(Path(run_dir) / RESULTS)
    return log_.rows


def load_run(run_dir: str | Path) -> tuple[Suite, dict[str, Any], list[dict[str, Any]]]:
    """The stored suite, the manifest and the per-user rows of a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise PromptrecError(f"{run_dir} is not a run folder (no {MANIFEST})")
    manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    if (run_dir / SUITE_JSON).is_file():  # the suite as resolved (it may have been built in code)
        suite = Suite.model_validate_json((run_dir / SUITE_JSON).read_text(encoding="utf-8"))
    else:
        suite = parse_suite((run_dir / SUITE_FILE).read_text(encoding="utf-8"), manifest.get("suite", run_dir.name),
                            str(run_dir / SUITE_FILE))
    return suite, manifest, read_results(run_dir)


def load_user_facts(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """Per evaluated user, what segments cut by (`EvalData.user_facts`); {} for a run written
    before they were recorded (continuing it writes them)."""
    path = Path(run_dir) / USER_FACTS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PromptrecError(f"{path} is damaged ({type(exc).__name__}); run the suite again to rewrite it") from exc
