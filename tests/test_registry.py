"""The plugin registry as a user meets it: unknown keys, two packages claiming a key, a plugin that fails to import,
a class that breaks the contract, plugin settings clashing with xllm's own, and ``xllm plugins``.

Third-party packages are faked as ``*.dist-info`` folders (the metadata pip writes) on ``PYTHONPATH`` of an ``xllm``
subprocess, so discovery goes through the real ``importlib.metadata`` entry points.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_xllm
from xllm_cli.data.prepare import prepare_dataset
from xllm_cli.errors import ConfigError, XllmError
from xllm_cli.registry import _in_process, load, register
from xllm_cli.settings import XllmConfig

GOOD_DATASET = """
class Data:
    def __init__(self, config):
        self.config = config

    @classmethod
    def get_data(cls, config):
        return [{"text_parts": ["a", "b"]}], None

    def get_sample(self, raw):
        return raw
"""


def fake_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """What ``pip install`` leaves behind: a dist-info folder with METADATA and entry_points.txt, plus modules."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    groups = "".join(
        f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in keys.items())
        for group, keys in entry_points.items()
    )
    (info / "entry_points.txt").write_text(groups)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    """Fake plugin packages: a good one, one that fails to import, one missing a method, one with a clashing setting."""
    site = tmp_path / "site"
    fake_distribution(site, "fake-good", {"xllm.datasets": {"good": "fake_good:Data"}}, {"fake_good": GOOD_DATASET})
    broken = f"open({str(tmp_path / 'imported.marker')!r}, 'w').close()\nimport missing_dependency_of_broken\n"
    fake_distribution(site, "fake-broken", {"xllm.datasets": {"broken": "fake_broken:Data"}}, {"fake_broken": broken})
    incomplete = "class Data:\n    @classmethod\n    def get_data(cls, config):\n        return [], None\n"
    fake_distribution(
        site,
        "fake-incomplete",
        {"xllm.datasets": {"incomplete": "fake_incomplete:Data"}},
        {"fake_incomplete": incomplete},
    )
    clashing = GOOD_DATASET + "\nfrom pydantic import BaseModel\n\nclass Settings(BaseModel):\n    seed: int = 1\n"
    clashing += "\nData.settings_model = Settings\n"
    fake_distribution(
        site, "fake-clashing", {"xllm.datasets": {"clashing": "fake_clashing:Data"}}, {"fake_clashing": clashing}
    )
    return site


def xllm_with(site: Path, *args: str):
    return run_xllm(*args, env={"PYTHONPATH": str(site)})


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_unknown_key_lists_available_keys_and_the_closest(tmp_path):
    result = run_xllm("download", "--dataset-key", "sodda", "--model-name-or-path", ".")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "unknown dataset-key 'sodda'; did you mean 'soda'?" in line
    assert "available: chat, " in line and "demo" in line and "general" in line
    with pytest.raises(ConfigError, match="did you mean 'lm'"):
        load("collators", "lmm")


def test_a_plugin_dataset_is_found_through_its_entry_point(plugin_site, tmp_path):
    result = xllm_with(plugin_site, "download", "--dataset-key", "good", "--model-name-or-path", ".")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "train.jsonl").read_text() == '{"text_parts": ["a", "b"]}\n'


def test_listing_plugins_imports_none_of_them(plugin_site, tmp_path):
    result = xllm_with(plugin_site, "plugins", "datasets")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows["broken"] == "fake-broken" and rows["good"] == "fake-good"
    assert rows["soda"] == "xllm-cli"
    assert not (tmp_path / "imported.marker").exists()


def test_a_plugin_that_fails_to_import_names_plugin_and_package(plugin_site, tmp_path):
    result = xllm_with(plugin_site, "download", "--dataset-key", "broken", "--model-name-or-path", ".")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "dataset plugin 'broken' from package fake-broken failed to import" in line
    assert "missing_dependency_of_broken" in line and "Traceback" not in result.stderr


def test_a_class_breaking_the_contract_is_rejected_naming_the_missing_method(plugin_site):
    result = xllm_with(plugin_site, "download", "--dataset-key", "incomplete", "--model-name-or-path", ".")
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "dataset plugin 'incomplete'" in line and "does not implement get_sample" in line


def test_plugin_settings_clashing_with_a_builtin_name_are_an_error(plugin_site):
    result = xllm_with(plugin_site, "download", "--dataset-key", "clashing", "--model-name-or-path", ".")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "plugin 'clashing' declares setting 'seed', which clashes with an existing setting" in line


def test_two_packages_claiming_one_key_name_both(tmp_path):
    site = tmp_path / "site"
    for name in ("fake-first", "fake-second"):
        module = name.replace("-", "_")
        fake_distribution(site, name, {"xllm.datasets": {"contested": f"{module}:Data"}}, {module: GOOD_DATASET})
    result = xllm_with(site, "download", "--dataset-key", "contested", "--model-name-or-path", ".")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "dataset key 'contested' is claimed by two packages:" in line
    assert "fake-first" in line and "fake-second" in line


def test_plugins_command_rejects_an_unknown_kind():
    result = run_xllm("plugins", "dataset")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: unknown kind 'dataset'; did you mean 'datasets'? (choose from datasets, collators, trainers, experiments)"
    ]


def test_plugins_command_lists_every_kind_with_providers():
    result = run_xllm("plugins")
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == [
        "datasets:",
        "collators:",
        "trainers:",
        "experiments:",
    ]
    for key in ("soda", "general", "chat", "demo", "lm", "completion", "base"):
        assert any(line.split()[0] == key for line in result.stdout.splitlines() if line.startswith(" ")), key


class _InMemory:
    def __init__(self, config):
        self.config = config

    @classmethod
    def get_data(cls, config):
        return [{"text_parts": [f"sample {i}"]} for i in range(3)], None

    def get_sample(self, raw):
        return raw


def test_register_in_process_for_scripts(tmp_path):
    register("datasets", "in-memory", _InMemory)
    try:
        prepared = prepare_dataset(XllmConfig(dataset_key="in-memory"))
        assert prepared.train_samples == 3
    finally:
        _in_process["datasets"].pop("in-memory", None)
    with pytest.raises(XllmError, match="does not implement get_sample"):
        register("datasets", "half", type("Half", (), {"get_data": classmethod(lambda cls, config: ([], None))}))
