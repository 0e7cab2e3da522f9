"""Print the settings reference (Markdown) from `promptrec.config.Settings`.

Run by `docs/hooks.py` on every build. Each key's type and default come from the pydantic
model; its text is the field's `description`, else the comment on (or just above) its line in
`promptrec/config.py`; a section's text is its class docstring.
"""

from __future__ import annotations

import ast
import enum
import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from promptrec import config  # noqa: E402

SOURCE = ROOT / "promptrec" / "config.py"


def field_comments(path: Path) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment on the field's line, after the comment lines above it."""
    text = path.read_text(encoding="utf-8")
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above: list[str] = []
            line = stmt.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            trailing = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments]
            found[(node.name, stmt.target.id)] = " ".join(above + trailing)
    return found


def md(text: str) -> str:
    """Text for a table cell: pipes and stars escaped outside `code`, one line."""
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")
    return "`".join(parts)


def type_name(tp: object) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "table"
    if isinstance(tp, type) and issubclass(tp, Path):
        return "path"
    return getattr(tp, "__name__", str(tp))


def model_of(tp: object) -> type[BaseModel] | None:
    for inner in (tp, *typing.get_args(tp)):
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def default_text(field) -> str:  # type: ignore[no-untyped-def]
    if field.default_factory is config.default_cache_dir:
        return "`~/.cache/promptrec` (`$XDG_CACHE_HOME/promptrec` when set)"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}`"
    return f"`{value!r}`"


def render() -> str:
    comments = field_comments(SOURCE)
    out = [
        "# Settings reference",
        "",
        "<!-- Generated on every build by docs/gen_settings.py from promptrec.config.Settings: do not edit. -->",
        "",
        "Every setting promptrec reads, from the one pydantic model `promptrec.config.Settings`.",
        "Values come from the defaults, then `promptrec.toml` in the working directory (or the file",
        "named by `PROMPTREC_CONFIG`), then `PROMPTREC_*` environment variables, which win. Nested",
        "keys join with `__` in a variable name: `[ranker] backend` is `PROMPTREC_RANKER__BACKEND`;",
        "a table value (e.g. `retrieval.weights`) is given as JSON. An unknown key, in the file or",
        "in a `PROMPTREC_*` variable, is an error.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []

    def table(model: type[BaseModel], prefix: str) -> None:
        out.append("| key | type | default | environment variable | what |")
        out.append("|---|---|---|---|---|")
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            sub = model_of(field.annotation)
            what = field.description or comments.get((model.__name__, name), "")
            env = "PROMPTREC_" + key.replace(".", "__").upper()
            if sub is not None:
                sections.append((key, sub))
                anchor = key.replace(".", "")
                what = (what + " " if what else "") + f"See [`[{key}]`](#{anchor})."
            out.append(f"| `{key}` | {md(type_name(field.annotation))} | {default_text(field)} | `{env}` | {md(what)} |")
        out.append("")

    out += ["## Top level", ""]
    doc = inspect.getdoc(config.Settings)
    if doc:
        out += [doc, ""]
    table(config.Settings, "")
    while sections:
        key, model = sections.pop(0)
        out += [f"## `[{key}]` {{#{key.replace('.', '')}}}", ""]
        doc = inspect.getdoc(model)
        if doc:
            out += [doc, ""]
        table(model, key + ".")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
