"""Print the command-line reference (Markdown) from promptrec's typer app.

Run by `docs/hooks.py` on every build: walks the click command tree of
`typer.main.get_command(promptrec.cli.app)` and renders each command's usage, help, arguments
and options.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import typer.main  # noqa: E402

from promptrec.cli import app  # noqa: E402


def md(text: str) -> str:
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")
    return "`".join(parts)


def help_text(command) -> str:  # type: ignore[no-untyped-def]
    text = inspect.cleandoc(command.help or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b")


def is_group(command) -> bool:  # type: ignore[no-untyped-def]
    return hasattr(command, "commands") and hasattr(command, "list_commands")


def default_of(param) -> str:  # type: ignore[no-untyped-def]
    if getattr(param, "required", False):
        return "required"
    default = param.default
    if callable(default) or default is None or default == () or default == []:
        return ""
    if getattr(param, "is_flag", False) and default is False:
        return ""
    return f"`{default}`"


def param_row(param, ctx) -> str:  # type: ignore[no-untyped-def]
    if param.param_type_name == "argument":
        name = f"`{(param.metavar or param.name).upper()}`"
    else:
        names = list(param.opts) + list(param.secondary_opts)
        name = ", ".join(f"`{n}`" for n in names)
    kind = "flag" if getattr(param, "is_flag", False) else str(param.display_type(ctx)).lower().strip("<>")
    if getattr(param, "multiple", False):
        kind += ", repeatable"
    return f"| {name} | {md(kind)} | {default_of(param)} | {md(getattr(param, 'help', None) or '')} |"


def render() -> str:
    root = typer.main.get_command(app)
    out = [
        "# Command-line reference",
        "",
        "<!-- Generated on every build by docs/gen_cli.py from promptrec.cli.app: do not edit. -->",
        "",
        "Every `promptrec` command, its usage, arguments and options, read from the typer",
        "application itself. `promptrec COMMAND --help` prints the same in a terminal. Every",
        "command prints a promptrec error or an invalid setting as one line and exits with status 2.",
        "",
    ]

    def walk(command, path: list[str], parent_ctx) -> None:  # type: ignore[no-untyped-def]
        ctx = command.context_class(command, info_name=path[-1], parent=parent_ctx)
        title = " ".join(path)
        level = "#" * min(len(path) + 1, 4)
        out.append(f"{level} `{title}`")
        out.append("")
        usage = " ".join(command.collect_usage_pieces(ctx))
        out.extend(["```text", f"{ctx.command_path} {usage}".rstrip(), "```", ""])
        text = help_text(command)
        if text:
            out.extend([text, ""])
        params = [
            p for p in command.params
            if not getattr(p, "hidden", False) and p.name not in ("help", "install_completion", "show_completion")
        ]
        if params:
            out.extend(["| argument or option | type | default | what |", "|---|---|---|---|"])
            out.extend([param_row(p, ctx) for p in params])
            out.append("")
        if is_group(command):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not getattr(sub, "hidden", False):
                    walk(sub, path + [name], ctx)

    walk(root, ["promptrec"], None)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
