"""Shell completion: values (not only flag names) through xllm's own completion protocol, the ready scripts, Typer's
--show-completion/--install-completion, and real bash, zsh and fish sessions driven in tmux like a person types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN, XLLM
from tests.shells import TmuxShell, ensure_shell_packages
from xllm_cli.cli.app import main
from xllm_cli.cli.completion_scripts import SHELLS, script, stale_scripts

PLUGIN_MODULE = "xllm_fake_plugin_mod"


def fake_plugin(root: Path) -> Path:
    """An installed-looking distribution (dist-info with entry points) whose module fails loudly if imported."""
    dist = root / "xllm_fake_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xllm-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[xllm.datasets]\nfake_squad = {PLUGIN_MODULE}:Data\n\n[xllm.collators]\nfake_pack = {PLUGIN_MODULE}:Pack\n"
    )
    (root / f"{PLUGIN_MODULE}.py").write_text("raise RuntimeError('a plugin was imported for completion')\n")
    return root


def complete(monkeypatch, capsys, line: str) -> list[str]:
    """What ``xllm`` answers bash for the command line ``line`` (TAB pressed at its end), in-process."""
    words = line.split()
    monkeypatch.setenv("_XLLM_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(len(words) if line.endswith(" ") else len(words) - 1))
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 0
    return capsys.readouterr().out.split()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("xllm tr", ["train"]),
        ("xllm f", ["fuse"]),
        ("xllm download --dataset-key g", ["general"]),
        ("xllm train --deepspeed-stage ", ["0", "1", "2", "3"]),
        ("xllm train --bnb-4bit-quant-type ", ["fp4", "nf4"]),
        ("xllm download --tokenizer-padding-side ", ["left", "right"]),
        ("xllm train --optim paged_adamw", ["paged_adamw_32bit", "paged_adamw_8bit"]),
        ("xllm quantize --gptq-bits ", ["2", "3", "4", "8"]),
        ("xllm train --dataset-k", ["--dataset-key"]),
    ],
)
def test_values_complete(monkeypatch, capsys, line, expected):
    assert sorted(complete(monkeypatch, capsys, line)) == expected


@pytest.mark.parametrize(
    "line",
    ["xllm train --output-dir ou", "xllm train --config ", "xllm fuse --lora-model-local-path ./", "xllm tiny "],
)
def test_path_fields_leave_files_to_the_shell(monkeypatch, capsys, line):
    # No candidates from xllm makes every generated script fall back to the shell's own file/folder completion
    # (bash `complete -o default`, zsh `_files`, fish without --no-files); the real shells below check the result.
    (Path.cwd() / "outputs").mkdir()
    assert complete(monkeypatch, capsys, line) == []


@pytest.mark.parametrize(
    ("kind", "flag", "builtins"),
    [
        ("datasets", "--dataset-key", {"chat", "demo", "general", "soda"}),
        ("collators", "--collator-key", {"completion", "lm"}),
        ("trainers", "--trainer-key", {"lm"}),
        ("experiments", "--experiment-key", {"base"}),
    ],
)
def test_registry_keys_complete_with_every_installed_plugin(monkeypatch, capsys, kind, flag, builtins):
    from importlib.metadata import entry_points

    offered = set(complete(monkeypatch, capsys, f"xllm train {flag} "))
    plugins = {point.name for point in entry_points(group=f"xllm.{kind}")}  # e.g. plugins/xllm-example-plugin
    assert offered == builtins | plugins


def test_plugin_keys_come_from_metadata_without_importing_the_plugin(monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(fake_plugin(tmp_path / "site")))
    assert "fake_squad" in complete(monkeypatch, capsys, "xllm download --dataset-key fake")
    assert complete(monkeypatch, capsys, "xllm train --collator-key fake") == ["fake_pack"]
    assert PLUGIN_MODULE not in sys.modules


def test_zsh_and_fish_show_which_package_provides_a_key(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(fake_plugin(tmp_path / "site")),
        "_TYPER_COMPLETE_ARGS": "xllm train --dataset-key ",
    }
    zsh = subprocess.run([XLLM], env={**env, "_XLLM_COMPLETE": "complete_zsh"}, capture_output=True, text=True)
    assert '"fake_squad":"xllm-fake-plugin"' in zsh.stdout
    fish_env = {**env, "_XLLM_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    fish = subprocess.run([XLLM], env=fish_env, capture_output=True, text=True)
    assert "fake_squad\txllm-fake-plugin" in fish.stdout.splitlines()


def test_optimizer_list_equals_transformers():
    from transformers.training_args import OptimizerNames

    from xllm_cli.cli.optimizers import OPTIMIZER_NAMES

    assert [name.value for name in OptimizerNames] == OPTIMIZER_NAMES


def test_committed_scripts_are_current():
    assert stale_scripts(REPO / "completions") == [], "completions/ is stale: run `make completions`"


def test_stale_script_is_detected_and_regenerated(tmp_path):
    from xllm_cli.cli.completion_scripts import main as scripts_main

    assert scripts_main([str(tmp_path)]) == 0
    assert scripts_main([str(tmp_path), "--check"]) == 0
    (tmp_path / "xllm.zsh").write_text("#compdef xllm\n")
    assert scripts_main([str(tmp_path), "--check"]) == 1


@pytest.fixture(scope="session")
def shells_installed():
    why_not = ensure_shell_packages()
    if why_not:
        pytest.skip(f"cannot run real shells: {why_not}")


@pytest.mark.parametrize("shell", SHELLS)
def test_show_completion_prints_the_committed_script(shells_installed, shell, tmp_path):
    # Typer detects the shell from the parent process, as when a user runs it in their terminal ("; exit $?" keeps the
    # shell from exec-ing xllm in its own place).
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    status = "$status" if shell == "fish" else "$?"
    command = f"xllm --show-completion; exit {status}"
    done = subprocess.run([shell, "-c", command], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == script(shell)
    assert done.stdout == (REPO / "completions" / f"xllm.{shell}").read_text()


def test_install_completion_writes_the_script_for_bash(shells_installed, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", "xllm --install-completion; exit $?"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    installed = tmp_path / ".bash_completions" / "xllm.sh"
    assert installed.read_text().strip() == script("bash").strip()
    assert f"source '{installed}'" in (tmp_path / ".bashrc").read_text()


@pytest.mark.parametrize("shell", SHELLS)
def test_tab_completes_in_a_real_shell(shells_installed, shell, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / "outputs").mkdir(parents=True)
    plugin_path = {"PYTHONPATH": str(fake_plugin(tmp_path / "site"))}
    session = TmuxShell(shell, home, REPO / "completions" / f"xllm.{shell}", VENV_BIN, work, env=plugin_path)
    try:
        session.type("xllm tr", "Tab")
        session.wait_for(lambda screen: "$ xllm train" in screen, "`xllm tr` + TAB to become `xllm train`")
        session.cancel_line()

        session.type("xllm train --dataset-key ", "Tab", "Tab")
        keys = ("chat", "demo", "general", "soda", "fake_squad")  # built-ins and the fake installed plugin
        screen = session.wait_for(lambda s: all(key in s for key in keys), "the dataset keys to be listed")
        assert "--dataset-key" in screen
        session.cancel_line()

        session.type("xllm train --output-dir ou", "Tab")
        session.wait_for(lambda s: "--output-dir outputs/" in s, "the folder name to complete")
        session.cancel_line()
    finally:
        session.close()
