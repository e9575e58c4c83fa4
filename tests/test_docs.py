"""The docs stay true: every command and script of README.md and of every page in docs/ runs (tests/doc_examples.py
says how), each page in a working folder of its own; the example plugin shown is the one in plugins/; every link
between the pages resolves; the README stays a short first page."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.doc_examples import (
    RUNNABLE_LANGUAGES,
    Block,
    for_tests,
    parse_blocks,
    prepare_environment,
    run_block,
    write_file,
)
from tests.fake_hub import start_fake_hub

PAGES = ["README.md", *sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))]
BLOCKS = {page: parse_blocks((REPO / page).read_text(), page) for page in PAGES}
# A page that reads what another page wrote starts from a copy of that page's folder once it has run (its models,
# prepared data and adapters), instead of making them again: the suite must stay cheap.
STARTS_FROM = {
    "docs/train.md": "docs/tutorial.md",  # ./quantized_model, a GPTQ base
    "docs/fuse.md": "docs/train.md",  # the adapter train.md pushed to the (fake) Hub
    "docs/quantize.md": "docs/tutorial.md",  # ./fused_model, ./qa.jsonl
    "docs/python-api.md": "docs/tutorial.md",  # ./tiny-model
    "docs/adapters.md": "docs/tutorial.md",  # ./outputs (an adapter), ./fused_model
    "docs/serving.md": "docs/tutorial.md",  # ./fused_model
    "docs/faq.md": "docs/tutorial.md",  # ./quantized_model
}
# What a page's section must leave behind, beyond exiting 0: the artifacts the text says it makes.
EXPECTED_FILES = {
    ("README.md", "The four steps"): ["train.jsonl", "adapter/adapter_model.safetensors", "quantized/quality.json"],
    ("docs/tutorial.md", "4. Quantize with GPTQ (optional)"): [
        "train.jsonl",
        "outputs/adapter_model.safetensors",
        "outputs/xllm_config.json",
        "fused_model/config.json",
        "quantized_model/quality.json",
    ],
    ("docs/train.md", "(top)"): [
        "qlora/adapter_model.safetensors",
        "adapter/adapter_model.safetensors",
        "fused/config.json",
    ],
    ("docs/train.md", "GPTQ bases"): ["gptq-lora/adapter_model.safetensors"],
    ("docs/fuse.md", "(top)"): ["fused_from_hub/config.json"],
    ("docs/quantize.md", "(top)"): ["quantized_qa/quality.json"],
    ("docs/python-api.md", "(top)"): [
        "api/train.jsonl",
        "api/adapter/adapter_config.json",
        "api/fused/config.json",
        "api/gptq",
    ],
    ("docs/plugins.md", "How to implement a dataset"): ["counting.jsonl"],
    ("docs/plugins.md", "Using xllm from your own code and CLI"): ["my_run/adapter_model.safetensors"],
    ("docs/migration.md", "Your own training script"): ["migrated/adapter_model.safetensors"],
    ("docs/training-arguments.md", "Any other TrainingArguments"): ["cosine/training_log.json"],
    ("docs/data-formats.md", "Several sources"): [
        f"{name}-lora/adapter_model.safetensors"
        for name in ("alpaca", "sharegpt", "completions", "conversational", "tools", "notes", "on-the-fly")
    ],
}
# Hub repositories the examples push to (the loopback fake hub), with a file each must hold.
EXPECTED_PUSHES = {("docs/train.md", "(top)"): {"me/my-adapter": "adapter_model.safetensors"}}
# Pages whose failing examples quote the error they print: the line printed must be the line shown.
QUOTES_ITS_ERRORS = {
    "docs/configuration.md",
    "docs/data-formats.md",
    "docs/faq.md",
    "docs/fuse.md",
    "docs/migration.md",
    "docs/special-details.md",
}


def sections_of(page: str) -> list[str]:
    return list(dict.fromkeys(block.section for block in BLOCKS[page] if block.runs or block.file))


RUNS = [(page, section) for page in PAGES for section in sections_of(page)]


# --- cheap checks of every page -----------------------------------------------------------------------------------


def test_the_readme_is_a_short_first_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_screen = "\n".join(text.splitlines()[:40])
    assert "git clone" in first_screen and "make install" in first_screen
    assert text.index("make demo") < text.index("## The four steps") < text.index("## Developing")
    assert text.index("make test") > text.index("## Developing"), "make test belongs to the Developing section"
    assert "https://github.com/BobaZooba/xllm" in text and "https://pypi.org/project/xllm/" in text


@pytest.mark.parametrize("page", PAGES)
def test_fences_are_well_formed(page):
    """A backtick in a fence's info string makes it text to Markdown (and to the parser): the block would vanish."""
    opening = [line for line in (REPO / page).read_text().splitlines() if line.lstrip().startswith("```")]
    assert [line for line in opening if "`" in line.lstrip()[3:]] == []
    assert len(opening) % 2 == 0


