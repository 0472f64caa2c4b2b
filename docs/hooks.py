"""MkDocs hooks (``hooks:`` in mkdocs.yml): generated pages, so the site never goes stale.

- ``cli.md``: the marker ``<!-- grokscope-cli-help -->`` becomes the ``--help`` text of ``grokscope`` and of
  every subcommand, read from the real parser at build time.
- ``changelog.md``: the repository's ``CHANGELOG.md``, added as a page.
- Sphinx roles in docstrings (``:class:`~grokscope.store.Run```) render as code (``Run``) on the API page.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

CLI_MARKER = "<!-- grokscope-cli-help -->"
HELP_WIDTH = "100"
ROOT = Path(__file__).resolve().parent.parent
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([^<]+)</code>")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
                out += [(f"{name} {n}", s) for n, s in _subcommands(sub)]
    return out


def cli_reference() -> str:
    """Markdown: a section with the ``--help`` output of ``grokscope`` and of each subcommand."""
    from grokscope.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal width: make the page reproducible
    try:
        parser = build_parser()
        sections = [("grokscope", parser.format_help())]
        sections += [(f"grokscope {name}", sub.format_help()) for name, sub in _subcommands(parser)]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n\n".join(f"## `{title}`\n\n```text\n{text.rstrip()}\n```" for title, text in sections) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    changelog = ROOT / "CHANGELOG.md"
    if changelog.is_file() and files.get_file_from_path("changelog.md") is None:
        files.append(File.generated(config, "changelog.md", content=changelog.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "cli.md":
        if CLI_MARKER not in markdown:
            raise ValueError(f"docs/cli.md lost its marker {CLI_MARKER}")
        return markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_role, html)
