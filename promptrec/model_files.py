"""Checks that a model folder is complete before anything loads it: config, tokenizer, and
safetensors files whose headers parse and whose sizes match what the headers promise (a
truncated download or copy is caught here, not as an obscure error deep in transformers)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from promptrec.errors import AssetError

TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer.model", "vocab.json")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None when it is."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{path.name}: {size} bytes, too short for a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"{path.name}: header of {length} bytes in a {size}-byte file (truncated)"
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name}: unreadable safetensors header ({exc})"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + (max(ends) if ends else 0)
    if size != expected:
        return f"{path.name}: {size} bytes, the header promises {expected} (truncated or padded)"
    return None


def model_dir_problems(folder: Path) -> list[str]:
    """What is missing or broken in a transformers model folder (empty when it looks complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json is missing")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"the tokenizer is missing (none of {', '.join(TOKENIZER_FILES)})")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        problems.append("no weights (*.safetensors)")
    problems.extend(p for p in map(safetensors_problem, weights) if p)
    return problems


def check_model_dir(folder: Path | str, name: str | None = None) -> None:
    """Raise AssetError naming the folder, what is wrong and the fix; a hub id (str) is not checked."""
    if isinstance(folder, str) and not Path(folder).exists():
        return
    problems = model_dir_problems(Path(folder))
    if problems:
        fix = (f"run `promptrec models fetch {name}` to fetch it again" if name and "/" not in str(name)
               else "point the generator setting at a complete model folder")
        raise AssetError(f"model folder {folder} is incomplete: {'; '.join(problems)}; {fix}")
