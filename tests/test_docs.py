"""The documentation site builds strictly (no warning) and covers the package.

``mkdocs build --strict`` runs once per session into a temporary folder; the other tests read
the built pages or the Markdown sources.
"""

from __future__ import annotations

import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mola_ts
from mola_ts.bench import BENCHMARKS, DEMOS
from mola_ts.data import DATASETS
from mola_ts.monitor import MOLAMonitor

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# modules documented elsewhere or on purpose left out of the API reference
NOT_IN_REFERENCE = {
    "mola_ts.cli",  # its help texts are on reference/cli.md
    "mola_ts.nn.kernels.triton_fused",  # the GPU kernels behind mola_ts.nn.kernels
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


def _text(page: Path) -> str:
    """The visible text of a built page's article."""
    html = page.read_text(encoding="utf-8")
    html = html[html.find("<article"):html.find("</article>")]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_docs_build_strictly_and_offline(site):
    for page in ("index.html", "getting-started/index.html", "benchmarks/index.html",
                 "datasets/index.html", "scale_out/index.html", "reference/nn/index.html"):
        assert (site / page).is_file(), page
    for page in site.rglob("*.html"):  # no web fonts or scripts fetched by the pages
        head = page.read_text(encoding="utf-8").split("</head>")[0]
        assert "fonts.googleapis.com" not in head and "cdn.jsdelivr" not in head, page


def test_api_reference_is_generated_from_the_docstrings(site):
    forecast = _text(site / "reference/forecast/index.html")
    assert "MoLAForecaster" in forecast and "segment_length" in forecast
    assert "foundation_" in forecast  # the Attributes section of the docstring
    nn = (site / "reference/nn/index.html").read_text(encoding="utf-8")
    assert 'id="mola_ts.nn.model.inject"' in nn and 'id="mola_ts.nn.routers.sparsegen"' in nn
    # Sphinx roles of the docstrings become code links, not literal ":class:" text
    assert not re.search(r":(class|func|meth|mod):", _text(site / "reference/forecast/index.html"))
    assert 'href="#mola_ts.forecast.neural.DirectForecaster"' in (
        site / "reference/forecast/index.html").read_text(encoding="utf-8")


def test_every_public_module_is_in_the_api_reference():
    directives = set()
    for page in (DOCS / "reference").glob("*.md"):
        directives |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.MULTILINE))
    modules = {m.name for m in pkgutil.walk_packages(mola_ts.__path__, "mola_ts.")
               if not any(part.startswith("_") for part in m.name.split("."))
               and not m.name.startswith("mola_ts.bench")}
    missing = sorted(modules - directives - NOT_IN_REFERENCE)
    assert not missing, f"add '::: <module>' for {missing} to a page of docs/reference/"


def test_generated_pages_follow_the_package(site):
    datasets = _text(site / "datasets/index.html")
    for info in DATASETS.values():
        assert info.name in datasets and info.licence in datasets
        for remote in info.files:
            assert remote.path in datasets
            if remote.sha256:
                assert remote.sha256 in datasets
    cli = _text(site / "reference/cli/index.html")
    for name in BENCHMARKS:
        assert f"usage: mola-ts bench {name}" in cli
    monitoring = _text(site / "concepts/monitoring/index.html")
    for parameter in inspect.signature(MOLAMonitor).parameters:
        assert f" {parameter} " in monitoring  # a row of the generated parameter table


def test_concept_pages_cover_paper_implementation_and_our_choices():
    for page in ("forecasting", "monitoring", "lora-moe", "uncertainty"):
        text = (DOCS / "concepts" / f"{page}.md").read_text(encoding="utf-8")
        headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
        assert headings[0].startswith("The paper"), page
        assert headings[1] == "How the toolkit implements it", page
        assert any(h.startswith("Choices the paper") for h in headings), page
        assert "<!-- mola-ts:parameters " in text, page


def test_getting_started_shows_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL).group(1)
    commands = [line for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in page, f"getting-started.md lacks the README command {command!r}"


def test_benchmarks_page_lists_every_benchmark_command():
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    for name in BENCHMARKS:
        assert f"mola-ts bench {name} " in page, name
    for name in DEMOS:
        assert f"mola-ts demo {name} " in page, name
    assert "mola-ts bench uncertainty" in page
    # every command has its measured section (or says why its figures are pending)
    assert "TO BE FILLED" not in page
    assert page.count("### Measured") >= len(BENCHMARKS) + len(DEMOS)


def test_every_reliability_row_names_a_test_that_exists():
    """docs/reliability.md: each table row's test column names a test file that exists and, for
    every ``test_...`` it names, a function of that name in one of the files of the row."""
    rows = [line for line in (DOCS / "reliability.md").read_text().splitlines()
            if line.startswith("|") and not line.startswith(("| ---", "| Bad input"))]
    assert len(rows) >= 40
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        files = re.findall(r"tests/(test_\w+\.py)", cells[-1])
        assert files, f"no test file named in: {row}"
        sources = []
        for name in files:
            path = ROOT / "tests" / name
            assert path.is_file(), f"{name} (named in docs/reliability.md) does not exist"
            sources.append(path.read_text())
        for test in re.findall(r"::(test_\w+)", cells[-1]):
            assert any(re.search(rf"^def {test}\(", s, re.M) for s in sources), \
                f"{test} (named in docs/reliability.md) is not defined in {files}"
