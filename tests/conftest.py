"""Shared fixtures: no network but loopback, a clean environment per test, and one tiny model per session."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# The loopback hub fixture `fake_hub` (tests/fake_hub.py), shared by every test that pushes or downloads.
pytest_plugins = ["tests.fake_hub"]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
XLLM = str(VENV_BIN / "xllm")

# DeepSpeed compiles a small op on first use and caches it by this folder (as `make test` does): one folder for every
# launch of the session and the next, instead of one under each test's own cache folder.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

# Settings and credentials from the developer's shell must not leak into tests.
_CLEARED_PREFIXES = ("XLLM_", "HF_", "HUGGING_FACE_", "WANDB_")


def _is_loopback(address) -> bool:
    if isinstance(address, str):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any connection other than loopback fails the test."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(method):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
                raise RuntimeError(f"test tried to reach the network: {address}")
            return method(self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))


@pytest.fixture(scope="session", autouse=True)
def _session_cache_home(tmp_path_factory):
    """xllm's cache (the user cache folder, XDG_CACHE_HOME) in a session folder, never in the real home: module- and
    session-scoped fixtures run xllm before any test's own environment exists."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def user_cache(tmp_path: Path) -> Path:
    """Where xllm caches in a test (``_clean_env`` sets XDG_CACHE_HOME): ``<this>/tokenized/`` holds the entries."""
    return tmp_path / "xdg-cache" / "xllm"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama-style model and tokenizer on disk, built once per session (read-only for tests)."""
    from xllm_cli.tiny import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def deepspeed_op() -> None:
    """DeepSpeed's CPU communication op, compiled by one process before the first launch. Ranks that compile it
    together leave no ninja log behind, so a later launch compiles it again: a minute or two each time."""
    code = "from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder; ShareMemCommBuilder().load()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def run_xllm(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 600):
    """Run the installed ``xllm`` as a user would; returns the CompletedProcess (text mode)."""
    full_env = {k: v for k, v in os.environ.items()}
    full_env.update(env or {})
    return subprocess.run(
        [XLLM, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL
    )
