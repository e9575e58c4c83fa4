"""Build the documentation site: README.md and docs/*.md as a mkdocs (material theme) site, strict.

    python docs/build_site.py       # build into build/site/ (make docs)
    python docs/build_site.py --serve  # the same, served on http://127.0.0.1:8000 while you edit

mkdocs refuses a config file inside its docs folder and the repository keeps no mkdocs.yml at its top, so the pages
are staged into build/site-src/ (README.md as quick-start.md, its links into docs/ rewritten), the config is written
there, and ``mkdocs build --strict`` turns every warning (a broken link or anchor, a page left out of the nav) into a
failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
STAGE = REPO / "build" / "site-src"
SITE = REPO / "build" / "site"
# The navigation, by need; every page of docs/ must be in it (test_site checks, mkdocs warns).
NAV = [
    ("Home", "index.md"),
    ("Quick start", "quick-start.md"),
    ("Build your own project", "tutorial.md"),
    ("Platforms and installing", "platforms.md"),
    (
        "Steps",
        [
            ("xllm download", "download.md"),
            ("Data formats", "data-formats.md"),
            ("Chat templates", "chat-templates.md"),
            ("xllm train", "train.md"),
            ("Training arguments", "training-arguments.md"),
            ("xllm fuse", "fuse.md"),
            ("xllm quantize", "quantize.md"),
        ],
    ),
    (
        "Choosing and scaling",
        [
            ("Choosing a method", "methods.md"),
            ("Will it fit?", "estimate.md"),
            ("Several GPUs and nodes", "scaling.md"),
            ("Special details", "special-details.md"),
            ("Performance", "performance.md"),
            ("The cache", "cache.md"),
            ("Tested architectures", "architectures.md"),
        ],
    ),
    ("Using the result", [("An adapter without fusing", "adapters.md"), ("Serving", "serving.md")]),
    ("Extending", [("The Python API", "python-api.md"), ("Plugins", "plugins.md")]),
    (
        "Reference",
        [
            ("Configuration", "configuration.md"),
            ("Shell completion", "completion.md"),
            ("Troubleshooting", "troubleshooting.md"),
            ("FAQ", "faq.md"),
            ("Migrating from xllm 0.1.8", "migration.md"),
        ],
    ),
]
# Fence info strings carry the test harness's options (``bash not-run: REASON``, ``python file=PATH``); Markdown
# wants the language only.
_FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w+-]+) [^`\n]*$", re.MULTILINE)


def nav_pages(nav=NAV) -> list[str]:
    pages = []
    for _, entry in nav:
        pages += nav_pages(entry) if isinstance(entry, list) else [entry]
    return pages


def staged(text: str, readme: bool) -> str:
    text = _FENCE.sub(lambda m: f"{m['indent']}```{m['language']}", text)
    if readme:
        text = re.sub(r"\]\(docs/([^)]*)\)", r"](\1)", text)
    return text.replace("](../README.md", "](quick-start.md")


def nav_yaml(nav=NAV, indent: str = "  ") -> str:
    lines = []
    for title, entry in nav:
        if isinstance(entry, list):
            lines += [f'{indent}- "{title}":', nav_yaml(entry, indent + "    ")]
        else:
            lines.append(f'{indent}- "{title}": {entry}')
    return "\n".join(lines)


CONFIG = """site_name: xllm
site_description: Fine-tune large language models from one command line
docs_dir: docs
site_dir: {site}
strict: true
theme:
  name: material
  features: [navigation.sections, content.code.copy]
markdown_extensions:
  - tables
  - admonition
  - toc:
      permalink: true
  - pymdownx.superfences
validation:
  omitted_files: warn
  absolute_links: warn
  unrecognized_links: warn
  anchors: warn
nav:
{nav}
"""


def stage() -> Path:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "docs").mkdir(parents=True)
    for page in sorted(DOCS.glob("*.md")):
        (STAGE / "docs" / page.name).write_text(staged(page.read_text(), readme=False))
    (STAGE / "docs" / "quick-start.md").write_text(staged((REPO / "README.md").read_text(), readme=True))
    config = STAGE / "mkdocs.yml"
    config.write_text(CONFIG.format(site=SITE, nav=nav_yaml()))
    return config


def main(argv: list[str]) -> int:
    config = stage()
    command = "serve" if "--serve" in argv else "build"
    mkdocs = [sys.executable, "-m", "mkdocs", command, "--config-file", str(config)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the theme's banner about its successor, not about our pages
    return subprocess.run([*mkdocs, "--strict"] if command == "build" else mkdocs, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
