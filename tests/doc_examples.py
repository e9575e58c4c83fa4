"""Executed documentation: the fenced blocks of README.md and of every page in docs/, parsed in order and run as a
user would run them.

Fence info strings (the words after the opening backticks) say what a block is:

- ```` ```bash ```` / ```` ```python ````: a command or script a user runs. It is executed (bash with ``-e -o
  pipefail``, python from stdin) in one working folder per page, in document order, so download -> train -> fuse ->
  quantize chain as they do for a user (a page that reads what another page wrote starts from a copy of that page's
  folder: tests/test_docs.py says which). Exit code 0 is expected.
- ```` ```bash exit=2 ````: the block is meant to fail; that exit code is expected instead.
- ```` ```python file=PATH ```` (any language): the content of a file the text asks you to create; it is written to
  PATH in the working folder (later blocks use it). ``PATH`` under ``plugins/`` must also equal the repository's file.
- ```` ```bash not-run: REASON ````: shown, never executed; the reason is mandatory and says why (GPUs, several
  nodes, PyPI, the test suite itself, or which test already runs the same launch form).

Any other language (``text``, ``yaml`` without ``file=``, ...) is output or illustration, not run.

What the tests change before running a block, so it runs offline on this CPU machine in seconds (``for_tests``):
hub model ids become the tiny model folder, big step counts become small ones, SODA from the Hub becomes a local file
in SODA's schema, the GPTQ group size 128 becomes 32 (the tiny model's layers are 64 and 128 wide), and ``pip install``
of a local folder goes to a throwaway ``--target`` folder on ``PYTHONPATH`` (never into the test environment). The
Hub itself is the loopback fake hub (``HF_ENDPOINT``), and W&B runs offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh", "fish"}
COMMAND_LANGUAGES = SHELL_LANGUAGES | {"python"}
RUNNABLE_LANGUAGES = {"bash", "python"}
HUB_MODELS = (
    "mistralai/Mistral-7B-v0.1",
    "meta-llama/Llama-2-70b-hf",
    "HuggingFaceTB/SmolLM2-135M",
    "Qwen/Qwen2.5-0.5B",
)
# Upper bounds for step-like counts in doc examples: enough to exercise the feature, small enough for CI.
SMALL_NUMBERS = {"max-steps": 4, "save-steps": 2, "eval-steps": 2, "logging-steps": 1, "warmup-steps": 0}
SMALL_KEYWORDS = {"max_steps": 4, "save_steps": 2, "warmup_steps": 0}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")


@dataclass
class Block:
    """One fenced block of a page."""

    line: int  # 1-based line of the opening fence
    section: str  # the "## " heading it is under
    language: str
    options: dict[str, str] = field(default_factory=dict)
    code: str = ""
    page: str = "README.md"

    @property
    def not_run_reason(self) -> str | None:
        return self.options.get("not-run")

    @property
    def file(self) -> str | None:
        return self.options.get("file")

    @property
    def expected_exit(self) -> int:
        return int(self.options.get("exit", "0"))

    @property
    def is_command(self) -> bool:
        return self.language in COMMAND_LANGUAGES and self.file is None

    @property
    def runs(self) -> bool:
        return self.is_command and self.not_run_reason is None and self.language in RUNNABLE_LANGUAGES

    def describe(self) -> str:
        return f"{self.page}:{self.line} ({self.section}) ```{self.language}"


def parse_info(info: str) -> tuple[str, dict[str, str]]:
    """``bash exit=2`` -> ("bash", {"exit": "2"}); ``bash not-run: needs GPUs`` -> ("bash", {"not-run": "needs GPUs"})."""
    language, _, rest = info.strip().partition(" ")
    options: dict[str, str] = {}
    rest, _, reason = rest.partition("not-run:")
    if _:
        options["not-run"] = reason.strip()
    for word in rest.split():
        key, _, value = word.partition("=")
        options[key] = value
    return language, options


def parse_blocks(text: str, page: str = "README.md") -> list[Block]:
    blocks: list[Block] = []
    section = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        opening = _FENCE.match(line)
        if opening is None:
            i += 1
            continue
        indent = opening["indent"]
        language, options = parse_info(opening["info"])
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != f"{indent}```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        start = len(blocks)
        blocks.append(Block(line=i - len(body), section=section, language=language, options=options, page=page))
        blocks[start].code = "\n".join(body) + "\n"
        i += 1
    return blocks


REPO = Path(__file__).resolve().parents[1]


def for_tests(code: str, tiny_model: Path, soda_file: Path) -> str:
    """The block as the tests run it: tiny model, small step counts, local SODA, group size the tiny model fits,
    and ``/path/to/xllm`` (a checkout) as this repository."""
    code = code.replace("/path/to/xllm/", f"{REPO}/")
    for model in HUB_MODELS:
        code = code.replace(model, str(tiny_model))
    for flag, bound in SMALL_NUMBERS.items():
        code = re.sub(rf"--{flag}([ =])(\d+)", lambda m, f=flag, b=bound: f"--{f}{m[1]}{min(int(m[2]), b)}", code)
    for keyword, bound in SMALL_KEYWORDS.items():
        code = re.sub(rf"\b{keyword}=(\d+)", lambda m, k=keyword, b=bound: f"{k}={min(int(m[1]), b)}", code)
    code = code.replace("--gptq-group-size 128", "--gptq-group-size 32").replace(
        "gptq_group_size=128", "gptq_group_size=32"
    )
    lines = []
    for line in code.splitlines():
        if "--dataset-key soda" in line and "--dataset-source" not in line:
            line = line.replace("--dataset-key soda", f"--dataset-key soda --dataset-source {soda_file}")
        lines.append(line)
    return "\n".join(lines) + "\n"


PIP_SHIM = """#!/bin/sh
# Test stand-in for `pip install [-e] LOCAL_FOLDER`: installs into a throwaway folder on PYTHONPATH, offline.
[ "$1" = install ] || { echo "docs test pip shim: only 'pip install' of a local folder" >&2; exit 3; }
shift
args=""
for arg in "$@"; do [ "$arg" = "-e" ] || args="$args $arg"; done
exec "{python}" -m pip install -q --no-deps --no-build-isolation --no-index --target "$DOC_EXAMPLES_SITE" $args
"""


def prepare_environment(folder: Path, base_env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Environment for the blocks: the test venv first on PATH (with the pip shim), a private HOME and HF cache."""
    shims = folder / ".doc-shims"
    shims.mkdir(parents=True, exist_ok=True)
    pip = shims / "pip"
    pip.write_text(PIP_SHIM.replace("{python}", sys.executable))
    pip.chmod(0o755)
    site = folder / ".doc-site"
    site.mkdir(exist_ok=True)
    home = folder / ".doc-home"
    home.mkdir(exist_ok=True)
    env = dict(base_env)
    env.update(
        PATH=f"{shims}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}",
        PYTHONPATH=str(site),
        DOC_EXAMPLES_SITE=str(site),
        HOME=str(home),
        HF_HOME=str(folder / ".doc-hf-home"),
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def write_file(block: Block, folder: Path) -> Path:
    target = folder / block.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.code)
    return target


def run_block(block: Block, code: str, folder: Path, env: dict[str, str], timeout: float = 300):
    if block.language == "bash":
        # The trailing ':' keeps bash from exec'ing the last command in its place, so every command runs as a child
        # of bash, as typed in a terminal (shell detection, e.g. `xllm --show-completion`, sees bash, not our caller).
        command, feed = ["bash", "-e", "-o", "pipefail", "-c", code + "\n:"], {"stdin": subprocess.DEVNULL}
    else:
        command, feed = [sys.executable, "-"], {"input": code}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, **feed)
