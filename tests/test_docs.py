"""The README stays true: the configuration reference is generated from the settings model, every command and script
in it runs (tests/doc_examples.py says how), and the example plugin it shows is the one in plugins/."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import REPO
from tests.doc_examples import RUNNABLE_LANGUAGES, for_tests, parse_blocks, prepare_environment, run_block, write_file
from tests.fake_hub import start_fake_hub

README = REPO / "README.md"
BLOCKS = parse_blocks(README.read_text())
SECTIONS = list(dict.fromkeys(block.section for block in BLOCKS if block.runs or block.file))


def test_readme_shows_the_two_first_commands():
    text = README.read_text()
    assert text.index("make test") < text.index("## Configuration")
    assert "make demo" in text


def test_fences_are_well_formed():
    """A backtick in a fence's info string makes it text to Markdown (and to the parser): the block would vanish."""
    opening = [line for line in README.read_text().splitlines() if line.lstrip().startswith("```")]
    assert [line for line in opening if "`" in line.lstrip()[3:]] == []
    assert len(opening) % 2 == 0


def test_every_command_block_runs_or_says_why_not():
    for block in BLOCKS:
        if not block.is_command:
            continue
        if block.not_run_reason is None:
            assert block.language in RUNNABLE_LANGUAGES, f"{block.describe()}: run it as bash/python or say not-run"
        else:
            assert len(block.not_run_reason) > 10, f"{block.describe()}: not-run needs a reason"
    assert sum(block.runs for block in BLOCKS) >= 30  # the parser found the examples
    assert set(EXPECTED_FILES) | set(EXPECTED_PUSHES) <= set(SECTIONS), "a checked section was renamed"


def test_the_example_plugin_shown_is_the_one_in_the_repository():
    shown = [block for block in BLOCKS if block.file and block.file.startswith("plugins/")]
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


def test_table_of_contents_links_resolve():
    text = README.read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the README has a table of contents"
    assert [link for link in links if link not in anchors] == []


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


# What a section's examples must leave behind, beyond exiting 0: the artifacts the text says they make.
EXPECTED_FILES = {
    "Build your own project with xllm": [
        "train.jsonl",
        "outputs/adapter_model.safetensors",
        "outputs/xllm_config.json",
        "fused_model/config.json",
        "quantized_model/quality.json",
    ],
    "`xllm train`": [
        "qlora/adapter_model.safetensors",
        "adapter/adapter_model.safetensors",
        "fused/config.json",
        "gptq-lora/adapter_model.safetensors",
    ],
    "`xllm fuse`: merge a LoRA adapter into its base": ["fused_from_hub/config.json"],
    "`xllm quantize`: GPTQ (optional)": ["quantized_qa/quality.json"],
    "The Python API": ["api/train.jsonl", "api/adapter/adapter_config.json", "api/fused/config.json", "api/gptq"],
    "Plugins: your own dataset, collator, trainer, experiment": ["counting.jsonl", "my_run/adapter_model.safetensors"],
}
# Hub repositories the examples push to (the loopback fake hub), with a file each must hold.
EXPECTED_PUSHES = {"`xllm train`": {"me/my-adapter": "adapter_model.safetensors"}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model):
    """One working folder for the whole README (blocks chain across sections), its environment and fake hub."""
    folder = tmp_path_factory.mktemp("readme")
    soda = folder.parent / "soda-local.jsonl"
    soda.write_text("".join(json.dumps(row) + "\n" for row in soda_rows()))
    hub, server = start_fake_hub()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("XLLM_", "HF_", "HUGGING_FACE_", "WANDB_"))}
    env = prepare_environment(folder, base, {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"})
    yield folder, env, tiny_model, soda, hub
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS)
def test_readme_examples_run(section, workspace):
    folder, env, tiny_model, soda, hub = workspace
    for block in BLOCKS:
        if block.section != section:
            continue
        if block.file:
            write_file(block, folder)
            continue
        if not block.runs:
            continue
        code = for_tests(block.code, tiny_model, soda)
        result = run_block(block, code, folder, env)
        assert result.returncode == block.expected_exit, (
            f"{block.describe()} exited {result.returncode}, expected {block.expected_exit}\n--- ran:\n{code}"
            f"--- stdout (tail):\n{result.stdout[-3000:]}\n--- stderr (tail):\n{result.stderr[-3000:]}"
        )
        if block.expected_exit:
            assert "error:" in result.stderr + result.stdout and "Traceback" not in result.stderr, block.describe()
    missing = [name for name in EXPECTED_FILES.get(section, []) if not (folder / name).exists()]
    assert missing == [], f"{section}: the examples did not write {missing}"
    for repo, name in EXPECTED_PUSHES.get(section, {}).items():
        assert name in hub.files.get(repo, {}), f"{section}: nothing pushed to {repo}"