@pytest.mark.parametrize("page", PAGES)
def test_every_command_block_runs_or_says_why_not(page):
    for block in BLOCKS[page]:
        if not block.is_command:
            continue
        if block.not_run_reason is None:
            assert block.language in RUNNABLE_LANGUAGES, f"{block.describe()}: run it as bash/python or say not-run"
        else:
            assert len(block.not_run_reason) > 10, f"{block.describe()}: not-run needs a reason"


def test_the_checked_sections_exist_and_the_parser_finds_the_examples():
    assert set(EXPECTED_FILES) | set(EXPECTED_PUSHES) <= set(RUNS), "a checked section was renamed"
    assert sum(block.runs for blocks in BLOCKS.values() for block in blocks) >= 60
    assert set(STARTS_FROM) | set(STARTS_FROM.values()) <= set(PAGES)


def test_the_example_plugin_shown_is_the_one_in_the_repository():
    shown = [block for blocks in BLOCKS.values() for block in blocks if (block.file or "").startswith("plugins/")]
    assert {block.file for block in shown} >= {
        "plugins/xllm-example-plugin/pyproject.toml",
        "plugins/xllm-example-plugin/src/xllm_example_plugin/dataset.py",
        "plugins/xllm-example-plugin/src/xllm_example_plugin/collator.py",
    }
    for block in shown:
        assert block.code == (REPO / block.file).read_text(), f"{block.describe()} differs from {block.file}"


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    headings, fence = [], False
    for line in path.read_text().splitlines():
        fence = fence != line.lstrip().startswith("```")
        if not fence and line.startswith("#"):
            headings.append(line.lstrip("#"))
    return {github_anchor(heading) for heading in headings}


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_resolve(page):
    """Every relative link names a file that exists and, with #anchor, a heading of it (as GitHub and mkdocs
    render them)."""
    source = REPO / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors_of(file)):
            broken.append(target)
    assert broken == []


# --- every page's examples, run -----------------------------------------------------------------------------------


def soda_rows() -> list[dict]:
    """Rows in allenai/soda's column schema (the Hub is unreachable in tests)."""
    rows = []
    for index in range(12):
        rows.append(
            {
                "narrative": f"Sam and Alex meet at the station, day {index}.",
                "speakers": ["Sam", "Alex", "Sam"],
                "dialogue": [f"Hi Alex, train {index} is late.", "Again? Let's get coffee.", "Good idea."],
                "original_index": index,
                "split": "train",
            }
        )
    return rows


@dataclass
class PageRun:
    """One page's working folder and environment, and the sections already run there (in page order)."""

    page: str
    folder: Path
    env: dict[str, str]
    done: list[str] = field(default_factory=list)


