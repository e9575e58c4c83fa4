"""The tokenization cache lives in xllm's cache folder: the data folder is only read, failed or interrupted runs leave
nothing behind, partial entries of dead processes are cleared, and ``xllm cache`` shows and clears it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_xllm, user_cache
from tests.test_train import run_train, write_training_data
from xllm_cli import registry
from xllm_cli.cache import default_cache_dir
from xllm_cli.cleanup import this_host
from xllm_cli.cli.app import main
from xllm_cli.collators.lm import LMCollator
from xllm_cli.data.base import Dataset
from xllm_cli.data.demo import demo_records


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones included) with the SHA-256 of its bytes, or its kind."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def tokenized(tmp_path: Path) -> Path:
    return user_cache(tmp_path) / "tokenized"


def entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name != "CACHEDIR.TAG") if folder.is_dir() else []


def dead_pid() -> int:
    """The id of a process that has ended (reaped, so nothing runs under it now)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def data_folder(tmp_path) -> Path:
    """A user's data folder: a raw file to prepare or train on, and a file broken at line 7."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_training_data(folder / "raw.jsonl", samples=8, repeats=2)
    lines = [json.dumps(row) for row in demo_records()[:6]]
    (folder / "bad.jsonl").write_text("\n".join([*lines, '{"text_parts": ["unclosed"', *lines]) + "\n")
    (folder / ".hidden-notes").write_text("mine")
    return folder


# --- the data folder is only read ------------------------------------------------------------------------------------
def test_download_train_and_a_failed_run_leave_the_data_folder_byte_for_byte_unchanged(
    tiny_model, tmp_path, data_folder, capsys
):
    before = snapshot(data_folder)
    prepared = tmp_path / "prepared" / "train.jsonl"
    result = run_xllm(
        "download", "--dataset-key", "general", "--dataset-source", str(data_folder / "raw.jsonl"),
        "--model-name-or-path", str(tiny_model), "--train-local-path-to-data", str(prepared),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert prepared.is_file() and snapshot(data_folder) == before
    # Training on the prepared file, then straight on the raw file in the data folder (a general-format file).
    assert run_train(tiny_model, tmp_path / "out1", "--max-steps", "2", data=prepared) == 0
    assert run_train(tiny_model, tmp_path / "out2", "--max-steps", "2", data=data_folder / "raw.jsonl") == 0
    capsys.readouterr()
    assert run_train(tiny_model, tmp_path / "out3", "--max-steps", "2", data=data_folder / "bad.jsonl") == 1
    assert f"{data_folder / 'bad.jsonl'}:7: malformed JSON" in capsys.readouterr().err
    assert snapshot(data_folder) == before
    assert not (prepared.parent / ".xllm-cache").exists()
    # Both files were tokenized, in the user cache folder; the failed one left nothing there.
    names = entries(tokenized(tmp_path))
    assert len(names) == 2 and {name.rsplit("-", 1)[0] for name in names} == {"train.jsonl", "raw.jsonl"}, names


# --- failures leave nothing behind ------------------------------------------------------------------------------------
def test_repeated_failures_leave_nothing_behind_but_the_error(tiny_model, tmp_path, data_folder, capsys):
    binary = data_folder / "binary.jsonl"
    binary.write_bytes(b'{"text_parts": ["fine"]}\n' * 3 + b"\x00\x00\xff\xfe\n")
    run_train(tiny_model, tmp_path / "warm-up", "--max-steps", "1", data=data_folder / "raw.jsonl")
    capsys.readouterr()
    before = snapshot(tmp_path)
    for attempt in range(3):
        for path, message in (
            (data_folder / "bad.jsonl", f"{data_folder / 'bad.jsonl'}:7: malformed JSON"),
            (binary, f"{binary}:4: not valid UTF-8 text"),
        ):
            code = run_train(tiny_model, tmp_path / "out", "--max-steps", "2", data=path)
            err = capsys.readouterr().err
            assert code == 1, err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), (attempt, err)
            assert "Traceback" not in err
    after = snapshot(tmp_path)
    assert after == before, {name: after.get(name) for name in set(before) ^ set(after)}


class SignalledCollator(LMCollator):
    """Stops the process the way a user or a scheduler does, while the first chunk is being encoded."""

    how = "sigterm"
    seen_partial: list[str] = []

    def encode_batch(self, samples):
        folder = user_cache(Path.cwd()) / "tokenized"
        SignalledCollator.seen_partial = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
        if self.how == "ctrl-c":
            raise KeyboardInterrupt
        # Never kill the test run itself: without xllm's handler, SIGTERM would end pytest.
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM is not handled during tokenization"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode: never reached
        raise AssertionError("SIGTERM did not stop the tokenization")


@pytest.fixture(autouse=True)
def _forget_plugins_registered_here():
    """The classes these tests register in-process must not outlive them (completion lists every registered key)."""
    before = {kind: dict(entries) for kind, entries in registry._in_process.items()}
    yield
    for kind, entries in registry._in_process.items():
        entries.clear()
        entries.update(before[kind])


@pytest.mark.parametrize(("how", "code"), [("sigterm", 143), ("ctrl-c", 130)])
def test_sigterm_or_ctrl_c_during_tokenization_removes_the_partial_entry(tiny_model, tmp_path, capsys, how, code):
    SignalledCollator.how = how
    registry.register("collators", "test-signalled", SignalledCollator)
    assert run_train(tiny_model, tmp_path / "out", "--collator-key", "test-signalled") == code
    err = capsys.readouterr().err
    assert ("error: terminated by SIGTERM" in err) == (how == "sigterm") and "Traceback" not in err
    assert len(SignalledCollator.seen_partial) == 1  # there was a partial entry to remove
    assert entries(tokenized(tmp_path)) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the work


class SignalledDataset(Dataset):
    """A source that is stopped by SIGTERM halfway through, as a scheduler stops a job."""

    @classmethod
    def get_data(cls, config):
        def samples():
            for number, record in enumerate(demo_records()):
                if number == 5:
                    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM is not handled"
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                    raise AssertionError("SIGTERM did not stop the preparation")
                yield record

        return samples(), None

    def get_sample(self, raw):
        return raw


def test_sigterm_while_preparing_data_keeps_the_earlier_file_and_leaves_no_temporary_file(tiny_model, tmp_path, capsys):
    registry.register("datasets", "test-signalled", SignalledDataset)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "train.jsonl").write_text('{"text_parts": ["prepared before"]}\n')
    before = snapshot(prepared)
    with pytest.raises(SystemExit) as done:
        main(["download", "--dataset-key", "test-signalled", "--model-name-or-path", str(tiny_model),
              "--train-local-path-to-data", str(prepared / "train.jsonl")])  # fmt: skip
    assert done.value.code == 143
    assert "error: terminated by SIGTERM" in capsys.readouterr().err
    assert snapshot(prepared) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_stale_partial_entry_of_a_dead_process_is_cleared_by_the_next_run(tiny_model, tmp_path, capsys):
    folder = tokenized(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        planted = {
            "stale": folder / f"train.jsonl-0123456789abcdef.tmp-{this_host()}-{dead_pid()}",
            "live": folder / f"train.jsonl-0123456789abcdef.tmp-{this_host()}-{sleeper.pid}",
            "other machine": folder / "train.jsonl-0123456789abcdef.tmp-othernode-12345",
        }
        for path in planted.values():
            path.mkdir(parents=True)
            (path / "input_ids.i32").write_bytes(b"\0" * 64)
        data = write_training_data(tmp_path / "train.jsonl")
        assert run_train(tiny_model, tmp_path / "out", "--max-steps", "1", data=data) == 0, capsys.readouterr().err
        assert not planted["stale"].exists()
        # A running process's partial entry is its own; another machine's process ids mean nothing here.
        assert planted["live"].is_dir() and planted["other machine"].is_dir()
        assert len([name for name in entries(folder) if ".tmp-" not in name]) == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unwritable_cache_folder_is_one_clear_error(tiny_model, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    data = write_training_data(tmp_path / "train.jsonl")
    code = run_train(tiny_model, tmp_path / "out", "--cache-dir", str(blocker), data=data)
    err = capsys.readouterr().err
    assert code == 2 and f"error: cannot write the tokenization cache to {blocker / 'tokenized'}" in err
    assert "--cache-dir" in err and "Traceback" not in err


# --- where the cache is ----------------------------------------------------------------------------------------------
def test_the_cache_folder_setting_moves_entries_without_changing_their_key(tiny_model, tmp_path):
    from xllm_cli.data.general import GeneralDataset
    from xllm_cli.models import load_tokenizer
    from xllm_cli.settings import XllmConfig
    from xllm_cli.training.tokenize import SampleSource, encode_source

    data = write_training_data(tmp_path / "train.jsonl")
    names = {}
    for where in ("default", "elsewhere"):
        config = XllmConfig(model_name_or_path=str(tiny_model), cache_dir=None if where == "default" else where)
        collator = LMCollator(load_tokenizer(config), config)
        encode_source(SampleSource("train", path=data), GeneralDataset(config), collator, config)
        folder = tokenized(tmp_path) if where == "default" else tmp_path / where / "tokenized"
        names[where] = entries(folder)
        assert (folder / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert names["default"] == names["elsewhere"] and len(names["default"]) == 1


def test_the_default_cache_folder_follows_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_cache_dir() == tmp_path / ".cache" / "xllm"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_cache_dir() == tmp_path / "Library" / "Caches" / "xllm"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec ignores relative paths
    assert default_cache_dir() == tmp_path / "Library" / "Caches" / "xllm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "xllm"


# --- xllm cache -------------------------------------------------------------------------------------------------------
def age_entry(entry: Path, days: float) -> None:
    stamp = time.time() - days * 86400
    os.utime(entry / "meta.json", (stamp, stamp))


def test_xllm_cache_shows_and_clears_only_its_own_entries(tiny_model, tmp_path):
    folder = tokenized(tmp_path)
    assert "tokenized data: none" in run_xllm("cache").stdout
    data = write_training_data(tmp_path / "train.jsonl")
    for max_length in ("64", "128"):
        assert run_train(tiny_model, tmp_path / "out", "--max-steps", "1", "--max-length", max_length, data=data) == 0
    old, recent = (folder / name for name in entries(folder))
    age_entry(old, 10)
    stale = folder / f"train.jsonl-0123456789abcdef.tmp-{this_host()}-{dead_pid()}"
    stale.mkdir()
    (folder / "my-notes.txt").write_text("not xllm's")
    (folder / "lookalike-0123456789abcdef").mkdir()  # the name of an entry, but no meta.json: not one
    (folder.parent / "elsewhere.txt").write_text("not xllm's either")

    shown = run_xllm("cache")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"cache: {user_cache(tmp_path)} (default; set --cache-dir or XLLM_CACHE_DIR to move it)"
    assert lines[1].startswith("tokenized data: 2 entries, ") and lines[1].endswith(" in all")
    by_name = {line.split()[0]: line for line in lines[2:]}
    assert by_name[old.name].endswith("used 10 days ago") and by_name[recent.name].endswith("less than a minute ago")
    assert " KiB " in by_name[old.name]  # the arrays of 32 samples
    assert by_name[stale.name].endswith("which no longer runs")
    assert by_name["my-notes.txt"].endswith("not an xllm cache entry: left alone")

    cleared = run_xllm("cache", "clear", "--older-than", "7")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith("removed 2 item(s), ")  # the old entry and the stale partial one
    assert "kept 1 entry used in the last 7 day(s)" in cleared.stdout
    assert entries(folder) == sorted([recent.name, "lookalike-0123456789abcdef", "my-notes.txt"])

    assert run_xllm("cache", "clear").returncode == 0
    assert entries(folder) == ["lookalike-0123456789abcdef", "my-notes.txt"]
    assert (folder.parent / "elsewhere.txt").is_file()
    assert "nothing to remove" in run_xllm("cache", "clear").stdout


def test_xllm_cache_finds_the_folder_from_the_flag_the_environment_and_the_config_file(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"cache_dir: {tmp_path / 'from-file'}\n")
    for args, env, expected in (
        (["--cache-dir", str(tmp_path / "from-flag")], {}, "from-flag (--cache-dir)"),
        ([], {"XLLM_CACHE_DIR": str(tmp_path / "from-env")}, "from-env (env XLLM_CACHE_DIR)"),
        (["--config", str(settings)], {}, "from-file (config file)"),
    ):
        shown = run_xllm("cache", *args, env=env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0] == f"cache: {tmp_path / expected}"
    cleared = run_xllm("cache", "clear", "--cache-dir", str(tmp_path / "from-flag"))
    assert cleared.stdout.strip() == f"nothing to remove in {tmp_path / 'from-flag'}"
