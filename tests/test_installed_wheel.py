"""promptrec as a user gets it: the wheel built from this checkout, installed (not editable) into
a fresh virtual environment, used from a folder outside the checkout. Nothing of the checkout is
on sys.path there: the templates, suites and page must come from inside the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

SCRIPT = r'''
import os, sys
from pathlib import Path

checkout = Path(os.environ["CHECKOUT"]).resolve()
inside = [p for p in sys.path if p and Path(p).resolve().is_relative_to(checkout)]
assert not inside, f"checkout paths on sys.path: {inside}"

import promptrec
from promptrec import Recommender, Settings
from promptrec.data import load_catalog, load_interactions
from promptrec.eval.suite import named_suites
from promptrec.explain import explain
from promptrec.ranker.prompts import default_prompts_dir, load_template

package = Path(promptrec.__file__).resolve().parent
assert not package.is_relative_to(checkout), package
assert Path(sys.prefix).resolve() == Path(os.environ["FRESH_VENV"]).resolve(), sys.prefix
assert default_prompts_dir().is_relative_to(package)
assert {"smoke", "ml100k", "ml1m", "bookcrossing"} <= set(named_suites())
print("version", promptrec.__version__, "templates", sorted(p.stem for p in (default_prompts_dir() / "rerank").glob("*.j2")))

items = load_catalog("catalog.jsonl", genres_field="category", text_fields=["brand", "description"])
log = load_interactions("events.jsonl", behaviour_field="event", timestamp_field="time")
settings = Settings(index_dir=Path("index"), n_candidates=10, domain={"preset": "shop"},
                    ranker={"permutations": 1, "history_items": 5})
rec = Recommender.from_interactions(items, log, settings, namespace="shop")
assert load_template("letters").path.resolve().is_relative_to(package)
result = rec.recommend("u01", k=5)
assert len(result.recommendations) == 5 and result.model_id, result
print("recommend", result.strategy, result.degraded, [r.item_id for r in result.recommendations])
why = explain(rec, "u01", result.recommendations[0].item_id, max_new_tokens=48)
assert why.explanation.text.strip(), why.explanation
print("explain", why.explanation.grounding, why.explanation.text[:160].replace("\n", " "))
rec.close()
'''


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 1200) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_recommends_and_explains_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
         cwd=tmp_path)
    (wheel,) = dist.glob("promptrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("promptrec/prompts/rerank/letters.j2", "promptrec/prompts/explain/grounded.j2",
                    "promptrec/eval/suites/smoke.toml", "promptrec/serve/static/index.html", "promptrec/py.typed"):
        assert shipped in names, shipped
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)

    venv = tmp_path / "fresh-venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "torch==2.13.0"], cwd=tmp_path)  # the local CPU build, as the set-up scripts pin it
    _run([*pip, str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    for name in ("catalog.jsonl", "events.jsonl"):
        shutil.copy(ROOT / "examples" / "shop" / name, work / name)
    (work / "use.py").write_text(SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PROMPTREC_", "VIRTUAL_ENV"))}
    env.update(CHECKOUT=str(ROOT), FRESH_VENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    if os.environ.get("PROMPTREC_CACHE_DIR"):  # the fetched models and data sets, outside the checkout
        env["PROMPTREC_CACHE_DIR"] = os.environ["PROMPTREC_CACHE_DIR"]
    out = _run([str(python), "use.py"], cwd=work, env=env)
    print(out)
    assert "recommend letters" in out and "explain" in out
