"""xllm_cli.hub against the loopback hub: pushes arrive whole with the right visibility and token, adapters download,
and failures are one line that names the flag and never the token."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xllm_cli.errors import XllmError
from xllm_cli.hub import download_adapter, push_folder

SECRET = "hf_HUB_SECRET_1234"


def make_folder(root, files: dict[str, bytes]):
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


@pytest.mark.parametrize("private", [True, False])
def test_push_folder_uploads_every_file_with_the_visibility_and_token(fake_hub, tmp_path, private):
    files = {"config.json": b'{"a": 1}', "model.safetensors": bytes(range(256)) * 600, "sub/notes.txt": b"x"}
    url = push_folder(
        make_folder(tmp_path / "out", files), "me/model", private=private, token=SECRET, commit_message="m"
    )
    assert url.endswith("/me/model")
    assert fake_hub.repos["me/model"]["private"] is private
    assert fake_hub.files["me/model"] == files
    assert fake_hub.commits[-1]["summary"] == "m"
    assert set(fake_hub.authorizations) == {f"Bearer {SECRET}"}


def test_pushing_again_updates_the_existing_repository(fake_hub, tmp_path):
    folder = make_folder(tmp_path / "out", {"a.txt": b"1"})
    push_folder(folder, "me/model", private=True, token=None, commit_message="first")
    (folder / "a.txt").write_bytes(b"2")
    (folder / "b.txt").write_bytes(b"3")
    push_folder(folder, "me/model", private=True, token=None, commit_message="second")
    assert fake_hub.files["me/model"] == {"a.txt": b"2", "b.txt": b"3"}


def test_download_adapter_round_trip(fake_hub, tmp_path):
    files = {"adapter_config.json": json.dumps({"r": 4}).encode(), "adapter_model.safetensors": b"w" * 1000}
    fake_hub.add_files("me/adapter", {**files, "README.md": b"# card", "tokenizer_config.json": b"{}"})
    folder = download_adapter("me/adapter", token=SECRET)
    assert (folder / "adapter_config.json").read_bytes() == files["adapter_config.json"]
    assert (folder / "adapter_model.safetensors").read_bytes() == files["adapter_model.safetensors"]
    assert (folder / "tokenizer_config.json").is_file() and not (folder / "README.md").exists()


def test_download_failures_name_the_flag_and_not_the_token(fake_hub):
    with pytest.raises(XllmError) as missing:
        download_adapter("me/nothing", token=SECRET)
    assert "me/nothing" in str(missing.value) and "--lora-hub-model-id" in missing.value.hint
    fake_hub.add_files("me/not-an-adapter", {"config.json": b"{}"})
    with pytest.raises(XllmError) as wrong:
        download_adapter("me/not-an-adapter", token=SECRET)
    assert "no adapter_config.json" in str(wrong.value)
    for error in (missing.value, wrong.value):
        assert SECRET not in str(error) and SECRET not in (error.hint or "")


def test_offline_push_is_one_clear_error(tmp_path):
    """No fake hub and HF_HUB_OFFLINE=1 (the test default): a push fails with a line, not a traceback."""
    code = (
        "from pathlib import Path\n"
        "from xllm_cli.errors import XllmError\n"
        "from xllm_cli.hub import push_folder\n"
        "Path('out').mkdir(); Path('out/a.txt').write_text('x')\n"
        "try:\n"
        f"    push_folder('out', 'me/model', private=True, token={SECRET!r}, commit_message='m')\n"
        "except XllmError as error:\n"
        "    print('ERROR', error, '|', error.hint)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ERROR pushing to 'me/model'" in result.stdout and "offline" in result.stdout
    assert SECRET not in result.stdout + result.stderr
