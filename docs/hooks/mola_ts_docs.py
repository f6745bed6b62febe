"""MkDocs hooks of the mola_ts documentation (see ``hooks:`` in ``mkdocs.yml``).

- Parts generated from the package, so that they cannot drift from it: the markers
  ``<!-- mola-ts:datasets-table -->``, ``<!-- mola-ts:dataset-cards -->``,
  ``<!-- mola-ts:cli-help -->`` and ``<!-- mola-ts:parameters dotted.path.Class -->`` are
  replaced by the dataset registry as a table, the dataset cards of the repository's
  ``datasets/`` folder, the ``--help`` of every ``mola-ts`` command and a table of a class's
  constructor parameters (default and docstring description).
- Docstrings use Sphinx roles (``:class:`~mola_ts.forecast.MoLAForecaster```), which Markdown
  renders literally: they become code, linked to the API reference when the target is
  documented there.
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

_DATASETS_TABLE = "<!-- mola-ts:datasets-table -->"
_DATASET_CARDS = "<!-- mola-ts:dataset-cards -->"
_CLI_HELP = "<!-- mola-ts:cli-help -->"
_PARAMETERS = re.compile(r"<!-- mola-ts:parameters ([\w.]+) -->")
# words that make a numpydoc "name : type" line a type; anything else is prose put in the type
# slot by a grouped entry ("epochs, lr : training settings")
_TYPE_WORDS = {"int", "float", "str", "bool", "none", "dict", "list", "tuple", "sequence", "of",
               "or", "array", "like", "ndarray", "mapping", "callable", "optional", "default",
               "shape", "torch", "generator", "module", "tensor"}
_CARD_ORDER = ("ETTh1", "ETTh2", "ETTm1", "ETTm2", "Weather", "Electricity", "Traffic",
               "Exchange", "ILI", "TEP")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|const):<code>(~?)([\w.]+)</code>")


def _datasets_table() -> str:
    from mola_ts.data import DATASETS

    lines = ["| dataset | source | licence | file in the data home | sha256 | rows | frequency "
             "| protocol |", "|---|---|---|---|---|---|---|---|"]
    for info in DATASETS.values():
        files = info.files or ()
        path = "<br>".join(f"`{f.path}`" for f in files) or "inside the `bibmon` package"
        digest = "<br>".join(f"`{f.sha256}`" if f.sha256 else "not published: recorded at the "
                             "first download" for f in files) or "-"
        protocol = (f"lookback {info.lookback}, horizons {', '.join(map(str, info.horizons))}"
                    if info.horizons else "fault runs, onset after sample 160")
        source = re.sub(r"(https?://\S+)", r"<\1>", info.source)
        lines.append(f"| {info.name} | {source} | {info.licence} | {path} | {digest} | "
                     f"{info.n_rows or '-'} | {info.frequency} | {protocol} |")
    return "\n".join(lines)


def _dataset_cards(root: Path) -> str:
    parts = []
    for name in _CARD_ORDER:
        card = root / "datasets" / f"{name}.md"
        text = card.read_text(encoding="utf-8")
        # one level down: the page has its own title
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.MULTILINE)
        parts.append(text.strip())
    return "\n\n".join(parts)


def _cli_help() -> str:
    import argparse

    from mola_ts.cli import build_parser

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> list[tuple[str, str]]:
        found = [(" ".join(words), parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, [*words, name])
        return found

    blocks = []
    for command, text in walk(build_parser(), ["mola-ts"]):
        blocks.append(f"### `{command}`\n\n```text\n{text.strip()}\n```")
    return "\n\n".join(blocks)


def _is_type(annotation: str) -> bool:
    """Whether a numpydoc type slot holds a type (not prose): no longer unknown word in it."""
    words = re.findall(r"[A-Za-z_]+", re.sub(r"\"[^\"]*\"|'[^']*'", "", annotation))
    return all(len(w) < 4 or w.lower() in _TYPE_WORDS or w[0].isupper() for w in words)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _parameters_table(path: str) -> str:
    from griffe import Docstring

    module_name, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), name)
    defaults = {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    documented: dict[str, str] = {}
    for section in Docstring(inspect.getdoc(cls) or "", parser="numpy").parse(warnings=False):
        if section.kind.value != "parameters":
            continue
        for param in section.value:
            annotation = str(param.annotation or "")
            text = param.description
            if annotation and not _is_type(annotation):  # prose in the type slot
                glue = ": " if text[:1].isupper() else " "
                text = f"{annotation}{glue}{text}"
            documented[param.name] = text
    missing = [p for p in defaults if p not in documented]
    if missing:
        raise ValueError(f"{path}: parameters without a docstring entry: {missing}")
    lines = ["| parameter | default | what it sets |", "|---|---|---|"]
    for param, default in defaults.items():
        shown = "required" if default is inspect.Parameter.empty else f"`{default!r}`"
        lines.append(f"| `{param}` | {_cell(shown)} | {_cell(documented[param])} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the generated parts of a page."""
    markdown = _PARAMETERS.sub(lambda m: _parameters_table(m.group(1)), markdown)
    if _DATASETS_TABLE in markdown:
        markdown = markdown.replace(_DATASETS_TABLE, _datasets_table())
    if _DATASET_CARDS in markdown:
        root = Path(config["config_file_path"]).resolve().parent
        markdown = markdown.replace(_DATASET_CARDS, _dataset_cards(root))
    if _CLI_HELP in markdown:
        markdown = markdown.replace(_CLI_HELP, _cli_help())
    return markdown


def _role(match: re.Match) -> str:
    short, target = match.group(1) == "~", match.group(2)
    title = f"<code>{html.escape(target.rsplit('.', 1)[-1] if short else target)}</code>"
    if target.startswith("mola_ts."):
        return f'<autoref identifier="{target}" optional>{title}</autoref>'
    return title


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    """Sphinx roles of docstrings to code (linked when the target is in the API reference)."""
    return _ROLE.sub(_role, html_text)
