"""The README stays true: the configuration reference is generated from the settings model."""

from __future__ import annotations

from pathlib import Path

from xllm_cli.config.reference import BEGIN, END, render_into

README = Path(__file__).resolve().parents[1] / "README.md"


def test_config_reference_matches_the_settings_model():
    text = README.read_text()
    assert BEGIN in text and END in text
    assert render_into(text) == text, (
        "README config reference is stale: run python -m xllm_cli.config.reference README.md"
    )


def test_readme_shows_the_two_first_commands():
    text = README.read_text()
    assert text.index("make test") < text.index("## Configuration")
    assert "make demo" in text
