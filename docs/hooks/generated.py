"""MkDocs hook: the parts of the site generated from the code at build time, so they cannot drift from it.

- reference/configuration.md, rendered from the schema in `tailor.config` (`describe_fields`, the
  same rows each command's `--help` prints) and from the command table `tailor.cli.COMMANDS` (each
  command's generated arguments): settings are declared once, in the code, and a new setting
  appears on the next `make docs`;
- the module tables of layout.md, one row per module of src/tailor with the first sentence of its
  docstring, read with `ast` (no import), so the page follows moves and renames by itself.
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

CONFIG_PAGE = "reference/configuration.md"
LAYOUT_PAGE = "layout.md"
MODULE_MARKER = "<!-- module-tree -->"
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "src" / "tailor"

# The public sections, in the order a recipe reads; each is rendered with the dotted prefix a
# recipe or `key=value` override uses for it (found on tailor.config.Recipe).
SECTIONS = ("ModelConfig", "DataConfig", "AdapterConfig", "TrainConfig", "PreferenceConfig", "GrpoConfig", "EvalConfig", "ServeConfig",
            "DistillConfig", "RefreshConfig", "QuickstartConfig")

CONFIG_INTRO = """# Configuration reference

Every setting tailor reads, generated from the schema in `tailor.config` each time the site is built
(the same rows each command's `--help` prints). In a recipe a setting sits under its section
(`train:` then `lr: 2.0e-4`); on the command line it is an override `section.key=value`
(`train.lr=2e-4`, `data.train=[a.jsonl,b.jsonl]`; values are read as YAML). Unknown keys are errors
that name the nearest valid key. How recipes work: [Recipes](../recipes.md).

"required" means the setting has no default; "-" means the default is empty (None): the feature is
off or its value is derived, as the description says. Keys like `data.clean[step=pii].kinds` are
fields of one item of a list (here: a cleaning step whose `step` is `pii`).
"""


def cell(text: str) -> str:
    """Markdown text safe in a table cell: HTML and `*` escaped outside code spans, pipes everywhere.

    Inside backticks Markdown shows text literally, so escaping there would print the entities.
    """
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans, escape it all
        parts = ["`".join(parts)]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"`{part}`")  # Python-Markdown's tables keep pipes inside code spans
        else:
            out.append(html.escape(part, quote=False).replace("|", "&#124;").replace("*", "&#42;"))
    return "".join(out)


def _code(text: str) -> str:
    """A value as inline code (an HTML element, so pipes and backticks inside it stay literal)."""
    return "<code>" + html.escape(str(text), quote=False).replace("|", "&#124;").replace("*", "&#42;") + "</code>"


def _settings_table(rows: list[tuple[str, str, str, str]], prefix: str) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, kind, default, description in rows:
        lines.append(f"| {_code(prefix + key)} | {_code(kind)} | {_code(default)} | {cell(description)} |")
    return lines


def _prefixes(config) -> dict[str, str]:
    """Section class name -> the recipe key it sits under (`TrainConfig` -> `train.`)."""
    out: dict[str, str] = {}
    for name, info in config.Recipe.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type):
            out.setdefault(ann.__name__, f"{name}.")
    return out


def _subparser(parser, words: list[str]):
    """The argparse parser of a (possibly two-word) command, e.g. ["data", "prepare"]."""
    import argparse

    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _argument(action) -> str:
    """How an argument is written: `RECIPE`, `key=value ...`, `--nproc NPROC`, `--force`."""
    if not action.option_strings:
        return str(action.metavar or action.dest.upper()) + (" ..." if action.nargs in ("*", "+") else "")
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    many = " ..." if action.nargs in ("*", "+") else ""
    return ", ".join(action.option_strings) + f" {action.metavar or action.dest.upper()}{many}"


def _sections_read(keys) -> str:
    """Links to the reference sections whose settings a command takes as key=value."""
    if keys.__name__ in SECTIONS:
        return f"[{keys.__name__}](#{keys.__name__.lower()})"
    links = []
    for name, info in keys.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and ann.__name__ in SECTIONS:
            links.append(f"[`{name}.*`](#{ann.__name__.lower()})")
    return ", ".join(links)


def render_commands() -> list[str]:
    """One table per command of `tailor.cli.COMMANDS`: its arguments as the generated parser has them."""
    import argparse

    from tailor import cli

    parser = cli.build_parser()
    lines = ["## Settings of each command\n",
             "Each command's positionals and flags, as its `--help` shows them (generated from its settings "
             "class in `tailor.config`), and the recipe sections it takes as `key=value`.\n"]
    for name, command in cli.COMMANDS.items():
        sub = _subparser(parser, name.split())
        lines.append(f"### tailor {name} {{#command-{name.replace(' ', '-')}}}\n")
        lines.append(cell(sub.description or "") + "\n")
        rows = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            lines += ["| argument | description |", "|---|---|"]
            lines += [f"| {_code(_argument(a))} | {cell(a.help or '')} |" for a in rows]
            lines.append("")
        keys = getattr(command, "keys", None)
        if keys is not None:
            lines.append(f"`key=value` settings: {_sections_read(keys)}.\n")
    return lines


def render_configuration() -> str:
    """The configuration reference page as Markdown."""
    import tailor.config as config

    prefixes = _prefixes(config)
    lines = [CONFIG_INTRO, "## Sections\n"]
    for name in SECTIONS:
        section = getattr(config, name)
        prefix = prefixes.get(name, "")
        title = f"`{prefix.rstrip('.')}` ({name})" if prefix else name
        lines.append(f"### {title} {{#{name.lower()}}}\n")
        if not prefix:
            lines.append(f"Settings of `tailor {name.removesuffix('Config').lower()} key=value ...` "
                         "(no section prefix).\n")
        doc = (section.__doc__ or "").strip().splitlines()
        if doc and not doc[0].startswith("A recipe section"):
            lines.append(cell(doc[0]) + "\n")
        lines.extend(_settings_table(config.describe_fields(section), prefix))
        lines.append("")
    lines.extend(render_commands())
    return "\n".join(lines)


def module_summary(path: Path) -> str:
    """The first sentence of a module's docstring (its first paragraph when that has no full stop)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    if not paragraph:
        return "(no module docstring)"
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def render_modules(root: Path = SOURCE_ROOT) -> str:
    """Markdown: one table per package under `root`, one row per module."""
    packages: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.py")):
        package = path.parent.relative_to(root).as_posix()
        packages.setdefault("" if package == "." else package, []).append(path)
    lines: list[str] = []
    for package in sorted(packages, key=lambda p: (p != "", p)):
        lines += [f"### `tailor/{package + '/' if package else ''}`\n", "| module | what it holds |", "|---|---|"]
        lines += [f"| `{path.name}` | {cell(module_summary(path))} |" for path in packages[package]]
        lines.append("")
    return "\n".join(lines)


def on_files(files, config, **kwargs):
    """Add the configuration reference before the nav and the links are resolved."""
    files.append(File.generated(config, CONFIG_PAGE, content=render_configuration()))
    return files


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """Put the module tables into the layout page, where its marker is."""
    if page.file.src_uri != LAYOUT_PAGE:
        return markdown
    if MODULE_MARKER not in markdown:
        raise PluginError(f"{LAYOUT_PAGE} lost its {MODULE_MARKER} marker: put it back where the module tables go")
    return markdown.replace(MODULE_MARKER, render_modules())
