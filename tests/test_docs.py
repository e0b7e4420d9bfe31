"""The README stays a front door and the documentation site stays whole.

README.md: at most 250 lines, and every relative link (and its #anchor) resolves. docs/: every page
is in the mkdocs nav, the generated parts cover the schema and the source tree, and the strict
build passes (the same `mkdocs build --strict` that `make docs` and CI run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
HOOKS = DOCS / "hooks" / "generated.py"
README_MAX_LINES = 250

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)
EXPLICIT_ID = re.compile(r"\{\s*:?\s*#([\w-]+)\s*\}")


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_generated_hooks", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slug(text: str) -> str:
    """Python-Markdown's toc slug of a heading."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown: str) -> set[str]:
    """Every anchor a page defines: explicit `{ #id }` attributes and the slugs of its other headings."""
    found = set(EXPLICIT_ID.findall(markdown))
    for heading in HEADING.findall(markdown):
        if not EXPLICIT_ID.search(heading):
            found.add(_slug(heading.replace("`", "")))
    return found


def _relative_links(markdown: str) -> list[str]:
    return [t for t in LINK.findall(markdown) if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _nav_pages(nav) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/ (limit {README_MAX_LINES})"


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    links = _relative_links(text)
    assert links, "README.md links to no documentation page"
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {path}")
    assert not broken, "README.md has broken links:\n" + "\n".join(broken)


def test_anchor_finder_sees_explicit_ids_and_headings():
    page = "# Title\n\n## Checkpoints and recovery { #checkpoints }\n\n### `tailor compare`\n"
    assert _anchors(page) == {"title", "checkpoints", "tailor-compare"}
    assert _relative_links("[a](docs/x.md#y) [b](https://e.org) [c](#here) ![i](img.png)") == ["docs/x.md#y"]


def test_every_docs_page_is_in_the_nav():
    config = _mkdocs_config()
    nav = _nav_pages(config["nav"])
    generated = {_hooks().CONFIG_PAGE}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - pages - generated) == [], "nav entries with no page"


def test_configuration_reference_covers_every_setting():
    import tailor.config as config

    hooks = _hooks()
    page = hooks.render_configuration()
    for name in hooks.SECTIONS:
        section = getattr(config, name)
        for key, _type, _default, _description in config.describe_fields(section):
            assert f"{key}</code>" in page, f"{name}: {key} missing from the configuration reference"
    assert "<code>train.lr</code>" in page and "<code>data.clean[step=pii].kinds</code>" in page


def test_configuration_reference_has_every_command():
    from tailor import cli

    page = _hooks().render_configuration()
    for name in cli.COMMANDS:
        assert f"### tailor {name} {{#command-{name.replace(' ', '-')}}}" in page, f"tailor {name} has no table"
    assert "<code>--nproc NPROC</code>" in page and "[`train.*`](#trainconfig)" in page


def test_module_tables_list_every_module():
    hooks = _hooks()
    tables = hooks.render_modules()
    source = ROOT / "src" / "tailor"
    for path in source.rglob("*.py"):
        package = path.parent.relative_to(source).as_posix()
        assert f"### `tailor/{'' if package == '.' else package + '/'}`" in tables
        assert f"| `{path.name}` |" in tables
    assert hooks.module_summary(source / "config" / "__init__.py").endswith(".")


def test_table_cells_escape_outside_code_only():
    cell = _hooks().cell
    assert cell("masks like <EMAIL> | a*b") == "masks like &lt;EMAIL&gt; &#124; a&#42;b"
    assert cell("run `a|b <c>` now") == "run `a|b <c>` now"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed (the docs extra)")
def test_strict_build_passes(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
