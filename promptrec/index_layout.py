"""Every path inside one index folder, decided in one place.

An index folder holds built versions (each: the embedded Chroma store, the transitions and
popularity arrays, the sequential model's checkpoint, the build manifest), a pointer to the
version served, the build lock, the calibrations, the tuned adapters and the validation-split
index that calibration and tuning use. A build writes a new version beside the served one and
switches the pointer atomically, so a running server never reads a half-built index. Modules ask an
`IndexLayout` for a path; none builds one by hand or opens another module's files by name.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptrec.errors import PromptrecError
from promptrec.paths import atomic_write_text, slug

FORMAT = "promptrec.index/1"
#: Every name an index folder holds; a folder without the marker that holds anything else is not
#: promptrec's to write in.
INDEX_NAMES = frozenset({".promptrec-index", "manifest.json", ".build.lock", "chroma", "transitions.npz",
                         "sequential.npz", "sequential_model.pt", "calibration", "ranker", "validation",
                         "current", "current.tmp", "versions", "live.sqlite", "live.sqlite-wal",
                         "live.sqlite-shm", ".retrain.lock"})
_VERSION_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")
#: What Chroma writes in its persistent folder: its SQLite file (and journals) and one folder
#: per vector segment, named by a UUID.
_CHROMA_NAME = re.compile(r"^(chroma\.sqlite3(-wal|-shm|-journal)?|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


class ForeignFilesError(PromptrecError):
    """A folder promptrec would write in holds files it did not write; nothing was changed."""


@dataclass(frozen=True)
class VersionLayout:
    """The files of one built version of an index: a build writes a new version beside the one
    being served and switches to it atomically (`IndexLayout.switch_to`). ``name`` is ``""`` for
    an index written before versions existed, whose files lie in the index folder itself."""

    root: Path
    name: str

    @property
    def manifest(self) -> Path:
        """What the version was built from (`promptrec.retrieval.index.IndexManifest`)."""
        return self.root / "manifest.json"

    @property
    def chroma(self) -> Path:
        """The embedded Chroma store (``chroma.mode = "persistent"``)."""
        return self.root / "chroma"

    @property
    def transitions(self) -> Path:
        """The item-to-item transition counts and item popularity (numpy ``.npz``)."""
        return self.root / "transitions.npz"

    @property
    def legacy_transitions(self) -> Path:
        """The same arrays in an index built before they had their own name."""
        return self.root / "sequential.npz"

    def transitions_to_read(self) -> Path:
        """`transitions`, or `legacy_transitions` in an older index that has only that."""
        if self.legacy_transitions.is_file() and not self.transitions.is_file():
            return self.legacy_transitions
        return self.transitions

    @property
    def sequential_checkpoint(self) -> Path:
        """The trained sequential model (`promptrec.retrieval.sasrec`)."""
        return self.root / "sequential_model.pt"

    @property
    def files(self) -> tuple[Path, ...]:
        """Everything the version holds (what copying or deleting it touches)."""
        return (self.manifest, self.chroma, self.transitions, self.legacy_transitions, self.sequential_checkpoint)

    def foreign_in_chroma(self) -> list[str]:
        """Names in the embedded Chroma folder that Chroma does not write (deleting it would lose them)."""
        if not self.chroma.is_dir():
            return []
        return sorted(p.name for p in self.chroma.iterdir() if not _CHROMA_NAME.match(p.name))


@dataclass(frozen=True)
class IndexLayout:
    """The files and folders of the index in ``root``: its built versions, the pointer to the
    one served, and what outlives a version (calibrations, adapters, the validation index)."""

    root: Path

    @property
    def marker(self) -> Path:
        """Says the folder is a promptrec index (its format): only then are its files promptrec's."""
        return self.root / ".promptrec-index"

    def claim(self) -> None:
        """Check that promptrec may write in ``root`` and mark it as an index folder: a new or
        empty folder, one with the marker, or an index written before the marker existed (its
        files all bear index names and its manifest is an index manifest). Anything else raises
        ForeignFilesError naming the files, before anything is written."""
        if self.root.exists() and not self.root.is_dir():
            raise ForeignFilesError(f"index_dir {self.root} is a file, not a folder; point index_dir at a folder")
        if self.marker.is_file():
            return
        if self.root.is_dir():
            foreign = sorted(p.name for p in self.root.iterdir() if p.name not in INDEX_NAMES)
            legacy = self.legacy_version()
            if legacy.manifest.is_file() and not _is_index_manifest(legacy.manifest):
                foreign.insert(0, "manifest.json (not an index manifest)")
            foreign += [f"chroma/{name}" for name in legacy.foreign_in_chroma()]
            if foreign:
                raise ForeignFilesError(
                    f"index_dir {self.root} holds files promptrec did not write ({', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}); nothing was changed: point index_dir at a new or "
                    "empty folder"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.marker, json.dumps({"format": FORMAT}) + "\n")

    @property
    def live_store(self) -> Path:
        """The embedded live store (`promptrec.store`, SQLite): events and items written through
        the API; it belongs to the index folder, not to a version, so builds keep it."""
        return self.root / "live.sqlite"

    @property
    def build_lock(self) -> Path:
        return self.root / ".build.lock"

    @property
    def retrain_lock(self) -> Path:
        """Held by the service worker that retrains on `serve.retrain_every_s` (one at a time)."""
        return self.root / ".retrain.lock"

    @property
    def pointer(self) -> Path:
        """Names the version served (replaced atomically by `switch_to`)."""
        return self.root / "current"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def legacy_version(self) -> VersionLayout:
        """The files of an index written before versions existed, in the folder itself."""
        return VersionLayout(self.root, "")

    def version(self, name: str) -> VersionLayout:
        return VersionLayout(self.versions / name, name) if name else self.legacy_version()

    def live(self) -> VersionLayout:
        """The version served: the pointer's, else an unversioned index's files (which may not exist)."""
        try:
            name = self.pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return self.legacy_version()
        if not _VERSION_NAME.match(name):
            raise PromptrecError(f"{self.pointer} does not name a version ({name[:40]!r}); run `promptrec index --rebuild`")
        return self.version(name)

    def new_version(self) -> VersionLayout:
        """A new, empty version folder beside the others, named by its creation time."""
        self.versions.mkdir(parents=True, exist_ok=True)
        while True:
            name = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{secrets.token_hex(3)}"
            with contextlib.suppress(FileExistsError):
                (self.versions / name).mkdir()
                return self.version(name)

    def switch_to(self, version: VersionLayout) -> None:
        """Serve ``version`` from now on: one atomic rename, so a reader sees the old or the new."""
        atomic_write_text(self.pointer, version.name + "\n")

    def stale_versions(self, keep: Sequence[VersionLayout]) -> list[VersionLayout]:
        """Built versions other than ``keep`` (the one served and the one before it, which a
        running server may still read until it notices the switch), oldest first."""
        kept = {v.name for v in keep}
        found = [self.version(p.name) for p in sorted(self.versions.iterdir())
                 if p.is_dir() and _VERSION_NAME.match(p.name)] if self.versions.is_dir() else []
        legacy = self.legacy_version()
        if any(p.exists() for p in legacy.files):
            found.insert(0, legacy)
        return [v for v in found if v.name not in kept]

    def calibration(self, template_name: str, model_id: str) -> Path:
        """The calibration fitted for one template and generator."""
        return self.root / "calibration" / f"{slug(f'{template_name}-{model_id}')}.json"

    def mode_decision(self, template_name: str, model_id: str) -> Path:
        """The ``ranker.mode = "auto"`` decision made with that calibration (`promptrec.ranker.mode`)."""
        return self.root / "calibration" / f"{slug(f'{template_name}-{model_id}')}.mode.json"

    def adapter(self, template_name: str, generator: str) -> Path:
        """The folder of a LoRA adapter tuned for one template on one base generator."""
        return self.root / "ranker" / slug(f"{template_name}-{Path(str(generator)).name}")

    @property
    def validation(self) -> Path:
        """The index over the validation split (training histories), for calibration and tuning."""
        return self.root / "validation"


def _is_index_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # unreadable: a damaged manifest of ours is rewritten by the build, as before
    return isinstance(data, dict) and {"namespace", "encoder", "item_ids"} <= set(data)
