"""The package's layers (pyproject's import-linter contract) hold, name every module, and keep
`import promptrec` light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import promptrec

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def test_every_module_of_the_package_has_a_layer():
    named = {name.strip() for layer in _layers() for name in layer.replace(":", "|").split("|")}
    package = Path(promptrec.__file__).parent
    children = {f"promptrec.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    children |= {f"promptrec.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert sorted(children - named) == []
    assert sorted(named - children) == []


def test_the_layer_contract_is_kept(allow_subprocess):
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_import_promptrec_loads_no_heavy_library(allow_subprocess):
    code = (
        "import sys, promptrec; heavy = ('torch', 'chromadb', 'transformers', 'sentence_transformers', "
        "'pandas', 'fastapi'); print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
