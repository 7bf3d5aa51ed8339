"""The README's configuration reference is generated from the settings model and must not drift."""

from __future__ import annotations

from pathlib import Path

from delegation_service.config import reference_markdown

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_config_reference_matches_the_settings_model() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start -->\n") + len("<!-- config-reference:start -->\n")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end] == reference_markdown(), "run: delegation-service config-reference"
