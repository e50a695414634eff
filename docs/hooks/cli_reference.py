"""mkdocs hook: the CLI reference page is generated from the argument parser itself
(``embed_assets.cli.build_parser``), so it cannot drift from the code: every verb's
``--help`` text, in the parser's own words, where the page says ``<!-- cli-reference -->``."""

from __future__ import annotations

import argparse
from typing import Any

MARKER = "<!-- cli-reference -->"


def _help(parser: argparse.ArgumentParser) -> str:
    # a fixed width: the page must not depend on the terminal that built it
    parser.formatter_class = lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100)
    return parser.format_help().rstrip()


def cli_reference() -> str:
    from embed_assets.cli import build_parser

    parser = build_parser()
    parts = ["## embed-assets", "", "```text", _help(parser), "```", ""]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for verb, sub in subs.choices.items():
        parts += [f"## {verb}", "", "```text", _help(sub), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
