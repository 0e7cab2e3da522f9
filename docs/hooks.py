"""MkDocs hooks: the settings and command-line references are generated on every build.

`docs/gen_settings.py` and `docs/gen_cli.py` import promptrec (pydantic, typer), so they run in
a Python that has promptrec's dependencies: the one running mkdocs (`.venv`, see
`scripts/docs.sh`), or the interpreter named by the `DOCS_PYTHON` environment variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
GENERATED = {
    "reference/settings.md": "docs/gen_settings.py",
    "reference/cli.md": "docs/gen_cli.py",
}


def _generate(script: str) -> str:
    python = os.environ.get("DOCS_PYTHON") or sys.executable
    done = subprocess.run(
        [python, str(ROOT / script)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed (python: {python}):\n{done.stderr}")
    return done.stdout


def on_files(files, config):  # type: ignore[no-untyped-def]
    for uri, script in GENERATED.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=_generate(script)))
    return files
