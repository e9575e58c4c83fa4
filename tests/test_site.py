"""`make docs` builds the documentation site with mkdocs --strict: any warning (a broken link or anchor, a page left
out of the navigation) fails the build, and so this test."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location  # noqa: E402

import pytest

from tests.conftest import REPO

_spec = spec_from_file_location("xllm_docs_site", REPO / "docs" / "build_site.py")
docs_site = module_from_spec(_spec)
_spec.loader.exec_module(docs_site)


def test_every_page_is_in_the_navigation():
    pages = {path.name for path in (REPO / "docs").glob("*.md")} | {"quick-start.md"}
    assert sorted(docs_site.nav_pages()) == sorted(pages)


def test_staging_keeps_the_language_and_rewrites_the_readme_links():
    text = "```bash not-run: needs GPUs\nx\n```\n[a](docs/train.md#x) [b](../README.md#install)\n"
    assert docs_site.staged(text, readme=True) == "```bash\nx\n```\n[a](train.md#x) [b](quick-start.md#install)\n"


@pytest.mark.slow
def test_the_site_builds_without_warnings():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "build_site.py")], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "WARNING" not in output, output[-4000:]
    for page in docs_site.nav_pages():
        assert (docs_site.SITE / page.removesuffix(".md") / "index.html").is_file() or page == "index.md", page
    assert (docs_site.SITE / "index.html").is_file()
