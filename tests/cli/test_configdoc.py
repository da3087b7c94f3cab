from __future__ import annotations

from pathlib import Path

from app.configdoc import render


def test_configuration_doc_is_up_to_date() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
    assert doc.read_text() == render(), "run `make docs` to regenerate docs/CONFIGURATION.md"


def test_every_config_field_is_documented() -> None:
    text = render()
    for field in (
        "specs_dir",
        "test_state_file",
        "max_attempts",
        "auto_continue_delay",
        "check_command",
        "dependsOn",
        "lastResult",
        "acceptance_criteria",
        "no_change_iterations",
        "when_prompt",
        "REDIS_URL",
        "LOOPS_CLAUDE_BIN",
    ):
        assert f"`{field}`" in text, field
