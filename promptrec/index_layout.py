"""Every path inside one index folder, decided in one place.

An index folder holds the embedded Chroma store, the transitions and popularity arrays, the
sequential model's checkpoint, the build manifest and lock, the calibrations, the tuned
adapters and the validation-split index that calibration and tuning use. Modules ask an
`IndexLayout` for a path; none builds one by hand or opens another module's files by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from promptrec.paths import slug


@dataclass(frozen=True)
class IndexLayout:
    """The files and folders of the index in ``root``."""

    root: Path

    @property
    def manifest(self) -> Path:
        """What the index was built from (`promptrec.retrieval.index.IndexManifest`)."""
        return self.root / "manifest.json"

    @property
    def build_lock(self) -> Path:
        return self.root / ".build.lock"

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
    def stale_files(self) -> tuple[Path, ...]:
        """Files a rebuild deletes before it starts (everything derived that a build rewrites)."""
        return (self.manifest, self.transitions, self.legacy_transitions)

    @property
    def sequential_checkpoint(self) -> Path:
        """The trained sequential model (`promptrec.retrieval.sasrec`)."""
        return self.root / "sequential_model.pt"

    def calibration(self, template_name: str, model_id: str) -> Path:
        """The calibration fitted for one template and generator."""
        return self.root / "calibration" / f"{slug(f'{template_name}-{model_id}')}.json"

    def adapter(self, template_name: str, generator: str) -> Path:
        """The folder of a LoRA adapter tuned for one template on one base generator."""
        return self.root / "ranker" / slug(f"{template_name}-{Path(str(generator)).name}")

    @property
    def validation(self) -> Path:
        """The index over the validation split (training histories), for calibration and tuning."""
        return self.root / "validation"
