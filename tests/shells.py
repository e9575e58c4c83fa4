"""Drive real interactive shells in tmux for the completion tests: type, press TAB, read the screen.

The shells come from the distribution's packages; ``ensure_shell_packages`` installs what is missing once per test
session (one ``apt-get update`` + one ``apt-get install``), so a fresh CI machine needs no manual step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

# command that must exist -> the Debian package that provides it
SHELL_PACKAGES = {"bash": "bash", "zsh": "zsh", "fish": "fish", "tmux": "tmux"}
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


def missing_packages() -> list[str]:
    missing = [package for command, package in SHELL_PACKAGES.items() if shutil.which(command) is None]
    if not BASH_COMPLETION.is_file():
        missing.append("bash-completion")
    return missing


def ensure_shell_packages() -> str | None:
    """Install missing shells and tmux with apt-get. Returns why apt-get cannot be used (the caller skips), None
    when everything is there; raises when an installation was possible but failed (that must not pass silently)."""
    missing = missing_packages()
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"apt-get is unavailable to install {', '.join(missing)}"
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode:
            return f"apt-get needs root (no password-less sudo) to install {', '.join(missing)}"
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(prefix + command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(command[:2])} failed ({done.returncode}): {' / '.join(tail)}")
    still = missing_packages()
    if still:
        raise RuntimeError(f"still missing after apt-get install: {', '.join(still)}")
    return None


def startup_files(shell: str, home: Path, script: Path, bin_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(command line, extra environment) that start ``shell`` interactively with only xllm's script loaded."""
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {"HOME": str(home), "PATH": path, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    if shell == "bash":
        rc = home / "bashrc"
        rc.write_text(f"PS1='$ '\nsource {BASH_COMPLETION}\nsource {script}\n")
        return ["bash", "--noprofile", "--rcfile", str(rc), "-i"], env
    if shell == "zsh":
        (home / ".zshrc").write_text(
            f"PS1='$ '\nautoload -Uz compinit && compinit -u -d {home}/.zcompdump\nsource {script}\n"
        )
        return ["zsh", "-i"], {**env, "ZDOTDIR": str(home)}
    if shell == "fish":
        init = f"set -g fish_greeting; function fish_prompt; echo -n '$ '; end; source {script}"
        return ["fish", "--no-config", "--init-command", init], {**env, "XDG_CONFIG_HOME": str(home / "config")}
    raise ValueError(shell)


class TmuxShell:
    """One interactive shell in a private tmux server (its own socket: nothing else on the machine is touched)."""

    def __init__(
        self, shell: str, home: Path, script: Path, bin_dir: Path, cwd: Path, env: dict[str, str] | None = None
    ):
        self.socket = f"xllm-test-{uuid.uuid4().hex[:8]}"
        command, shell_env = startup_files(shell, home, script, bin_dir)
        self.env = {**os.environ, **shell_env, **(env or {})}  # a fresh tmux server passes this on to the shell
        self._tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", "-c", str(cwd), *command)
        self.wait_for_prompt()

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True, env=self.env
        )
        if done.returncode:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def cursor_line(self) -> str:
        row = int(self._tmux("display-message", "-p", "-t", "t", "#{cursor_y}").strip())
        lines = self.screen().splitlines()
        return lines[row] if row < len(lines) else ""

    def wait_for_prompt(self, timeout: float = 20.0) -> None:
        """Wait until the cursor sits on an empty prompt: keys typed earlier could land in a line being discarded."""
        deadline = time.monotonic() + timeout
        while self.cursor_line().strip() != "$":
            if time.monotonic() > deadline:
                raise AssertionError(f"no fresh prompt; the screen was:\n{self.screen()}")
            time.sleep(0.05)

    def cancel_line(self) -> None:
        """Ctrl-C the current command line (once no completion runs any more) and wait for the new prompt."""
        self.wait_idle()
        self.type("C-c")
        self.wait_for_prompt()

    def type(self, *keys: str) -> None:
        """Send literal text or key names (``Tab``, ``C-c``); after each TAB wait until the completion has run, as a
        person waits to see what TAB did before pressing it again."""
        for key in keys:
            if key in ("Tab", "C-c", "Enter"):
                self._tmux("send-keys", "-t", "t", key)
            else:
                self._tmux("send-keys", "-t", "t", "-l", key)
            if key == "Tab":
                self.wait_idle()

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Wait until the shell has no child process left (the completion's ``xllm`` runs as one)."""
        pid = self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip()
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + timeout
        time.sleep(0.1)  # let the shell read the key and start the completion
        while children.exists() and children.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"the completion did not finish; the screen was:\n{self.screen()}")
            time.sleep(0.05)

    def wait_for(self, check, what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, env=self.env)