class DocPages:
    """Runs pages section by section, each in its own folder, on one shared fake hub; a section runs once even when
    another page needs it first."""

    def __init__(self, root: Path, tiny_model: Path, hub) -> None:
        self.root, self.tiny_model, self.hub = root, tiny_model, hub
        self.soda = root / "soda-local.jsonl"
        self.soda.write_text("".join(json.dumps(row) + "\n" for row in soda_rows()))
        self.runs: dict[str, PageRun] = {}

    def run_of(self, page: str) -> PageRun:
        if page not in self.runs:
            folder = self.root / page.replace("/", "_").removesuffix(".md")
            start = STARTS_FROM.get(page)
            if start is None:
                folder.mkdir()
            else:
                self.run_until(start, None)
                shutil.copytree(self.runs[start].folder, folder, symlinks=True)
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("XLLM_", "HF_", "HUGGING_FACE_", "WANDB_"))
            }
            # This checkout's xllm_cli after the pip shim's folder (as the environment `make install` makes).
            extra = {"HF_ENDPOINT": self.hub.url, "HF_HUB_OFFLINE": "0"}
            env = prepare_environment(folder, base, extra)
            env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{REPO}"
            self.runs[page] = PageRun(page, folder, env)
        return self.runs[page]

    def run_until(self, page: str, last: str | None) -> PageRun:
        """Run the page's sections in order up to ``last`` (every section when None), skipping those already run."""
        run = self.run_of(page)
        for section in sections_of(page):
            if section not in run.done:
                self.run_section(run, section)
                run.done.append(section)
            if section == last:
                break
        return run

    def run_section(self, run: PageRun, section: str) -> None:
        text = (REPO / run.page).read_text()
        for block in BLOCKS[run.page]:
            if block.section != section:
                continue
            if block.file:
                write_file(block, run.folder)
            elif block.runs:
                self.run_block(run, block, text)

    def run_block(self, run: PageRun, block: Block, text: str) -> None:
        code = for_tests(block.code, self.tiny_model, self.soda)
        result = run_block(block, code, run.folder, run.env)
        assert result.returncode == block.expected_exit, (
            f"{block.describe()} exited {result.returncode}, expected {block.expected_exit}\n--- ran:\n{code}"
            f"--- stdout (tail):\n{result.stdout[-3000:]}\n--- stderr (tail):\n{result.stderr[-3000:]}"
        )
        if block.expected_exit:
            assert "error:" in result.stderr + result.stdout and "Traceback" not in result.stderr, block.describe()
            if run.page in QUOTES_ITS_ERRORS:  # the error the page shows is the error a user gets
                errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
                assert errors and all(line in text for line in errors), f"{block.describe()}: {errors}"


@pytest.fixture(scope="module")
def doc_pages(tmp_path_factory, tiny_model):
    hub, server = start_fake_hub()
    yield DocPages(tmp_path_factory.mktemp("docs"), tiny_model, hub)
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize(("page", "section"), RUNS, ids=[f"{page}::{section}" for page, section in RUNS])
def test_page_examples_run(page, section, doc_pages):
    run = doc_pages.run_until(page, section)
    missing = [name for name in EXPECTED_FILES.get((page, section), []) if not (run.folder / name).exists()]
    assert missing == [], f"{page} ({section}): the examples did not write {missing}"
    for repo, name in EXPECTED_PUSHES.get((page, section), {}).items():
        assert name in doc_pages.hub.files.get(repo, {}), f"{page} ({section}): nothing pushed to {repo}"


def test_the_demo_output_the_readme_quotes_is_what_make_demo_prints():
    """`make demo` installs .venv first, so the suite does not run it; its last line is the Makefile's own echo."""
    makefile = (REPO / "Makefile").read_text()
    demo = re.search(r"^DEMO \?= (\S+)$", makefile, re.MULTILINE).group(1)
    echo = re.search(r'^\t@echo "(demo artifacts: .*)"$', makefile, re.MULTILINE).group(1).replace("$(DEMO)", demo)
    assert f"```text\n{echo}\n```" in (REPO / "README.md").read_text()
